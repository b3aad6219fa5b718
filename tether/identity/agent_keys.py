"""The public keys an agent proves its identity with, and their rotation.

An agent may hold several active keys (one per replica, say). Rotating adds a new key and moves
the others to retiring: they keep verifying for an overlap, so an agent's in-flight assertions
and proofs survive the switch, and stop verifying when it ends. A revoked key stops at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.errors import Conflict, InvalidInput, NotFound
from tether.identity.jwk import parse_public_jwk, public_jwk
from tether.model import AgentKey, KeyStatus
from tether.store import Store

MAX_KEYS = 8  # active and retiring together: more is a leak, not a rotation
DEFAULT_OVERLAP = 600.0


def register_key(
    store: Store, *, workspace: str, agent: str, jwk: Mapping[str, Any], now: float
) -> AgentKey:
    """Add an active key. Raises InvalidInput for a key that is not a public ES256 JWK, and
    Conflict for one the agent has already or one past MAX_KEYS (the key is fine: the agent's
    keys as they are now leave no room for it)."""
    key = parse_public_jwk(jwk)
    current = list(usable_keys(store, workspace, agent, now))
    kid = key.thumbprint()
    if any(k.kid == kid for k in store.credentials.agent_keys(workspace, agent)):
        raise Conflict(f"agent {agent!r} already has key {kid}")
    if len(current) >= MAX_KEYS:
        raise Conflict(f"agent {agent!r} already has {MAX_KEYS} keys; rotate or revoke one")
    record = AgentKey(
        workspace=workspace,
        agent=agent,
        kid=kid,
        jwk=public_jwk(key),
        status=KeyStatus.ACTIVE,
        created_at=now,
    )
    store.credentials.add_agent_key(record)
    return record


def rotate_key(
    store: Store,
    *,
    workspace: str,
    agent: str,
    jwk: Mapping[str, Any],
    now: float,
    overlap: float = DEFAULT_OVERLAP,
) -> AgentKey:
    """Add `jwk` as active; every other active key retires `overlap` seconds from now."""
    if not 0 <= overlap <= 7 * 86400:
        raise InvalidInput("the rotation overlap must be between 0 and 7 days")
    previous = list(usable_keys(store, workspace, agent, now))
    record = register_key(store, workspace=workspace, agent=agent, jwk=jwk, now=now)
    for key in previous:
        if key.status is KeyStatus.ACTIVE:
            store.credentials.set_agent_key(
                workspace, agent, key.kid, KeyStatus.RETIRING, now + overlap
            )
    return record


def revoke_key(store: Store, workspace: str, agent: str, kid: str, now: float) -> None:
    if not any(k.kid == kid for k in store.credentials.agent_keys(workspace, agent)):
        raise NotFound(f"agent {agent!r} of workspace {workspace!r} has no key {kid!r}")
    store.credentials.set_agent_key(workspace, agent, kid, KeyStatus.REVOKED, now)


def usable_keys(store: Store, workspace: str, agent: str, now: float) -> list[AgentKey]:
    """The keys that verify at `now`: active ones, and retiring ones before their end."""
    return [k for k in store.credentials.agent_keys(workspace, agent) if _usable(k, now)]


def _usable(key: AgentKey, now: float) -> bool:
    if key.status is KeyStatus.ACTIVE:
        return True
    return key.status is KeyStatus.RETIRING and key.retire_at is not None and now < key.retire_at
