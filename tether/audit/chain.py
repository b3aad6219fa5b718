"""The decision log as hash chains: each record carries the SHA-256 of its canonical form and of
the record before it in its writer's chain.

Several processes (and, later, replicas) append at once, so there is one chain per writer and
log (decisions, events), numbered from 1: no writer waits for another to learn the latest hash,
and each chain is linear, so a deleted, inserted or reordered record breaks a link where it
happened. Signed checkpoints (checkpoints.py) state the chains' heads at moments, so a chain cut
short or removed whole is detected too.

The canonical form is the record's fields (all but `hash`) as JSON with keys sorted, no spaces,
UTF-8: for the values a record holds (strings, integers, null and epoch-second floats) that is
RFC 8785 JSON, so anyone can recompute it (docs/audit.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from tether.model import AuditEvent, DecisionRecord, new_id

GENESIS = "0" * 64  # the `prev_hash` of a chain's first record
_encode = msgspec.json.Encoder(order="sorted").encode


def canonical(record: DecisionRecord | AuditEvent | dict[str, Any]) -> bytes:
    """The bytes a record's hash is over: every field but `hash`, keys sorted (a stored row, as
    a dict of its columns, gives the same bytes as the record it was written from)."""
    body = dict(record) if isinstance(record, dict) else msgspec.structs.asdict(record)
    body.pop("hash", None)
    return _encode(body)


def record_hash(record: DecisionRecord | AuditEvent | dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def row_canonical(columns: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
    """`canonical` for stored rows read as tuples of `columns` (sorted, `hash` not among them),
    several times faster than through a dict: what lets verification keep up with the log."""
    assert list(columns) == sorted(columns) and "hash" not in columns
    row = msgspec.defstruct("Row", [(c, Any) for c in columns])
    encode = msgspec.json.Encoder().encode  # a Struct encodes its fields in order: sorted
    return lambda values: encode(row(*values))


Record = TypeVar("Record", DecisionRecord, AuditEvent)


class _Canonical:
    """`canonical` of a record type's records with their link set, from the record's values
    put in sorted order: the same bytes, at a third of the cost (it is on every decision)."""

    def __init__(self, kind: type[msgspec.Struct]) -> None:
        fields = list(kind.__struct_fields__)
        names = sorted(f for f in fields if f != "hash")
        self._order = [fields.index(name) for name in names]
        self._link = {name: names.index(name) for name in ("chain", "chain_seq", "prev_hash")}
        self._row = row_canonical(names)

    def __call__(self, record: msgspec.Struct, chain: str, seq: int, prev_hash: str) -> bytes:
        values = msgspec.structs.astuple(record)
        ordered = [values[i] for i in self._order]
        ordered[self._link["chain"]] = chain
        ordered[self._link["chain_seq"]] = seq
        ordered[self._link["prev_hash"]] = prev_hash
        return self._row(ordered)


_CANONICAL = {kind: _Canonical(kind) for kind in (DecisionRecord, AuditEvent)}


class Head(NamedTuple):
    """A chain's last committed record: its place, its hash and its id (None before the first)."""

    seq: int
    hash: str
    id: str | None


class Chain:
    """One writer's chain of one log. `link` numbers records after the head and hashes them;
    the head moves (`advance`) only once the store has committed them, so a batch that failed
    leaves no hole: the next batch links to the last record that is really there.

    Not thread-safe by itself: the log's one committer (group commit) is its only user. Others
    may read `committed`, which is replaced whole, so they never see a place with another
    place's hash (a checkpoint signs it: checkpoints.py)."""

    def __init__(self) -> None:
        self.id = new_id("chain_")
        self.committed = Head(0, GENESIS, None)

    @property
    def seq(self) -> int:
        return self.committed.seq

    @property
    def head(self) -> str:
        return self.committed.hash

    def link(self, records: Sequence[Record]) -> list[Record]:
        linked = []
        seq, head = self.seq, self.head
        for record in records:
            seq += 1
            body = _CANONICAL[type(record)](record, self.id, seq, head)
            prev, head = head, hashlib.sha256(body).hexdigest()
            linked.append(
                msgspec.structs.replace(
                    record, chain=self.id, chain_seq=seq, prev_hash=prev, hash=head
                )
            )
        return linked

    def advance(self, committed: Sequence[DecisionRecord | AuditEvent]) -> None:
        if committed:
            last = committed[-1]
            self.committed = Head(last.chain_seq or 0, last.hash or GENESIS, last.id)
