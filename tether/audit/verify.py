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
import json
from dataclasses import dataclass, field

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


@dataclass
class Report:
    records: int = 0
    chains: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(store: Store, keyring: Keyring) -> Report:
    report = Report()
    # The checkpoints first: every record they name was committed before they were, so it is
    # in the read of the log that follows, however much is appended meanwhile.
    checkpoints = _read_checkpoints(store, keyring, report)
    named: dict[str, dict[int, str]] = {}  # what some checkpoint says a chain reached
    for _, _, stated in checkpoints:
        for name, (at, digest) in stated.items():
            named.setdefault(name, {})[at] = digest
    chains: dict[str, _ChainState] = {}
    for log in LOGS:
        _check_links(store, log, named, chains, report)
    _hold_to_checkpoints(checkpoints, chains, report)
    return report


class _ChainState:
    """Where a chain's read has got to: its last place, the hash there (None: unknown, it was
    missing or altered), when its first record was made, and the hashes at the places some
    checkpoint names."""

    __slots__ = ("first_ts", "head", "named", "seq")

    def __init__(self, first_ts: float, named: dict[int, str]) -> None:
        self.seq = 0
        self.head: str | None = GENESIS
        self.first_ts = first_ts
        self.named = dict.fromkeys(named, "")  # filled with what is found there


def _check_links(
    store: Store,
    log: str,
    named: dict[str, dict[int, str]],
    chains: dict[str, _ChainState],
    report: Report,
) -> None:
    """Every record of one log in row order: its place in its chain, its link to the record
    before, its own hash."""
    columns = canonical_columns(log)
    at_chain, at_seq = columns.index("chain"), columns.index("chain_seq")
    at_prev, at_id, at_ts = columns.index("prev_hash"), columns.index("id"), columns.index("ts")
    canonical = row_canonical(columns)
    sha256 = hashlib.sha256
    name: str | None = None
    state = _ChainState(0.0, {})
    for row in store.audit.rows(log):
        report.records += 1
        values, digest, chain, at = row[:-2], row[-2], row[at_chain], row[at_seq]
        where = f"{_NOUN[log]} {row[at_id]}"
        if chain is None or at is None:
            report.problems.append(f"{where} is in no chain (written outside Tether's log)")
            continue
        if not isinstance(at, int):
            report.problems.append(f"{where} was altered: its place {at!r} is not a number")
            continue
        if chain != name:
            name = chain
            if chain not in chains:
                ts = row[at_ts]
                chains[chain] = _ChainState(
                    ts if isinstance(ts, int | float) else 0.0, named.get(chain, {})
                )
                report.chains += 1
            state = chains[chain]
        where = f"{where} ({chain} #{at})"
        if at <= state.seq:
            report.problems.append(f"{where} is out of order or a duplicate: inserted")
        elif at != state.seq + 1:
            missing = f"#{state.seq + 1}" if at == state.seq + 2 else f"#{state.seq + 1}-#{at - 1}"
            report.problems.append(f"{chain}: {missing} missing before {where}: deleted")
        elif state.head is not None and row[at_prev] != state.head:
            report.problems.append(
                f"{where} does not follow the record before it: inserted or reordered"
            )
        try:
            intact = sha256(canonical(values)).hexdigest() == digest
        except (TypeError, ValueError, msgspec.EncodeError):
            intact = False
        if not intact:
            report.problems.append(f"{where} was altered: its hash does not match its content")
        if at > state.seq:
            state.seq, state.head = at, digest if isinstance(digest, str) else None
        if at in state.named:
            state.named[at] = digest if isinstance(digest, str) else ""


def _read_checkpoints(
    store: Store, keyring: Keyring, report: Report
) -> list[tuple[int, float, dict[str, tuple[int, str]]]]:
    """Each checkpoint whose signature verifies, with the chains it names; a forged one, or one
    that follows a checkpoint that is gone, is a problem."""
    keys = {key.kid: key.key for key in keyring.all_keys()}
    earlier = {GENESIS}
    found = []
    for number, at, statement in store.audit.checkpoints():
        report.checkpoints += 1
        signed = _statement(statement, keys)
        if signed is None:
            report.problems.append(f"checkpoint {number}: its signature does not verify")
            continue
        chains, previous = signed
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
            elif not state.named.get(at_seq):
                report.problems.append(f"checkpoint {number}: {name} #{at_seq} is gone: deleted")
            elif state.named[at_seq] != digest:
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
) -> tuple[dict[str, tuple[int, str]], str] | None:
    """The chains a checkpoint names and the hash of the one before it, if its signature
    verifies."""
    try:
        header = unverified_header(statement, "checkpoint")
        key = keys.get(header.get("kid", ""))
        if key is None or header.get("typ") != STATEMENT_TYPE:
            return None
        body = json.loads(verified_payload(statement, key, "checkpoint"))
        chains = {name: (int(seq), str(digest)) for name, (seq, digest) in body["chains"].items()}
        return chains, str(body.get("previous", GENESIS))
    except (CredentialRefused, JoseError, ValueError, KeyError, TypeError):
        return None
