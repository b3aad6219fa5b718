"""The decision log as hash chains (one per writer) with signed checkpoints; a workspace's
shadow bundle.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("shadow_policy_version", sa.String(80), nullable=True))
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("chain", sa.String(40), nullable=True))
        batch.add_column(sa.Column("chain_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_decisions_chain_seq", ["chain", "chain_seq"])
    op.create_table(
        "audit_checkpoints",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_chain_seq", type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("chain_seq")
        batch.drop_column("chain")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("shadow_policy_version")
