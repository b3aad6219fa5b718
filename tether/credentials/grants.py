"""Delegation grants: a user's standing permission for an agent to act for them.

A grant is the root of every credential chain: no task token exists that a grant did not allow,
and revoking the grant refuses every token issued under it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.model import Grant, new_id
from tether.names import check_segment, check_tool_name
from tether.store import Store

MAX_GRANT_LIFETIME = 365 * 86400.0
MAX_TASK_LIFETIME = 24 * 3600.0


def add_grant(
    store: Store,
    *,
    workspace: str,
    user: str,
    agent: str,
    tools: Iterable[str],
    max_ttl: float,
    may_act: Iterable[str] = (),
    expires_in: float,
    now: float,
    source: str = "api",
) -> Grant:
    """Record that `user` lets `agent` act for them with `tools`; raises InvalidInput/NotFound."""
    snapshot = store.snapshot(workspace)
    if snapshot is None:
        raise NotFound(f"workspace {workspace!r} does not exist")
    agents = {a.name for a in snapshot.agents}
    catalogue = {t.name for t in snapshot.tools}
    granted = tuple(sorted({check_tool_name(t) for t in tools}))
    delegates = tuple(sorted({check_segment("agent", a) for a in may_act}))
    if not isinstance(user, str) or not user.strip():
        raise InvalidInput("a grant is made by a user; name them")
    if user.strip() not in {u.name for u in store.users(workspace)}:
        raise NotFound(f"user {user!r} is not a user of workspace {workspace!r}")
    for name in (agent, *delegates):
        if name not in agents:
            raise NotFound(f"agent {name!r} is not registered in workspace {workspace!r}")
    if not granted:
        raise InvalidInput("a grant names at least one tool")
    unknown = [t for t in granted if t not in catalogue]
    if unknown:
        raise NotFound(f"tools {unknown} are not in the catalogue of workspace {workspace!r}")
    if not 0 < max_ttl <= MAX_TASK_LIFETIME:
        raise InvalidInput(f"max_ttl must be between 0 and {MAX_TASK_LIFETIME:.0f} seconds")
    if not 0 < expires_in <= MAX_GRANT_LIFETIME:
        raise InvalidInput(f"a grant expires within {MAX_GRANT_LIFETIME:.0f} seconds")
    grant = Grant(
        id=new_id("grant_"),
        workspace=workspace,
        user=user.strip(),
        agent=agent,
        tools=granted,
        max_ttl=float(max_ttl),
        may_act=delegates,
        created_at=now,
        expires_at=now + expires_in,
        source=source,
    )
    store.credentials.add_grant(grant)
    return grant


def live_grant(store: Store, grant_id: str, now: float) -> Grant:
    """The grant, if it can still delegate at `now`; raises CredentialRefused otherwise."""
    grant = store.credentials.grant(grant_id) if isinstance(grant_id, str) else None
    if grant is None:
        raise CredentialRefused(f"no grant {grant_id!r}", "invalid_grant")
    if grant.revoked_at is not None:
        raise CredentialRefused(f"grant {grant.id} was revoked by its user", "invalid_grant")
    if now >= grant.expires_at:
        raise CredentialRefused(f"grant {grant.id} expired", "invalid_grant")
    return grant


def find_grant(
    store: Store, *, workspace: str, user: str, agent: str, tools: Iterable[str], now: float
) -> Grant:
    """The live grant from `user` to `agent` covering `tools` that lasts longest."""
    wanted = set(tools)
    candidates = [
        g
        for g in store.credentials.grants(workspace)
        if g.user == user
        and g.agent == agent
        and g.revoked_at is None
        and now < g.expires_at
        and wanted <= set(g.tools)
    ]
    if not candidates:
        raise CredentialRefused(
            f"user {user!r} has not delegated {sorted(wanted)} to agent {agent!r} in workspace "
            f"{workspace!r} (tether grant add)",
            "invalid_grant",
        )
    return max(candidates, key=lambda g: g.expires_at)
