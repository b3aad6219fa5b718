"""`tether audit verify`: check every chain link by link and hold the log to every checkpoint.

What each kind of tampering looks like, and where it is reported:

- an edited record: its hash no longer matches its content;
- a deleted record: a gap in its chain's numbering (and the next record links to a hash that is
  not there);
- an inserted or reordered record: a link to the wrong previous hash;
- a truncated tail or a removed chain: a signed checkpoint names a record that is gone;
- a forged or edited checkpoint: its signature does not verify;
- a deleted checkpoint: the next one links to a statement that is gone (the newest checkpoint
  has no successor: keep a copy of it outside the store);
- a chain forged with its own hashes: records older than a checkpoint that does not name it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import threading
from dataclasses import dataclass, field
from typing import Any

import msgspec
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.audit.chain import GENESIS, row_canonical
from tether.audit.checkpoints import STATEMENT_TYPE, statement_hash
from tether.credentials.jws import unverified_header, verified_payload
from tether.credentials.signing_keys import Keyring
from tether.errors import CredentialRefused
from tether.store import Store
from tether.store.audit import LOGS, canonical_columns

# A record made this long before a checkpoint must be in it (commits lag their timestamps).
CLOCK_MARGIN = 30.0
_NOUN = {"decisions": "decision", "events": "event"}
PARALLEL_FROM = 50_000  # rows: below this, starting readers costs more than it saves


@dataclass
class Report:
    records: int = 0
    chains: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(store: Store, keyring: Keyring, *, workers: int = 1) -> Report:
    """`workers` > 1: a log of more than PARALLEL_FROM rows is read in that many stretches at
    once, by forked processes (only from a process running no other thread, where forking is
    safe, as `tether audit verify` is; otherwise in this one)."""
    report = Report()
    # The checkpoints first: every record they name was committed before they were, so it is
    # in the read of the log that follows, however much is appended meanwhile.
    checkpoints = _read_checkpoints(store, keyring, report)
    known = _Known(newest=max((at for _, at, _ in checkpoints), default=None))
    for _, _, stated in checkpoints:
        for name, (at, _digest) in stated.items():
            known.places.setdefault(name, set()).add(at)
            known.covered[name] = max(known.covered.get(name, 0), at)
    chains: dict[str, _ChainState] = {}
    for log in LOGS:
        for stretch in _stretches(store, log, known, workers):
            report.records += stretch.records
            report.problems += stretch.problems
            _join(stretch, chains, report)
    _hold_to_checkpoints(checkpoints, chains, report)
    return report


@dataclass
class _Known:
    """What the checkpoints say, for reading the log: the places they name in each chain, the
    furthest place named in each, and when the newest was made. A record past its chain's
    furthest named place was appended after the newest checkpoint read the log, so it cannot
    be dated much before that checkpoint."""

    newest: float | None
    places: dict[str, set[int]] = field(default_factory=dict)
    covered: dict[str, int] = field(default_factory=dict)

    def backdated(self, chain: str, at: int, ts: float) -> bool:
        return (
            self.newest is not None
            and at > self.covered.get(chain, 0)
            and ts < self.newest - CLOCK_MARGIN
        )


@dataclass
class _Piece:
    """One chain's records within one stretch of the log: how it starts (to be linked to what
    came before, once the stretches are joined), how far it got, and the hashes found at the
    places a checkpoint names."""

    first_at: int
    first_prev: Any
    first_where: str
    first_ts: float
    last_at: int
    last_hash: str | None
    last_ts: float
    found: dict[int, str] = field(default_factory=dict)


@dataclass
class _Stretch:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    pieces: dict[str, _Piece] = field(default_factory=dict)


class _ChainState:
    """Where a chain's read has got to: its last place, the hash there (None: unknown), when
    its first record was made, and the hashes found at the places a checkpoint names."""

    __slots__ = ("first_ts", "found", "head", "last_ts", "seq")

    def __init__(self, first_ts: float) -> None:
        self.seq = 0
        self.head: str | None = GENESIS
        self.first_ts = first_ts
        self.last_ts = first_ts
        self.found: dict[int, str] = {}


def _link_problem(
    seq: int, head: str | None, at: int, prev: Any, *, chain: str, where: str
) -> str | None:
    """What is wrong with a record at place `at` linking to `prev`, after a chain that reached
    place `seq` with hash `head` (None: unknown)."""
    if at <= seq:
        return f"{where} is out of order or a duplicate: inserted"
    if at != seq + 1:
        missing = f"#{seq + 1}" if at == seq + 2 else f"#{seq + 1}-#{at - 1}"
        return f"{chain}: {missing} missing before {where}: deleted"
    if head is not None and prev != head:
        return f"{where} does not follow the record before it: inserted or reordered"
    return None


def _scan(  # noqa: PLR0912 - the loop over every record stays whole: a call per row costs
    store: Store, log: str, known: _Known, after: int, upto: int | None
) -> _Stretch:
    """The log's rows after row `after` (to `upto`), in row order: each record's own hash, and
    its link to the record before it in its chain when that is in the stretch too."""
    columns = canonical_columns(log)
    at_chain, at_seq = columns.index("chain"), columns.index("chain_seq")
    at_prev, at_id, at_ts = columns.index("prev_hash"), columns.index("id"), columns.index("ts")
    canonical = row_canonical(columns)
    sha256 = hashlib.sha256
    noun = _NOUN[log]
    stretch = _Stretch()
    problems = stretch.problems
    name: str | None = None
    piece: _Piece | None = None
    places: set[int] = set()
    for row in store.audit.rows(log, after=after, upto=upto):
        stretch.records += 1
        digest, chain, at = row[-2], row[at_chain], row[at_seq]
        if chain is None or at is None:
            problems.append(f"{noun} {row[at_id]} is in no chain (written outside Tether's log)")
            continue
        if type(at) is not int:
            problems.append(f"{noun} {row[at_id]} was altered: its place {at!r} is not a number")
            continue
        if chain != name:
            name, piece = chain, stretch.pieces.get(chain)
            places = known.places.get(chain, set())
        ts = row[at_ts] if isinstance(row[at_ts], int | float) else 0.0
        if piece is None:
            piece = stretch.pieces[chain] = _Piece(
                first_at=at,
                first_prev=row[at_prev],
                first_where=f"{noun} {row[at_id]} ({chain} #{at})",
                first_ts=ts,
                last_at=at,
                last_hash=digest if isinstance(digest, str) else None,
                last_ts=ts,
            )
        else:
            if at != piece.last_at + 1 or row[at_prev] != piece.last_hash:
                where = f"{noun} {row[at_id]} ({chain} #{at})"
                problem = _link_problem(
                    piece.last_at, piece.last_hash, at, row[at_prev], chain=chain, where=where
                )
                if problem is not None:
                    problems.append(problem)
            if ts < piece.last_ts - CLOCK_MARGIN:
                problems.append(_backdated(f"{noun} {row[at_id]} ({chain} #{at})"))
            if at > piece.last_at:
                piece.last_at, piece.last_hash = at, digest if isinstance(digest, str) else None
                piece.last_ts = ts
        if known.backdated(chain, at, ts):
            problems.append(
                f"{noun} {row[at_id]} ({chain} #{at}) is dated before the newest checkpoint, "
                "which does not name it: backdated or slipped in"
            )
        try:
            intact = sha256(canonical(row[:-2])).hexdigest() == digest
        except (TypeError, ValueError, msgspec.EncodeError):
            intact = False
        if not intact:
            where = f"{noun} {row[at_id]} ({chain} #{at})"
            problems.append(f"{where} was altered: its hash does not match its content")
        if at in places:
            piece.found[at] = digest if isinstance(digest, str) else ""
    return stretch


def _join(stretch: _Stretch, chains: dict[str, _ChainState], report: Report) -> None:
    """Link each chain's piece of a stretch to what the stretches before it reached."""
    for chain, piece in stretch.pieces.items():
        state = chains.get(chain)
        if state is None:
            state = chains[chain] = _ChainState(piece.first_ts)
            report.chains += 1
        problem = _link_problem(
            state.seq,
            state.head,
            piece.first_at,
            piece.first_prev,
            chain=chain,
            where=piece.first_where,
        )
        if problem is not None:
            report.problems.append(problem)
        if state.seq and piece.first_ts < state.last_ts - CLOCK_MARGIN:
            report.problems.append(_backdated(piece.first_where))
        if piece.last_at > state.seq:
            state.seq, state.head = piece.last_at, piece.last_hash
            state.last_ts = piece.last_ts
        state.found.update(piece.found)


def _backdated(where: str) -> str:
    return f"{where} is dated well before the record before it in its chain: backdated"


def _stretches(store: Store, log: str, known: _Known, workers: int) -> list[_Stretch]:
    top = store.audit.last_row(log)
    if workers <= 1 or top < PARALLEL_FROM or threading.active_count() > 1:
        return [_scan(store, log, known, 0, None)]
    bounds = [top * i // workers for i in range(workers + 1)]
    _forked["store"], _forked["known"] = store, known
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            stretches = pool.starmap(
                _scan_forked, [(log, lo, hi) for lo, hi in itertools.pairwise(bounds)]
            )
    finally:
        _forked.clear()
    return [*stretches, _scan(store, log, known, top, None)]  # and what came since


_forked: dict[str, Any] = {}  # what forked readers inherit: the store, what checkpoints say


def _scan_forked(log: str, after: int, upto: int) -> _Stretch:
    store: Store = _forked["store"]
    store.engine.dispose(close=False)  # the parent's connections are the parent's
    return _scan(store, log, _forked["known"], after, upto)


def _read_checkpoints(
    store: Store, keyring: Keyring, report: Report
) -> list[tuple[int, float, dict[str, tuple[int, str]]]]:
    """Each checkpoint whose signature verifies, with the chains it names; a forged one, or one
    that follows a checkpoint that is gone, is a problem."""
    keys = {key.kid: key.key for key in keyring.all_keys()}
    earlier = {GENESIS}
    found = []
    for number, _row_at, statement in store.audit.checkpoints():
        report.checkpoints += 1
        signed = _statement(statement, keys)
        if signed is None:
            report.problems.append(f"checkpoint {number}: its signature does not verify")
            continue
        chains, previous, at = signed
        if previous not in earlier:
            report.problems.append(
                f"checkpoint {number} follows a checkpoint that is gone: deleted"
            )
        earlier.add(statement_hash(statement))
        found.append((number, at, chains))
    return found


def _hold_to_checkpoints(
    checkpoints: list[tuple[int, float, dict[str, tuple[int, str]]]],
    chains: dict[str, _ChainState],
    report: Report,
) -> None:
    """Every chain a checkpoint names still reaches what it signed; no chain has records from
    before a checkpoint unless that checkpoint or one before it names it."""
    known: set[str] = set()
    for number, at, stated in checkpoints:
        for name, (at_seq, digest) in stated.items():
            state = chains.get(name)
            if state is None:
                report.problems.append(f"checkpoint {number}: {name} is gone: removed")
            elif at_seq > state.seq:
                report.problems.append(
                    f"checkpoint {number}: {name} reached #{at_seq}, now it ends at "
                    f"#{state.seq}: truncated"
                )
            elif not state.found.get(at_seq):
                report.problems.append(f"checkpoint {number}: {name} #{at_seq} is gone: deleted")
            elif state.found[at_seq] != digest:
                report.problems.append(
                    f"checkpoint {number}: {name} #{at_seq} is not the record it signed: rewritten"
                )
        known.update(stated)
        for name, state in chains.items():
            if name not in known and state.first_ts < at - CLOCK_MARGIN:
                report.problems.append(
                    f"{name} has records from before checkpoint {number}, which does not name "
                    "it: forged or slipped in"
                )
                known.add(name)  # said once


def _statement(
    statement: str, keys: dict[str, ECKey]
) -> tuple[dict[str, tuple[int, str]], str, float] | None:
    """The chains a checkpoint names, the hash of the one before it and when it was made (the
    signed time, not the row's), if its signature verifies."""
    try:
        header = unverified_header(statement, "checkpoint")
        key = keys.get(header.get("kid", ""))
        if key is None or header.get("typ") != STATEMENT_TYPE:
            return None
        body = json.loads(verified_payload(statement, key, "checkpoint"))
        chains = {name: (int(seq), str(digest)) for name, (seq, digest) in body["chains"].items()}
        return chains, str(body.get("previous", GENESIS)), float(body["at"])
    except (CredentialRefused, JoseError, ValueError, KeyError, TypeError):
        return None
