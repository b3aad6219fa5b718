"""Chained actions: workspace settings (working hours), and each agent's first tool uses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("settings", sa.JSON, nullable=False, server_default="{}"))
    op.create_table(
        "agent_tools",
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("tool", sa.String(128), primary_key=True),
        sa.Column("first_used", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_tools")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("settings")
