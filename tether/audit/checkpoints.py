"""Signed checkpoints: every chain's head at a moment, signed with the service's key.

A checkpoint is a compact JWS (ES256, `typ` tether-checkpoint+jwt, `kid` of the signing key)
over `{"at": <epoch seconds>, "chains": {<chain id>: [<seq>, <hash>], ...}}`. Verification holds
the log to every checkpoint: each chain named must still reach at least that record with that
hash, so truncating a chain's tail, or deleting a whole chain, is detected and located. Records
appended after the last checkpoint are protected by their links only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from joserfc.errors import JoseError

from tether.audit.chain import GENESIS
from tether.credentials.jws import sign, unverified_payload
from tether.credentials.signing_keys import Keyring
from tether.store import Store

log = logging.getLogger("tether.audit")

STATEMENT_TYPE = "tether-checkpoint+jwt"
EVERY_RECORDS = 1000
EVERY_SECONDS = 60.0
_encode = msgspec.json.Encoder(order="sorted").encode


def write_checkpoint(store: Store, keyring: Keyring, now: float) -> dict[str, Any]:
    """State and sign every chain's head now, and the hash of the checkpoint before (so a
    deleted checkpoint breaks the next one's link); returns the statement."""
    latest = store.audit.latest_checkpoint()
    chains, upto = _carried(latest)
    new, top = store.audit.heads(after=upto)
    for chain, (seq, digest) in new.items():
        if seq >= chains.get(chain, (0, ""))[0]:
            chains[chain] = (seq, digest)
    statement = {
        "at": now,
        "chains": {c: [seq, digest] for c, (seq, digest) in sorted(chains.items())},
        "previous": statement_hash(latest) if latest is not None else GENESIS,
        "upto": top,  # the last row of the log this statement read
    }
    key = keyring.signing_key(now)
    signed = sign({"typ": STATEMENT_TYPE, "kid": key.kid}, _encode(statement), key.key)
    store.audit.add_checkpoint(now, signed)
    return statement


def _carried(latest: str | None) -> tuple[dict[str, tuple[int, str]], int]:
    """The heads the checkpoint before stated, and how far it read: the next one reads only
    the rows after. (Its signature is checked by `verify`, not here: a tampered checkpoint
    fails there, and so does every statement built on it.)"""
    if latest is None:
        return {}, 0
    try:
        body = json.loads(unverified_payload(latest))
        chains = {c: (int(seq), str(digest)) for c, (seq, digest) in body["chains"].items()}
        return chains, int(body["upto"])
    except (ValueError, KeyError, TypeError, JoseError):
        return {}, 0  # read the whole log instead


def statement_hash(statement: str) -> str:
    return hashlib.sha256(statement.encode()).hexdigest()


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
        """Called after a record is committed: nothing here may undo or deny it, so a
        checkpoint that cannot be written now is logged and tried again at the next record."""
        with self._lock:
            self._since += 1
            now = self._clock()
            if self._since < EVERY_RECORDS and now - self._last < EVERY_SECONDS:
                return
            try:
                write_checkpoint(self._store, self._keyring, now)
            except Exception:
                log.warning("could not write an audit checkpoint; will retry", exc_info=True)
                return
            self._since, self._last = 0, now

    def close(self) -> None:
        if self._since:
            write_checkpoint(self._store, self._keyring, self._clock())
            self._since = 0
