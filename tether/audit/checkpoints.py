"""Signed checkpoints: every chain's head at a moment, signed with the service's key.

A checkpoint is a compact JWS (ES256, `typ` tether-checkpoint+jwt, `kid` of the signing key)
over `{"at": <epoch seconds>, "chains": {<chain id>: [<seq>, <hash>], ...}, "previous": <hash
of the checkpoint before>, "upto": {<log>: <row>}}`, naming the chains that grew since the
checkpoint before (a quiet chain is not restated: the checkpoint that last named it still holds
it). Verification holds the log to every checkpoint: each chain named must still reach at least
that record with that hash, so truncating a chain's tail, or deleting a whole chain, is detected
and located. Records appended after the last checkpoint are protected by their links only.

A writer's checkpoint states its own chains at the heads it committed, not as it reads them
back: read back, the newest records of a live writer, deleted or rewritten by someone with the
database's keys, would be signed cut by the writer itself, and the log would verify. A store
that is behind those heads, or holds another record at their place, is logged as an error, and
the writer's heads are signed all the same, so verification finds the chain short of them.
Other writers' chains are signed as read: only they know their heads.
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

from tether.audit.chain import GENESIS, Head
from tether.credentials.jws import sign, unverified_payload
from tether.credentials.signing_keys import Keyring
from tether.store import Store, StoreClosed

log = logging.getLogger("tether.audit")

STATEMENT_TYPE = "tether-checkpoint+jwt"
EVERY_RECORDS = 1000
EVERY_SECONDS = 60.0
RETRY_SECONDS = 1.0
LOOKBACK = 1000  # rows read again behind the last checkpoint's `upto`
_encode = msgspec.json.Encoder(order="sorted").encode


class OwnChains:
    """The chains this process writes, as only it knows them: `heads` gives each one's log and
    the head it has committed (chain id -> (log, Head)), and `signed` is what this process's
    last checkpoint stated of them (a chain still there has been quiet since, unless the store
    says otherwise)."""

    def __init__(self, heads: Callable[[], dict[str, tuple[str, Head]]]) -> None:
        self.heads = heads
        self.signed: dict[str, tuple[int, str]] = {}


def write_checkpoint(
    store: Store, keyring: Keyring, now: float, own: OwnChains | None = None
) -> dict[str, Any]:
    """State and sign the head of every chain that grew since the checkpoint before (of `own`
    chains, the head this writer committed), how far each log was read, and the hash of the
    checkpoint before (so a deleted checkpoint breaks the next one's link); returns the
    statement."""
    latest = store.audit.latest_checkpoint()
    # From LOOKBACK rows before where the last one stopped: on PostgreSQL a row's number is
    # taken at insert, so a lower one can commit after a higher one was read.
    after = {log: max(0, row - LOOKBACK) for log, row in _upto(latest).items()}
    before = own.heads() if own is not None else {}  # all committed, so all in the read below
    heads, upto = store.audit.heads(after=after)
    if own is not None:
        _put_own_heads(store, own, before, heads)
    statement = {
        "at": now,
        "chains": {c: [seq, digest] for c, (seq, digest) in sorted(heads.items())},
        "previous": statement_hash(latest) if latest is not None else GENESIS,
        "upto": upto,  # the last row of each log this statement read
    }
    key = keyring.signing_key(now)
    signed = sign({"typ": STATEMENT_TYPE, "kid": key.kid}, _encode(statement), key.key)
    store.audit.add_checkpoint(now, signed)
    if own is not None:
        own.signed.update((chain, heads[chain]) for chain in before if chain in heads)
    return statement


def _put_own_heads(
    store: Store,
    own: OwnChains,
    before: dict[str, tuple[str, Head]],
    read: dict[str, tuple[int, str]],
) -> None:
    """Put in `read` (the heads read from the store) the heads this writer has committed to its
    own chains, in place of what the store gave back for them. A store that disagrees is logged
    as an error; signing the writer's heads is what makes `verify` report it. (`before`: the
    heads committed before the store was read; they are now, after it, a little further on.)"""
    for chain, (name, now) in own.heads().items():
        stored = read.pop(chain, None)
        if now.seq == 0 or (stored is None and (now.seq, now.hash) == own.signed.get(chain)):
            continue  # nothing committed yet, or quiet since this writer last signed it
        problem = _disagreement(store, name, before[chain][1], now, stored)
        if problem is not None:
            log.error(
                "audit chain %s: %s: the store lost or rewrote records this writer committed; "
                "signing the writer's head #%d, so `tether audit verify` reports the chain",
                chain,
                problem,
                now.seq,
            )
        read[chain] = (now.seq, now.hash)


def _disagreement(
    store: Store, log: str, was: Head, now: Head, stored: tuple[int, str] | None
) -> str | None:
    """What is wrong with the head the store gave for a chain that this writer had committed to
    `was` before the store was read and to `now` after, or None. Between the two the store may
    be anywhere (and past `now` for a moment: a head moves once its commit is done)."""
    if stored is None:  # none of its rows read: they are older (read by another's checkpoint)
        if was.id is None or store.audit.stored(log, was.id):  # or they are gone
            return None
        return f"its #{was.seq} is gone"
    seq, digest = stored
    if seq < was.seq:
        return f"the store's head is #{seq}, short of #{was.seq}"
    for head in (was, now):
        if seq == head.seq and digest != head.hash:
            return f"its #{seq} is not the record this writer committed"
    return None


def _upto(latest: str | None) -> dict[str, int]:
    """How far the checkpoint before read each log: the next one reads only the rows after.
    (Its signature is checked by `verify`, not here: a tampered checkpoint fails there, and so
    does every statement built on it.)"""
    if latest is None:
        return {}
    try:
        upto = json.loads(unverified_payload(latest))["upto"]
        return {str(log): int(row) for log, row in upto.items()}
    except (ValueError, KeyError, TypeError, AttributeError, JoseError):
        return {}  # read the whole log instead


def statement_hash(statement: str) -> str:
    return hashlib.sha256(statement.encode()).hexdigest()


class Checkpointer:
    """Writes a checkpoint on a thread of its own, never in a deciding one: once
    `EVERY_RECORDS` records were appended, else within `EVERY_SECONDS` of a record, and when
    closed. A checkpoint that cannot be written is logged
    and tried again; nothing here can undo or deny a record."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        clock: Callable[[], float] = time.time,
        own: OwnChains | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._own = own  # the writer's chains, signed at the heads it committed
        self._cond = threading.Condition()
        self._since = 0  # records appended since the last checkpoint
        self._closing = False
        self._thread: threading.Thread | None = None

    def appended(self, count: int) -> None:
        with self._cond:
            self._since += count
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tether-audit-checkpoints", daemon=True
                )
                self._thread.start()
            if self._since >= EVERY_RECORDS:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and self._since < EVERY_RECORDS:
                    self._cond.wait(EVERY_SECONDS)
                if self._closing:
                    return
                taken = self._since
            if taken and self._write():
                with self._cond:
                    self._since -= taken

    def _write(self) -> bool:
        try:
            write_checkpoint(self._store, self._keyring, self._clock(), self._own)
        except StoreClosed:  # closed under a Guard still running: nothing will ever be written
            with self._cond:
                self._closing = True
            return False
        except Exception:
            log.warning("could not write an audit checkpoint; will retry", exc_info=True)
            time.sleep(RETRY_SECONDS)
            return False
        return True

    def close(self) -> None:
        """Stops the thread, then a last checkpoint if anything was appended since."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._since:
            write_checkpoint(self._store, self._keyring, self._clock(), self._own)
            self._since = 0
