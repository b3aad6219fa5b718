"""The private keys of the agents this process runs, which sign their assertions and proofs.

An agent's key is its identity, so it lives with the agent: in `<home>/agent-keys/` (owner-only
files, reused by every process of the agent) or, without a home, in memory for the life of the
Guard. The first time an agent needs a key, one is made and its public half registered.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from joserfc.jwk import ECKey

from tether.identity import generate_key, register_key, revoke_key, usable_keys
from tether.model import EventSink, no_events
from tether.store import Store

KEYS_DIR = "agent-keys"
log = logging.getLogger("tether.sdk")


class AgentKeys:
    def __init__(
        self, store: Store, clock: Callable[[], float], events: EventSink = no_events
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._dir = store.home / KEYS_DIR if store.home is not None else None
        self._keys: dict[tuple[str, str], ECKey] = {}
        self._ephemeral: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def get(self, workspace: str, agent: str) -> ECKey:
        """The agent's key, made and registered if it has none usable here."""
        with self._lock:
            key = self._keys.get((workspace, agent))
            if key is None:
                key = self._load(workspace, agent) or self._make(workspace, agent)
                self._keys[(workspace, agent)] = key
            return key

    def put(self, workspace: str, agent: str, key: ECKey) -> None:
        """Use `key` (already registered) for the agent in this process."""
        with self._lock:
            self._keys[(workspace, agent)] = key

    def close(self) -> None:
        """Keys that lived only in memory can never be used again: revoke them."""
        for workspace, agent, kid in self._ephemeral:
            try:
                revoke_key(self._store, workspace, agent, kid, self._clock())
                self._events(
                    "credential.revoked",
                    workspace=workspace,
                    actor=agent,
                    subject=kid,
                    revoked="key",
                    reason="a key kept only in memory, by a Guard that closed",
                )
            except Exception:  # the store is going away too; the key is unusable regardless
                log.warning("could not revoke key %s of agent %s", kid, agent, exc_info=True)
        self._ephemeral.clear()

    def _path(self, workspace: str, agent: str) -> Path | None:
        return self._dir / workspace / f"{agent}.jwk" if self._dir is not None else None

    def _load(self, workspace: str, agent: str) -> ECKey | None:
        path = self._path(workspace, agent)
        if path is None or not path.exists():
            return None
        key = ECKey.import_key(json.loads(path.read_text()))
        usable = {k.kid for k in usable_keys(self._store, workspace, agent, self._clock())}
        return key if key.thumbprint() in usable else None

    def _make(self, workspace: str, agent: str) -> ECKey:
        key = generate_key()
        record = register_key(
            self._store,
            workspace=workspace,
            agent=agent,
            jwk=key.as_dict(private=False),
            now=self._clock(),
        )
        self._events(
            "agent_key.registered",
            workspace=workspace,
            actor=agent,
            subject=record.kid,
            agent=agent,
            rotated=False,
        )
        path = self._path(workspace, agent)
        if path is None:
            self._ephemeral.append((workspace, agent, record.kid))
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(key.as_dict(private=True)))
        os.replace(path.with_suffix(".tmp"), path)
        return key
