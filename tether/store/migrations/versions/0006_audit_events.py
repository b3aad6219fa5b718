"""Approval and credential events in the audit log, chained like decisions; two of the
decisions' indexes dropped.

Each index costs every decision insert a page write (about a fifth of an append each). The
(chain, chain_seq) unique index guarded nothing `tether audit verify` does not find (it reads
the log in row order and keeps each chain's place itself); the task_id index served only
`tether audit query --task`, which now reads in row order like every other filter.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_chain_seq", type_="unique")
        batch.drop_index("ix_decisions_task_id")
    op.create_table(
        "audit_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("workspace", sa.String(64), nullable=True, index=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("chain", sa.String(40), nullable=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=True),
        sa.Column("hash", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("decisions") as batch:
        batch.create_index("ix_decisions_task_id", ["task_id"])
        batch.create_unique_constraint("uq_decisions_chain_seq", ["chain", "chain_seq"])
