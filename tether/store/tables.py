"""The store's tables, in SQLAlchemy Core: the one description both engines and Alembic share.

Portable types only (no SQLite-only or PostgreSQL-only constructs). Times are epoch seconds as
floats; JSON that is only ever read back whole is Text, JSON the store filters on is JSON.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def _seq() -> sa.Column[int]:
    """A row number that only grows: the order appended logs are read back in (SQLite needs
    INTEGER, not BIGINT, for its rowid alias)."""
    return sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


NAME = 64
ID = 40
VERSION = 80

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(NAME), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("name", sa.String(NAME), primary_key=True),
    sa.Column("tenant", sa.String(NAME), sa.ForeignKey("tenants.name"), nullable=False),
    sa.Column("trust_domain", sa.String(255), nullable=False),
    # Bumped by every change to the workspace's agents, tools or policies, so that every
    # process and replica can tell cheaply that its compiled view is stale.
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    sa.Column("active_policy_version", sa.String(VERSION), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False, server_default="{}"),
    sa.Column("shadow_policy_version", sa.String(VERSION), nullable=True),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), primary_key=True),
    sa.Column("name", sa.String(NAME), primary_key=True),
    sa.Column("kind", sa.String(NAME), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("spiffe_id", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ceiling", sa.JSON, nullable=True),  # the most tools it may hold; null: any
)

# The tools each agent has been allowed to use, written on the first allowed call: the `first_use`
# risk signal without scanning the decisions.
agent_tools = sa.Table(
    "agent_tools",
    metadata,
    sa.Column("workspace", sa.String(NAME), primary_key=True),
    sa.Column("agent", sa.String(NAME), primary_key=True),
    sa.Column("tool", sa.String(128), primary_key=True),
    sa.Column("first_used", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("roles", sa.JSON, nullable=False),
)

tools = sa.Table(
    "tools",
    metadata,
    sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("args_schema", sa.JSON, nullable=False),
    sa.Column("effects", sa.JSON, nullable=False),
    sa.Column("sinks", sa.JSON, nullable=False),
    sa.Column("output", sa.String(16), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("risk_tier", sa.String(16), nullable=False),
)

policy_bundles = sa.Table(
    "policy_bundles",
    metadata,
    sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), primary_key=True),
    sa.Column("version", sa.String(VERSION), primary_key=True),
    sa.Column("files", sa.JSON, nullable=False),
    sa.Column("cedar_schema", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("workspace", sa.String(NAME), sa.ForeignKey("workspaces.name"), nullable=False),
    sa.Column("agent", sa.String(NAME), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("tools", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("grant", sa.String(ID), nullable=True),
    sa.Column("parent", sa.String(ID), nullable=True, index=True),
)

# One row per decision, inserted on the hot path. `seq` gives the order rows were written, which
# each writer's hash chain follows; the row is self-contained so it can be verified and
# replayed. Every index here costs each decision a page write, so there is one, on `id` (for
# `explain` and downstream tokens); the audit tools read in row order.
decisions = sa.Table(
    "decisions",
    metadata,
    _seq(),
    sa.Column("id", sa.String(ID), nullable=False, unique=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("tenant", sa.String(NAME), nullable=True),
    sa.Column("workspace", sa.String(NAME), nullable=True),
    sa.Column("agent", sa.String(NAME), nullable=True),
    sa.Column("user", sa.String(255), nullable=True),
    sa.Column("task_id", sa.String(ID), nullable=True),
    sa.Column("tool", sa.String(128), nullable=False),
    sa.Column("args_digest", sa.String(64), nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("effect", sa.String(24), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("policy_version", sa.String(VERSION), nullable=True),
    sa.Column("context", sa.Text, nullable=True),
    sa.Column("shadow", sa.Text, nullable=True),
    sa.Column("approval_id", sa.String(ID), nullable=True),
    sa.Column("chain", sa.String(ID), nullable=True),
    sa.Column("chain_seq", sa.BigInteger, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
)

# -- identity and credentials (DESIGN.md section 1, "Agent" and "Credential") ------------------

# The public keys agents prove themselves with; a retiring key verifies until `retire_at`.
agent_keys = sa.Table(
    "agent_keys",
    metadata,
    sa.Column("workspace", sa.String(NAME), primary_key=True),
    sa.Column("agent", sa.String(NAME), primary_key=True),
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("jwk", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("retire_at", sa.Float, nullable=True),
)

# JWT-SVID issuers trusted per workspace (a SPIFFE trust domain and its JWKS bundle), and which
# registered agent each external SPIFFE id is.
trust_bundles = sa.Table(
    "trust_bundles",
    metadata,
    sa.Column("workspace", sa.String(NAME), primary_key=True),
    sa.Column("trust_domain", sa.String(255), primary_key=True),
    sa.Column("jwks", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

external_identities = sa.Table(
    "external_identities",
    metadata,
    sa.Column("workspace", sa.String(NAME), primary_key=True),
    sa.Column("spiffe_id", sa.String(512), primary_key=True),
    sa.Column("agent", sa.String(NAME), nullable=False),
)

# The service's token signing keys. The private key is encrypted under the master key (AES-GCM,
# the kid as associated data); a key signs from `activate_at` and verifies until `retire_at`.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("public_jwk", sa.JSON, nullable=False),
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("activate_at", sa.Float, nullable=False),
    sa.Column("retire_at", sa.Float, nullable=True),
)

grants = sa.Table(
    "grants",
    metadata,
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

# Every token issued, so a revocation by task, grant or parent can name all it must refuse.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("jti", sa.String(ID), primary_key=True),
    sa.Column("workspace", sa.String(NAME), nullable=False),
    sa.Column("agent", sa.String(NAME), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("task_id", sa.String(ID), nullable=False, index=True),
    sa.Column("parent_jti", sa.String(ID), nullable=True, index=True),
    sa.Column("grant_id", sa.String(ID), nullable=False),
    sa.Column("use", sa.String(16), nullable=False),
    sa.Column("audience", sa.String(512), nullable=False),
    sa.Column("issued_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# Revocations, in the order they were made: every process loads the new ones by `seq`.
revocations = sa.Table(
    "revocations",
    metadata,
    _seq(),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("workspace", sa.String(NAME), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),  # forgettable after then; null: never
    sa.Column("reason", sa.Text, nullable=False),
)

# Proof and assertion ids seen, until they could no longer be accepted anyway.
replay_cache = sa.Table(
    "replay_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

# What happened in each open task, in order: the log its state is rebuilt from on any replica.
# The (task, seq) key is how two replicas deciding in one task at once find out (DESIGN.md 5).
task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("task_id", sa.String(ID), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # sealed (tether/session/shared.py)
)

# -- step-up approvals ---------------------------------------------------------------------------

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("workspace", sa.String(NAME), nullable=False, index=True),
    sa.Column("task_id", sa.String(ID), nullable=False, index=True),
    sa.Column("agent", sa.String(NAME), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("tool", sa.String(128), nullable=False),
    sa.Column("effects", sa.JSON, nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("call_hash", sa.String(64), nullable=False, index=True),
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

# Every step of every request, append-only: the audit trail of step-up decisions.
approval_events = sa.Table(
    "approval_events",
    metadata,
    _seq(),
    sa.Column("approval_id", sa.String(ID), nullable=False, index=True),
    sa.Column("workspace", sa.String(NAME), nullable=False),
    sa.Column("event", sa.String(24), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

# Signed statements of every chain's head at a moment: what `tether audit verify` holds the
# log to, so a truncated tail or a vanished chain is detected, not only an edited record.
# What people and services did that is not a decision: approvals granted or refused, credentials
# issued or revoked, keys and grants changed. Chained and checkpointed like the decisions.
audit_events = sa.Table(
    "audit_events",
    metadata,
    _seq(),
    sa.Column("id", sa.String(ID), nullable=False, unique=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("tenant", sa.String(NAME), nullable=True),
    sa.Column("workspace", sa.String(NAME), nullable=True, index=True),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("subject", sa.String(255), nullable=True),
    sa.Column("detail", sa.Text, nullable=False),  # JSON
    sa.Column("chain", sa.String(ID), nullable=True),
    sa.Column("chain_seq", sa.BigInteger, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    _seq(),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("statement", sa.Text, nullable=False),  # compact JWS over the chain heads
)

# -- the HTTP API (DESIGN.md section 3, "server") ----------------------------------------------

# Tokens people and services call the API with: only the SHA-256 of each is kept; `roles` maps a
# workspace (or "*", every workspace) to the roles held there; `name` says whose it is (the
# approver an approval made with it is recorded as).
admin_tokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# -- the console (DESIGN.md section 3, "server" and "console") ---------------------------------

# People who sign in to the console with a password: its Argon2id hash (never the password),
# and their roles per workspace (or "*"), as an admin token holds them.
console_accounts = sa.Table(
    "console_accounts",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float, nullable=True),
)

# Signed-in console sessions: only the SHA-256 of the cookie's secret is kept. `kind` says what
# the person signed in with (`token`: `subject` is the admin token's id; `password`: the
# account's name), read again on every request so a revoked token or a disabled account ends
# the session at once.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
