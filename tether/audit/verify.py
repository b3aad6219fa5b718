"""`tether audit verify`: check every chain link by link and hold the log to every checkpoint.

What each kind of tampering looks like, and where it is reported:

- an edited record: its hash no longer matches its content;
- a deleted record: a gap in its chain's numbering (and the next record links to a hash that is
  not there);
- an inserted or reordered record: a link to the wrong previous hash;
- a truncated tail or a removed chain: a signed checkpoint names a record that is gone;
- a forged or edited checkpoint: its signature does not verify.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from tether.audit.chain import GENESIS, record_hash
from tether.audit.checkpoints import STATEMENT_TYPE
from tether.credentials.jws import unverified_header, verified_payload
from tether.credentials.signing_keys import Keyring
from tether.errors import CredentialRefused
from tether.store import Store


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
    chain: str | None = None
    links: dict[int, str] = {}
    seq, head = 0, GENESIS
    for row in store.audit.chained():
        report.records += 1
        where = f"decision {row['id']}"
        at, digest = row["chain_seq"], row["hash"]
        if row["chain"] is None or at is None:
            report.problems.append(f"{where} is in no chain (written outside Tether's log)")
            continue
        if row["chain"] != chain:
            chain, seq, head = row["chain"], 0, GENESIS
            links = seen.setdefault(row["chain"], {})
            report.chains += 1
        where = f"{where} ({chain} #{at})"
        if at != seq + 1:
            missing = f"#{seq + 1}" if at == seq + 2 else f"#{seq + 1}-#{at - 1}"
            report.problems.append(f"{chain}: {missing} missing before {where}: deleted")
        elif row["prev_hash"] != head:
            report.problems.append(
                f"{where} does not follow the record before it: inserted or reordered"
            )
        if record_hash(row) != digest:
            report.problems.append(f"{where} was altered: its hash does not match its content")
        seq, head = at, digest or ""
        links[seq] = head
    keys = {key.kid: key.key for key in keyring.all_keys()}
    for number, _, statement in store.audit.checkpoints():
        report.checkpoints += 1
        chains = _statement(statement, keys)
        if chains is None:
            report.problems.append(f"checkpoint {number}: its signature does not verify")
            continue
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
    return report


def _statement(statement: str, keys: dict[str, ECKey]) -> dict[str, tuple[int, str]] | None:
    try:
        header = unverified_header(statement, "checkpoint")
        key = keys.get(header.get("kid", ""))
        if key is None or header.get("typ") != STATEMENT_TYPE:
            return None
        body = json.loads(verified_payload(statement, key, "checkpoint"))
        return {name: (int(seq), str(digest)) for name, (seq, digest) in body["chains"].items()}
    except (CredentialRefused, JoseError, ValueError, KeyError, TypeError):
        return None
