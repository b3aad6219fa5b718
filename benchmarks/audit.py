"""The decision log's costs: sustained appends, from one writer and from several, and verification.

What is measured, on SQLite in a fresh home:

- **appends, one writer**: `AuditLog.append` of a realistic decision record (hash-chained, then
  inserted and committed before returning: the `commit` durability level), one after another.
- **appends, N writers**: N processes appending at once to the same store, each its own chain;
  records per second over the wall time of the whole run.
- **verify**: `tether.audit.verify` over everything written, records per second.

Targets (issue 6): >= 20,000 records/s at `commit` from one writer; >= 5,000 records/s at `fsync`
with 8 writers (the `fsync` level is not built yet, so 8 writers are measured at `commit`);
verify >= 200,000 records/s.

    .venv/bin/python benchmarks/audit.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tether import Guard
from tether.audit import AuditLog, verify
from tether.model import DecisionRecord, Effect, Stage, new_id
from tether.store import Store

TARGET_ONE_WRITER = 20_000.0
TARGET_EIGHT_WRITERS = 5_000.0
TARGET_VERIFY = 200_000.0
CONTEXT = json.dumps(
    {
        "args": {"to": "bob@acme.com", "subject": "weekly report"},
        "task": {"calls": 12, "labels": ["untrusted"], "tools": ["send_email", "read_file"]},
        "risk": {"score": 10, "level": "low", "signals": ["read_untrusted"]},
    }
)


def record(i: int) -> DecisionRecord:
    return DecisionRecord(
        id=new_id("dec_"),
        ts=time.time(),
        tenant="default",
        workspace="acme",
        agent="coder",
        user="alice",
        task_id="task_bench",
        tool="send_email",
        args_digest="0" * 64,
        args=json.dumps({"to": "bob@acme.com", "subject": f"report {i}"}),
        effect=Effect.ALLOW,
        stage=Stage.POLICY,
        reasons='[{"stage":"policy","text":"mail inside acme is fine","policy":"mail-inside"}]',
        policy_version="sha256:" + "1" * 64,
        context=CONTEXT,
        shadow=None,
    )


def append(home: str, count: int) -> float:
    """Append `count` records as one writer; returns the seconds it took."""
    store = Store.at_home(home)
    guard = Guard(store)
    log = AuditLog(store, guard.credentials.keyring)
    records = [record(i) for i in range(count)]
    started = time.perf_counter()
    for r in records:
        log.append(r)
    elapsed = time.perf_counter() - started
    log.close()
    guard.close()
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few records: a smoke run")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    per_writer = 300 if args.quick else 5000
    console = Console()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        Guard.embedded(home=home).close()  # the store, its schema and keys, made once
        seconds = append(home, per_writer)
        results["appends, one writer"] = per_writer / seconds
        context = multiprocessing.get_context("spawn")
        started = time.perf_counter()
        with context.Pool(args.writers) as pool:
            pool.starmap(append, [(home, per_writer)] * args.writers)
        wall = time.perf_counter() - started
        results[f"appends, {args.writers} writers"] = args.writers * per_writer / wall
        with Guard.embedded(home=home) as guard:
            started = time.perf_counter()
            report = verify(guard.store, guard.credentials.keyring)
            seconds = time.perf_counter() - started
        assert report.intact, report.problems
        results["verify"] = report.records / seconds
        results["records verified"] = report.records

    table = Table(title="Decision log on SQLite (durability: commit)")
    table.add_column("measure")
    table.add_column("records per second", justify="right")
    for name, value in results.items():
        if name != "records verified":
            table.add_row(name, f"{value:,.0f}")
    console.print(table)
    console.print(f"({results['records verified']:,} records verified, all intact)")
    goals = {
        "one writer at commit": (results["appends, one writer"], TARGET_ONE_WRITER),
        f"{args.writers} writers (at commit; fsync not built)": (
            results[f"appends, {args.writers} writers"],
            TARGET_EIGHT_WRITERS,
        ),
        "verify": (results["verify"], TARGET_VERIFY),
    }
    for name, (value, target) in goals.items():
        mark = "[green]met[/]" if value >= target else "[red]missed[/]"
        console.print(f"{name}: {value:,.0f}/s (target >= {target:,.0f}) {mark}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "quick": args.quick}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
