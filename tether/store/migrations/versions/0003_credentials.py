"""Workload identity and credentials: agent keys, trust bundles, signing keys, grants, tokens,
revocations and the replay cache; agents get a tool ceiling, tasks their grant and parent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = 64
ID = 40


def _seq() -> sa.Column[int]:
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("ceiling", sa.JSON, nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("grant", sa.String(ID), nullable=True))
        batch.add_column(sa.Column("parent", sa.String(ID), nullable=True))
        batch.create_index("ix_tasks_parent", ["parent"])
    op.create_table(
        "agent_keys",
        sa.Column("workspace", sa.String(NAME), primary_key=True),
        sa.Column("agent", sa.String(NAME), primary_key=True),
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("jwk", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("retire_at", sa.Float, nullable=True),
    )
    op.create_table(
        "trust_bundles",
        sa.Column("workspace", sa.String(NAME), primary_key=True),
        sa.Column("trust_domain", sa.String(255), primary_key=True),
        sa.Column("jwks", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "external_identities",
        sa.Column("workspace", sa.String(NAME), primary_key=True),
        sa.Column("spiffe_id", sa.String(512), primary_key=True),
        sa.Column("agent", sa.String(NAME), nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("public_jwk", sa.JSON, nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("activate_at", sa.Float, nullable=False),
        sa.Column("retire_at", sa.Float, nullable=True),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("max_ttl", sa.Float, nullable=False),
        sa.Column("may_act", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
    )
    op.create_table(
        "tokens",
        sa.Column("jti", sa.String(ID), primary_key=True),
        sa.Column("workspace", sa.String(NAME), nullable=False),
        sa.Column("agent", sa.String(NAME), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(ID), nullable=False),
        sa.Column("parent_jti", sa.String(ID), nullable=True),
        sa.Column("grant_id", sa.String(ID), nullable=False),
        sa.Column("use", sa.String(16), nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tokens_task_id", "tokens", ["task_id"])
    op.create_index("ix_tokens_parent_jti", "tokens", ["parent_jti"])
    op.create_table(
        "revocations",
        _seq(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("workspace", sa.String(NAME), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "replay_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_replay_cache_expires_at", "replay_cache", ["expires_at"])


def downgrade() -> None:
    for table in (
        "replay_cache",
        "revocations",
        "tokens",
        "grants",
        "signing_keys",
        "external_identities",
        "trust_bundles",
        "agent_keys",
    ):
        op.drop_table(table)
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_parent")
        batch.drop_column("parent")
        batch.drop_column("grant")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("ceiling")
