"""The decision core: tenants, workspaces, agents, users, tools, policy bundles, tasks, decisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "workspaces",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), sa.ForeignKey("tenants.name"), nullable=False),
        sa.Column("trust_domain", sa.String(255), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
        sa.Column("active_policy_version", sa.String(80), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("spiffe_id", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("roles", sa.JSON, nullable=False),
    )
    op.create_table(
        "tools",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("args_schema", sa.JSON, nullable=False),
        sa.Column("effects", sa.JSON, nullable=False),
        sa.Column("sinks", sa.JSON, nullable=False),
        sa.Column("output", sa.String(16), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("risk_tier", sa.String(16), nullable=False),
    )
    op.create_table(
        "policy_bundles",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("version", sa.String(80), primary_key=True),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("cedar_schema", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_table(
        "decisions",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("workspace", sa.String(64), nullable=True),
        sa.Column("agent", sa.String(64), nullable=True),
        sa.Column("user", sa.String(255), nullable=True),
        sa.Column("task_id", sa.String(40), nullable=True),
        sa.Column("tool", sa.String(128), nullable=False),
        sa.Column("args_digest", sa.String(64), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("effect", sa.String(24), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("policy_version", sa.String(80), nullable=True),
        sa.Column("context", sa.Text, nullable=True),
        sa.Column("shadow", sa.Text, nullable=True),
        sa.Column("approval_id", sa.String(40), nullable=True),
    )
    op.create_index("ix_decisions_task_id", "decisions", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_decisions_task_id", table_name="decisions")
    for table in ("decisions", "tasks", "policy_bundles", "tools", "users", "agents"):
        op.drop_table(table)
    op.drop_table("workspaces")
    op.drop_table("tenants")
