"""The decision log as hash chains: each record carries the SHA-256 of its canonical form and of
the record before it in its writer's chain.

Several processes (and, later, replicas) append at once, so there is one chain per writer (a
`Store` opened by a process), numbered from 1: no writer waits for another to learn the latest
hash, and each chain is linear, so a deleted, inserted or reordered record breaks a link where it
happened. Signed checkpoints (checkpoints.py) state every chain's head at a moment, so a chain
cut short or removed whole is detected too.

The canonical form is the record's fields (all but `hash`) as JSON with keys sorted, no spaces,
UTF-8: for the values a record holds (strings, integers, null and epoch-second floats) that is
RFC 8785 JSON, so anyone can recompute it (docs/audit.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from tether.model import DecisionRecord, new_id

GENESIS = "0" * 64  # the `prev_hash` of a chain's first record
_encode = msgspec.json.Encoder(order="sorted").encode


def canonical(record: DecisionRecord | dict[str, Any]) -> bytes:
    """The bytes a record's hash is over: every field but `hash`, keys sorted (a stored row, as
    a dict of its columns, gives the same bytes as the record it was written from)."""
    body = dict(record) if isinstance(record, dict) else msgspec.structs.asdict(record)
    del body["hash"]
    return _encode(body)


def record_hash(record: DecisionRecord | dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


class Chain:
    """This writer's chain. `append` links a record to the chain's head and stores it, one at a
    time, and moves the head only once the store has committed it."""

    def __init__(self) -> None:
        self.id = new_id("chain_")
        self._seq = 0
        self._head = GENESIS
        self._lock = threading.Lock()

    def append(self, record: DecisionRecord, store: Callable[[DecisionRecord], None]) -> None:
        with self._lock:
            link = {"chain": self.id, "chain_seq": self._seq + 1, "prev_hash": self._head}
            body = {**msgspec.structs.asdict(record), **link, "hash": None}
            linked = msgspec.structs.replace(record, **link, hash=record_hash(body))
            store(linked)
            self._seq, self._head = linked.chain_seq or 0, linked.hash or GENESIS
