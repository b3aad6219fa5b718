"""Revocation: by token, by task (and everything delegated from it), by grant, by agent key, by
agent, by workspace; the check on every call is a handful of dict lookups in memory.

Revocations are rows in the store with a sequence number. Every process loads the rows newer
than the last it saw, at most `poll_interval` seconds after they were written, and at once when
it revoked them itself; on PostgreSQL, also on the first check after another process's
notification arrives (milliseconds after it commits: store/notify.py). An agent or workspace
revocation refuses every token issued before it, and, since tokens carry the clock of the
process that issued them, also those issued up to the allowed clock skew after it: a suspended
agent that is resumed gets working tokens again only once that much time has passed. Every
entry is forgotten once no token it could refuse is still alive, so the maps stay as small as the
live tokens.

A key revocation is the agent's key in its workspace (written by identity/agent_keys.py, when a
key is revoked or rotated away), and takes effect at its `at`: the key's retirement may be
ahead. Its tokens are refused from then on, checked here rather than by reading the agent's keys
on each call.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from tether.credentials.access_token import AccessClaims
from tether.errors import InvalidInput
from tether.identity import parse_agent_spiffe_id
from tether.identity.agent_keys import KEY_REVOKED
from tether.store import Store
from tether.store.credentials import RevocationRecord
from tether.store.notify import REVOCATION

POLL_INTERVAL = 0.25
PRUNE_INTERVAL = 60.0
LOOKBACK = 1000  # rows re-read behind the last one seen (see refresh)


class Revoked(StrEnum):
    TOKEN = "token"
    TASK = "task"
    GRANT = "grant"
    KEY = KEY_REVOKED  # an agent's key: every token bound to it (cnf.jkt), from `at` on
    AGENT = "agent"
    WORKSPACE = "workspace"


class Revocations:
    """`skew`: how far the clocks of the processes issuing tokens may disagree."""

    def __init__(
        self,
        store: Store,
        *,
        skew: float,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._skew = skew
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._seq = 0
        self._polled_at = float("-inf")
        self._pruned_at = float("-inf")
        # kind -> subject -> (when it was revoked, why, until when it matters)
        self._entries: dict[str, dict[str, tuple[float, str, float]]] = {k: {} for k in Revoked}
        self._due = False  # another process revoked something: load it on the next check
        store.listener.subscribe(REVOCATION, self._revoked_elsewhere)
        self.refresh()

    def _revoked_elsewhere(self, _kind: str | None) -> None:
        self._due = True

    def revoke(
        self,
        kind: Revoked,
        workspace: str,
        subject: str,
        *,
        reason: str,
        expires_at: float | None = None,
    ) -> None:
        """Record a revocation for every process, and enforce it here at once."""
        self._store.credentials.add_revocation(
            kind.value, workspace, subject, at=self._clock(), expires_at=expires_at, reason=reason
        )
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            now = self._clock()
            self._due = False  # before reading: a revocation notified from now on is read again
            self._polled_at = now
            if now - self._pruned_at >= PRUNE_INTERVAL:
                self._prune(now)
            # Rows are read again from LOOKBACK before the last one seen: on PostgreSQL a row's
            # number is taken when it is inserted, so a lower one can commit after a higher one
            # was read. Applying a revocation twice changes nothing.
            after = max(0, self._seq - LOOKBACK)
            for row in self._store.credentials.revocations_since(after, now):
                self._seq = max(self._seq, row.seq)
                self._load(row)

    def _load(self, row: RevocationRecord) -> None:
        until = row.expires_at if row.expires_at is not None else math.inf
        entry = (row.at, row.reason, until)
        entries = self._entries[row.kind]
        if row.kind == Revoked.AGENT:
            key = f"{row.workspace}/{row.subject}"
        elif row.kind == Revoked.KEY:
            # workspace/agent/kid; workspace/kid for a row written before revocations named
            # the agent (refusing that kid in its own workspace only)
            key = f"{row.workspace}/{row.subject}"
            if "/" not in row.subject:
                entry = (row.at, "revoked", until)
            earlier = entries.get(key)
            if earlier is not None and earlier[0] <= row.at:  # a key stops at its first stop
                entry = (earlier[0], earlier[1], max(earlier[2], until))
        else:
            key = row.subject
        entries[key] = entry

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for entries in self._entries.values():
            for key in [k for k, (_, _, until) in entries.items() if until <= now]:
                del entries[key]

    def check(self, claims: AccessClaims, now: float) -> str | None:  # noqa: PLR0911 - one reason each
        """Why the token is revoked, or None. Polls the store when the interval has passed."""
        if self._due or now - self._polled_at >= self._poll_interval or now < self._polled_at:
            self.refresh()
        entries = self._entries
        tokens = entries[Revoked.TOKEN]
        if claims.jti in tokens:
            return f"token {claims.jti} was revoked"
        for jti in claims.chain:
            if jti in tokens:
                return f"token {jti}, which this token was delegated from, was revoked"
        for task in (claims.task, *claims.tasks):
            found = entries[Revoked.TASK].get(task)
            if found is not None:
                return f"task {task} was {found[1]}"
        found = entries[Revoked.GRANT].get(claims.grant)
        if found is not None:
            return f"grant {claims.grant} was {found[1]}"
        why = self._key_stopped(claims, now)
        if why is not None:
            return why
        found = entries[Revoked.WORKSPACE].get(claims.ws)
        if found is not None and claims.iat <= found[0] + self._skew:
            return (
                f"every credential of workspace {claims.ws} issued until {found[0]:.0f} was revoked"
            )
        if entries[Revoked.AGENT]:
            for agent in (claims.agent, *_delegators(claims)):
                found = entries[Revoked.AGENT].get(f"{claims.ws}/{agent}")
                if found is not None and claims.iat <= found[0] + self._skew:
                    return f"agent {agent} was suspended: its credentials were revoked"
        return None

    def _key_stopped(self, claims: AccessClaims, now: float) -> str | None:
        """Why the token's key, or the key of a token it was delegated from, no longer stands
        for its agent (revoked, or retired), if so."""
        keys = self._entries[Revoked.KEY]
        if not keys:
            return None
        if claims.jkt is not None:
            found = keys.get(f"{claims.ws}/{claims.agent}/{claims.jkt}") or keys.get(
                f"{claims.ws}/{claims.jkt}"
            )
            if found is not None and now >= found[0]:
                return f"the agent key it is bound to ({claims.jkt}) was {found[1]}"
        for subject in claims.keys:
            found = keys.get(f"{claims.ws}/{subject}")
            if found is not None and now >= found[0]:
                agent, _, kid = subject.partition("/")
                return f"the key ({kid}) of agent {agent}, which delegated it, was {found[1]}"
        return None


def _delegators(claims: AccessClaims) -> list[str]:
    """The agents up the `act` chain that delegated this token: suspending one ends it too."""
    names = []
    for spiffe_id in claims.actors()[1:]:
        try:
            names.append(parse_agent_spiffe_id(spiffe_id)[2])
        except InvalidInput:
            continue
    return names
