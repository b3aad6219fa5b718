"""Signed checkpoints: every chain's head at a moment, signed with the service's key.

A checkpoint is a compact JWS (ES256, `typ` tether-checkpoint+jwt, `kid` of the signing key)
over `{"at": <epoch seconds>, "chains": {<chain id>: [<seq>, <hash>], ...}}`. Verification holds
the log to every checkpoint: each chain named must still reach at least that record with that
hash, so truncating a chain's tail, or deleting a whole chain, is detected and located. Records
appended after the last checkpoint are protected by their links only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tether.credentials.jws import sign
from tether.credentials.signing_keys import Keyring
from tether.store import Store

STATEMENT_TYPE = "tether-checkpoint+jwt"
EVERY_RECORDS = 1000
EVERY_SECONDS = 60.0
_encode = msgspec.json.Encoder(order="sorted").encode


def write_checkpoint(store: Store, keyring: Keyring, now: float) -> dict[str, Any]:
    """State and sign every chain's head now; returns the statement."""
    heads = store.audit.heads()
    statement = {"at": now, "chains": {c: [seq, digest] for c, (seq, digest) in heads.items()}}
    key = keyring.signing_key(now)
    signed = sign({"typ": STATEMENT_TYPE, "kid": key.kid}, _encode(statement), key.key)
    store.audit.add_checkpoint(now, signed)
    return statement


class Checkpointer:
    """Writes a checkpoint after every `EVERY_RECORDS` records this process appended, or when
    one is appended `EVERY_SECONDS` after the last checkpoint, and when closed."""

    def __init__(
        self, store: Store, keyring: Keyring, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._lock = threading.Lock()
        self._since = 0
        self._last = clock()

    def appended(self) -> None:
        with self._lock:
            self._since += 1
            now = self._clock()
            if self._since < EVERY_RECORDS and now - self._last < EVERY_SECONDS:
                return
            self._since, self._last = 0, now
        write_checkpoint(self._store, self._keyring, now)

    def close(self) -> None:
        if self._since:
            write_checkpoint(self._store, self._keyring, self._clock())
            self._since = 0
