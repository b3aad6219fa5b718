"""The decision log's costs: sustained appends, from one writer and from several, and verification.

What is measured, on SQLite in a fresh home:

- at each durability level (`commit`, `fsync`, `async`):
  - **one writer**: `AuditLog.append` of a realistic decision record, one after another;
  - **N threads**: N threads appending through one writer at once (group commit);
  - **N processes**: N processes appending at once to the same store, each its own writer and
    chain; records per second over the wall time of the whole run;
- **baseline**: the floor under `commit`: the same rows, already hashed, inserted and committed
  one by one through sqlite3 alone;
- **verify**: `tether.audit.verify` over everything written, records per second, read by as
  many processes as there are cores (as `tether audit verify` does).

Each append figure is the median of `--repeat` runs (3), on a store that grows as they go; one
writer appends 20,000 records a run, each of several 4,000.

Targets (issue 6): >= 20,000 records/s at `commit` from one writer; >= 5,000 records/s at `fsync`
with 8 writers (both 8 threads and 8 processes are held to it); verify >= 200,000 records/s.

    .venv/bin/python benchmarks/audit.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tether import Guard
from tether.audit import AuditLog, verify
from tether.audit.chain import Chain
from tether.model import DecisionRecord, Durability, Effect, Stage, new_id
from tether.store import DB_FILE, Store
from tether.store.audit import canonical_columns

# One writer appends this many times as many records as each of several: long enough (a
# second) to include SQLite's checkpoints, which a short run measures before they come.
ALONE_LONGER = 5
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


def append(home: str, count: int, durability: str, threads: int = 1) -> float:
    """Append `count` records from each of `threads` threads of one writer (one store, one
    chain); returns the seconds until every record was committed (for `async`, that includes
    the last flush)."""
    store = Store.at_home(home)
    guard = Guard(store)
    log = AuditLog(store, guard.credentials.keyring, durability=Durability(durability))
    batches = [[record(i) for i in range(count)] for _ in range(threads)]

    def run(records: list[DecisionRecord]) -> None:
        for r in records:
            log.append(r)

    started = time.perf_counter()
    if threads == 1:
        run(batches[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, batches))
    log.close()
    elapsed = time.perf_counter() - started
    guard.close()
    return elapsed


def sqlite_alone(home: str, count: int) -> float:
    """The floor under `commit` from one writer: the same rows (already hashed) inserted and
    committed one by one straight through sqlite3, in WAL mode with synchronous=NORMAL, into
    the same table of a fresh store; returns records per second."""
    Guard.embedded(home=home).close()
    columns = [*canonical_columns("decisions"), "hash"]
    chain = Chain()
    rows = [[getattr(r, c) for c in columns] for r in chain.link([record(i) for i in range(count)])]
    db = sqlite3.connect(Path(home) / DB_FILE, isolation_level="")
    db.execute("PRAGMA synchronous=NORMAL")
    insert = (
        f"INSERT INTO decisions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    started = time.perf_counter()
    for row in rows:
        db.execute(insert, row)
        db.commit()
    elapsed = time.perf_counter() - started
    db.close()
    return count / elapsed


def _ready(_: int = 0) -> None:
    """Run in each writer process before the clock starts: its imports are done by then."""
    time.sleep(0.05)


def measure(
    home: str, durability: str, per_writer: int, writers: int, repeat: int
) -> dict[str, float]:
    """Records per second at one level, the median of `repeat` runs each: one writer, `writers`
    threads sharing a writer (group commit), and `writers` processes each its own writer (and
    chain), started and warm before the clock starts."""
    runs: dict[str, list[float]] = {
        "one writer": [],
        f"{writers} threads": [],
        f"{writers} processes": [],
    }
    context = multiprocessing.get_context("spawn")
    with context.Pool(writers, initializer=_ready) as pool:
        pool.map(_ready, range(writers * 2), chunksize=1)
        for _ in range(repeat):
            alone = per_writer * ALONE_LONGER
            runs["one writer"].append(alone / append(home, alone, durability))
            seconds = append(home, per_writer, durability, writers)
            runs[f"{writers} threads"].append(writers * per_writer / seconds)
            started = time.perf_counter()
            pool.starmap(append, [(home, per_writer, durability)] * writers, chunksize=1)
            wall = time.perf_counter() - started
            runs[f"{writers} processes"].append(writers * per_writer / wall)
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few records: a smoke run")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    per_writer = 300 if args.quick else 4000
    repeat = 1 if args.quick else args.repeat
    console = Console()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as home:
        Guard.embedded(home=home).close()  # the store, its schema and keys, made once
        for level in Durability:
            results[level.value] = measure(home, level.value, per_writer, args.writers, repeat)
        floor = statistics.median(
            sqlite_alone(tempfile.mkdtemp(dir=home), per_writer) for _ in range(repeat)
        )
        with Guard.embedded(home=home) as guard:
            started = time.perf_counter()
            report = verify(guard.store, guard.credentials.keyring, workers=os.cpu_count() or 1)
            seconds = time.perf_counter() - started
        assert report.intact, report.problems

    table = Table(title="Decision log on SQLite: appends per second")
    table.add_column("durability")
    for column in results["commit"]:
        table.add_column(column, justify="right")
    for level, figures in results.items():
        table.add_row(level, *(f"{value:,.0f}" for value in figures.values()))
    console.print(table)
    console.print(
        f"baseline, SQLite alone (the same rows inserted and committed one by one, no Tether): "
        f"{floor:,.0f}/s; one writer at commit is {results['commit']['one writer'] / floor:.2f}x "
        "of it"
    )
    verified = report.records / seconds
    console.print(f"verify: {verified:,.0f} records/s ({report.records:,} records, all intact)")
    goals = {
        "one writer at commit": (results["commit"]["one writer"], TARGET_ONE_WRITER),
        f"{args.writers} threads at fsync": (
            results["fsync"][f"{args.writers} threads"],
            TARGET_EIGHT_WRITERS,
        ),
        f"{args.writers} processes at fsync": (
            results["fsync"][f"{args.writers} processes"],
            TARGET_EIGHT_WRITERS,
        ),
        "verify": (verified, TARGET_VERIFY),
    }
    for name, (value, target) in goals.items():
        mark = "[green]met[/]" if value >= target else "[red]missed[/]"
        console.print(f"{name}: {value:,.0f}/s (target >= {target:,.0f}) {mark}")
    if args.json:
        figures = {
            "appends": results,
            "sqlite alone": floor,
            "verify": verified,
            "records": report.records,
        }
        args.json.write_text(json.dumps({"results": figures, "quick": args.quick}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
