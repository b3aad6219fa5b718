"""Step-up approvals: requests bound to one exact call, and the events of their lives.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = 64
ID = 40


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("workspace", sa.String(NAME), nullable=False),
        sa.Column("task_id", sa.String(ID), nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("effects", sa.JSON, nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("call_hash", sa.String(64), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("policies", sa.JSON, nullable=False),
        sa.Column("approver_roles", sa.JSON, nullable=False),
        sa.Column("decision_id", sa.String(ID), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("used_by", sa.String(ID), nullable=True),
    )
    for column in ("workspace", "task_id", "call_hash"):
        op.create_index(f"ix_approvals_{column}", "approvals", [column])
    op.create_table(
        "approval_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("approval_id", sa.String(ID), nullable=False),
        sa.Column("workspace", sa.String(NAME), nullable=False),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_approval_events_approval_id", "approval_events", ["approval_id"])


def downgrade() -> None:
    op.drop_table("approval_events")
    op.drop_table("approvals")
