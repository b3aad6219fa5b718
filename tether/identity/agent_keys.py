"""The public keys an agent proves its identity with, and their rotation.

An agent may hold several active keys (one per replica, say). Rotating adds a new key and moves
the others to retiring: they keep verifying for an overlap, so an agent's in-flight assertions
and proofs survive the switch, and stop verifying when it ends. A revoked key stops at once.

A key that stops (retired at the end of its overlap, or revoked) also stops the tokens bound to
it: each stop is written as a key revocation, effective from then, which every process holds in
memory (credentials/revocation.py), so no call reads the keys to find it out. A revocation names
the workspace and the agent as well as the key: a public key is public (every DPoP proof carries
it), and a revocation made in one workspace must reach nothing in another.

A key proves one agent only: registering a key that any agent, in any workspace, already has is
refused, so no two agents share a thumbprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.errors import Conflict, InvalidInput, NotFound
from tether.identity.jwk import parse_public_jwk, public_jwk, thumbprint
from tether.model import AgentKey, KeyStatus
from tether.store import Store

MAX_KEYS = 8  # active and retiring together: more is a leak, not a rotation
DEFAULT_OVERLAP = 600.0
KEY_REVOKED = "key"  # the kind of revocation these are (credentials.revocation.Revoked.KEY)
# The largest clock skew a deployment may allow (credentials.service.MAX_SKEW), and how long
# after a key stops a token bound to it may still be taken: the longest token lifetime
# (credentials.service.MAX_TOKEN_TTL) plus that skew, both ways. Restated, not imported:
# credentials/ imports this package; tests/test_credentials.py pins that they cover those.
CLOCKS_DIFFER = 300.0
TOKENS_OUTLIVE_A_KEY = 3600.0 + 2 * CLOCKS_DIFFER


def key_subject(agent: str, kid: str) -> str:
    """What a key revocation names, in its workspace: the agent and the key (a kid alone would
    reach every agent presenting that public key, in any workspace)."""
    return f"{agent}/{kid}"


def register_key(
    store: Store, *, workspace: str, agent: str, jwk: Mapping[str, Any], now: float
) -> AgentKey:
    """Add an active key. Raises InvalidInput for a key that is not a public ES256 JWK, and
    Conflict for one that this or any other agent has already, or one past MAX_KEYS (the key is
    fine: the agent's keys as they are now leave no room for it)."""
    key = parse_public_jwk(jwk)
    record = AgentKey(
        workspace=workspace,
        agent=agent,
        kid=thumbprint(key),
        jwk=public_jwk(key),
        status=KeyStatus.ACTIVE,
        created_at=now,
    )

    def admit(registered: list[AgentKey]) -> None:
        _refuse_if_held(record, [k for k in registered if k.kid == record.kid])
        own = [k for k in registered if (k.workspace, k.agent) == (workspace, agent)]
        if sum(_usable(k, now) for k in own) >= MAX_KEYS:
            raise Conflict(f"agent {agent!r} already has {MAX_KEYS} keys; rotate or revoke one")

    store.credentials.add_agent_key(record, admit)
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
    """Add `jwk` as active; every other active key retires `overlap` seconds from now, and the
    tokens bound to it with it."""
    if not 0 <= overlap <= 7 * 86400:
        raise InvalidInput("the rotation overlap must be between 0 and 7 days")
    previous = list(usable_keys(store, workspace, agent, now))
    record = register_key(store, workspace=workspace, agent=agent, jwk=jwk, now=now)
    for key in previous:
        if key.status is KeyStatus.ACTIVE:
            _stop_tokens(store, workspace, agent, key.kid, at=now + overlap, why="retired")
            store.credentials.set_agent_key(
                workspace, agent, key.kid, KeyStatus.RETIRING, now + overlap
            )
    return record


def revoke_key(store: Store, workspace: str, agent: str, kid: str, now: float) -> None:
    """The key verifies nothing from `now`, and the tokens bound to it are refused (within a
    revocation poll in other processes; `Credentials.revoke_agent_key` also at once in its)."""
    if not any(k.kid == kid for k in store.credentials.agent_keys(workspace, agent)):
        raise NotFound(f"agent {agent!r} of workspace {workspace!r} has no key {kid!r}")
    # The revocation first: if the status is not written after it, the key's new tokens are
    # refused (fail closed) rather than its old ones accepted. Stamped as far back as clocks
    # may differ, so that it holds at once in a process whose clock runs behind this one's (a
    # key's stop applies by the checking process's clock, and whatever the tokens' age).
    _stop_tokens(store, workspace, agent, kid, at=now - CLOCKS_DIFFER, why="revoked")
    store.credentials.set_agent_key(workspace, agent, kid, KeyStatus.REVOKED, now)


def usable_keys(store: Store, workspace: str, agent: str, now: float) -> list[AgentKey]:
    """The keys that verify at `now`: active ones, and retiring ones before their end."""
    return [k for k in store.credentials.agent_keys(workspace, agent) if _usable(k, now)]


def _usable(key: AgentKey, now: float) -> bool:
    if key.status is KeyStatus.ACTIVE:
        return True
    return key.status is KeyStatus.RETIRING and key.retire_at is not None and now < key.retire_at


def _stop_tokens(
    store: Store, workspace: str, agent: str, kid: str, *, at: float, why: str
) -> None:
    """Refuse, from `at`, every token bound to the agent's key `kid`."""
    store.credentials.add_revocation(
        KEY_REVOKED,
        workspace,
        key_subject(agent, kid),
        at=at,
        expires_at=at + TOKENS_OUTLIVE_A_KEY,
        reason=why,
    )


def _refuse_if_held(key: AgentKey, holders: list[AgentKey]) -> None:
    """Conflict if any agent already has the key, whatever its status: a key proves one
    agent. Another workspace's agent is not named (nothing of a workspace shows in another)."""
    if any((h.workspace, h.agent) == (key.workspace, key.agent) for h in holders):
        raise Conflict(f"agent {key.agent!r} already has key {key.kid}")
    if holders:
        named = [h.agent for h in holders if h.workspace == key.workspace]
        whose = f"agent {named[0]!r}" if named else "another agent"
        raise Conflict(
            f"key {key.kid} is already registered to {whose}: a key proves one agent only; "
            f"generate a new key for {key.agent!r}"
        )
