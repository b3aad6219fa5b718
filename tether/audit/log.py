"""The decision log as the pipeline writes it: every record appended to this writer's hash
chain, committed before the decision is answered, with a signed checkpoint now and then."""

from __future__ import annotations

import time
from collections.abc import Callable

from tether.audit.chain import Chain
from tether.audit.checkpoints import Checkpointer
from tether.credentials.signing_keys import Keyring
from tether.model import DecisionRecord
from tether.store import Store


class AuditLog:
    def __init__(
        self, store: Store, keyring: Keyring, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self.chain = Chain()
        self._checkpoints = Checkpointer(store, keyring, clock)

    def append(self, record: DecisionRecord, *, first_use: bool = False) -> None:
        """Link, store and commit one decision (raises if it could not be stored)."""
        self.chain.append(
            record, lambda linked: self._store.record_decision(linked, first_use=first_use)
        )
        self._checkpoints.appended()

    def close(self) -> None:
        """A last checkpoint, so what this writer appended is held to a signature."""
        self._checkpoints.close()
