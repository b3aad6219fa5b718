"""Revocation: by token, by task (and everything delegated from it), by grant, by agent, by
workspace; the check on every call is a handful of set lookups in memory.

Revocations are rows in the store with a sequence number. Every process loads the rows newer
than the last it saw, at most `poll_interval` seconds after they were written, and at once when
it revoked them itself. An agent or workspace revocation refuses every token issued before it,
so a suspended agent that is resumed later starts from fresh tokens only. A token's revocation
is forgotten once the token has expired, so the sets stay as small as the live tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from tether.credentials.access_token import AccessClaims
from tether.errors import InvalidInput
from tether.identity import parse_agent_spiffe_id
from tether.store import Store

POLL_INTERVAL = 0.25


class Revoked(StrEnum):
    TOKEN = "token"
    TASK = "task"
    GRANT = "grant"
    AGENT = "agent"
    WORKSPACE = "workspace"


class Revocations:
    def __init__(
        self,
        store: Store,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._seq = 0
        self._polled_at = float("-inf")
        self._tokens: set[str] = set()
        self._tasks: dict[str, str] = {}  # task id -> why (revoked, ended)
        self._grants: set[str] = set()
        self._agents: dict[tuple[str, str], float] = {}
        self._workspaces: dict[str, float] = {}
        self.refresh()

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
            self._polled_at = now
            if self._store.credentials.last_revocation() == self._seq:
                return
            for row in self._store.credentials.revocations_since(self._seq, now):
                self._seq = max(self._seq, row.seq)
                kind, key = row.kind, row.subject
                if kind == Revoked.TOKEN:
                    self._tokens.add(key)
                elif kind == Revoked.TASK:
                    self._tasks[key] = row.reason
                elif kind == Revoked.GRANT:
                    self._grants.add(key)
                elif kind == Revoked.AGENT:
                    self._agents[(row.workspace, key)] = row.at
                elif kind == Revoked.WORKSPACE:
                    self._workspaces[key] = row.at

    def check(self, claims: AccessClaims, now: float) -> str | None:  # noqa: PLR0911 - one reason each
        """Why the token is revoked, or None. Polls the store when the interval has passed."""
        if now - self._polled_at >= self._poll_interval or now < self._polled_at:
            self.refresh()
        if claims.jti in self._tokens:
            return f"token {claims.jti} was revoked"
        for jti in claims.chain:
            if jti in self._tokens:
                return f"token {jti}, which this token was delegated from, was revoked"
        for task in (claims.task, *claims.tasks):
            if task in self._tasks:
                return f"task {task} was {self._tasks[task]}"
        if claims.grant in self._grants:
            return f"grant {claims.grant} was revoked by its user"
        since = self._workspaces.get(claims.ws)
        if since is not None and claims.iat <= since:
            return (
                f"every credential of workspace {claims.ws} issued before {since:.0f} was revoked"
            )
        if self._agents:
            for agent in (claims.agent, *_delegators(claims)):
                since = self._agents.get((claims.ws, agent))
                if since is not None and claims.iat <= since:
                    return f"agent {agent} was suspended: its credentials were revoked"
        return None

    def agent_revoked_since(self, workspace: str, agent: str) -> float | None:
        return self._agents.get((workspace, agent))


def _delegators(claims: AccessClaims) -> list[str]:
    """The agents up the `act` chain that delegated this token: suspending one ends it too."""
    names = []
    for spiffe_id in claims.actors()[1:]:
        try:
            names.append(parse_agent_spiffe_id(spiffe_id)[2])
        except InvalidInput:
            continue
    return names
