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

import json
from dataclasses import dataclass, field

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.audit.chain import GENESIS, record_hash
from tether.audit.checkpoints import STATEMENT_TYPE, statement_hash
from tether.credentials.jws import unverified_header, verified_payload
from tether.credentials.signing_keys import Keyring
from tether.errors import CredentialRefused
from tether.store import Store

# A record made this long before a checkpoint must be in it (commits lag their timestamps).
CLOCK_MARGIN = 30.0


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
    seen: dict[str, dict[int, str]] = {}  # chain -> seq -> hash
    first: dict[str, float] = {}  # chain -> when its first record was made
    chain: str | None = None
    links: dict[int, str] = {}
    seq = 0
    head: str | None = GENESIS  # None: the hash before is unknown (it was missing)
    for row in store.audit.chained():
        report.records += 1
        where = f"decision {row['id']}"
        at, digest = row["chain_seq"], row["hash"]
        if row["chain"] is None or at is None:
            report.problems.append(f"{where} is in no chain (written outside Tether's log)")
            continue
        if not isinstance(at, int):
            report.problems.append(f"{where} was altered: its place {at!r} is not a number")
            continue
        if row["chain"] != chain:
            chain, seq, head = row["chain"], 0, GENESIS
            links = seen.setdefault(row["chain"], {})
            first[row["chain"]] = row["ts"] if isinstance(row["ts"], int | float) else 0.0
            report.chains += 1
        where = f"{where} ({chain} #{at})"
        if at <= seq:
            report.problems.append(f"{where} is out of order or a duplicate: inserted")
        elif at != seq + 1:
            missing = f"#{seq + 1}" if at == seq + 2 else f"#{seq + 1}-#{at - 1}"
            report.problems.append(f"{chain}: {missing} missing before {where}: deleted")
        elif head is not None and row["prev_hash"] != head:
            report.problems.append(
                f"{where} does not follow the record before it: inserted or reordered"
            )
        if record_hash(row) != digest:
            report.problems.append(f"{where} was altered: its hash does not match its content")
        seq, head = max(seq, at), digest if isinstance(digest, str) else None
        links[at] = digest if isinstance(digest, str) else ""
    _check_checkpoints(store, keyring, report, seen, first)
    return report


def _check_checkpoints(
    store: Store,
    keyring: Keyring,
    report: Report,
    seen: dict[str, dict[int, str]],
    first: dict[str, float],
) -> None:
    """Each checkpoint: its signature, its link to the one before, every chain it names still
    reaching what it signed, and no chain older than it that it does not name."""
    keys = {key.kid: key.key for key in keyring.all_keys()}
    earlier = {GENESIS}
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
        for name, (at_seq, digest) in chains.items():
            found = seen.get(name, {})
            if at_seq not in found:
                last = max(found, default=0)
                report.problems.append(
                    f"checkpoint {number}: {name} reached #{at_seq}, now it ends at #{last}: "
                    "truncated"
                    if found
                    else f"checkpoint {number}: {name} is gone: removed"
                )
            elif found[at_seq] != digest:
                report.problems.append(
                    f"checkpoint {number}: {name} #{at_seq} is not the record it signed: rewritten"
                )
        for name, since in first.items():
            if name not in chains and since < at - CLOCK_MARGIN:
                report.problems.append(
                    f"{name} has records from before checkpoint {number}, which does not name "
                    "it: forged or slipped in"
                )


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
