"""`tether serve` under a rising offered load: at each step the throughput it kept, p50 and p99,
then the knee, and the service's memory over the whole run; with 1 and 2 workers, on SQLite and
on PostgreSQL. Plots as PNG beside a Markdown summary.

    .venv/bin/python benchmarks/load.py [--quick] [--out docs/evidence] [--json F]
                                        [--pg URL | --no-pg] [--seconds 5]

The load is an open loop: calls are due at a fixed rate whatever the service does, and a
call's latency runs from when it was due, not from when a free connection took it, so a
service falling behind shows as latency instead of hiding in a slower client (coordinated
omission). The client's own lateness (its timer oversleeps; it shares the cores) is in that
latency too, and shown on its own: "client late", the p99 of how long after its time the
client queued a call for a connection (waiting for a free connection is not the client's).

Each step is `--seconds` long at one offered rate; the steps rise until the service keeps up
with less than 80% of what is offered (or the last step). Whatever is still queued 5 s
after a step's end is not sent and counted as missed. Everything is bounded: 127.0.0.1 only,
at most `len(RATES)` steps per set-up, each given up DRAIN + 30 s after its end (the calls
still unanswered then count as missed).

Each call is `POST /v1/authorize` at `commit` durability (its record committed before its
answer), from `--connections` keep-alive connections, each an agent task of its own (new tasks
every step), with DPoP proofs signed before the step starts so the client's two-core share
goes to sending. The client writes ready-made HTTP/1.1 requests (as benchmarks/http_api.py).

The knee: the highest offered rate at which the service served at least 95% of the calls
within the step and kept p99 at or under 25 ms (issue 7's latency target).
Memory: the resident sets of the service's processes (the server and its workers) summed,
sampled every 0.25 s from /proc (pages the workers share with the server count in each).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa
from load_report import Run, Step, markdown, plot, print_run
from rich.console import Console
from service import (
    Service,
    authorize_request,
    database,
    exchange,
    nearest_rank,
    served,
    start_task,
)

from tether.credentials.dpop import MAX_PROOF_AGE

RATES = (250, 500, 1_000, 1_500, 2_000, 2_500, 3_000, 3_500, 4_000, 5_000)
QUICK_RATES = (50, 100)
GIVEN_UP = 0.80  # below this share the steps stop: the service is well past its knee
DRAIN = 5.0  # seconds after a step's end that queued calls may still be sent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent


def resident_mib(root: int) -> float:
    """The summed resident sets of process `root` and its descendants, from /proc (read for
    those processes only: the sampler shares the client's interpreter)."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the process ended between the reads
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def sampling(
    root: int, into: list[tuple[float, float]], started: float, every: float = 0.25
) -> Iterator[None]:
    """The service's memory into `into` every `every` seconds, on a thread, while the block runs."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            into.append((time.monotonic() - started, resident_mib(root)))
            stop.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- one step of offered load ----------------------------------------------------------------


def step(svc: Service, rate: float, seconds: float, connections: int) -> Step:
    """`rate` calls a second for `seconds`, open loop, each connection an agent task of its own."""
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        tokens = [start_task(http, svc) for _ in range(connections)]
    body = json.dumps({"tool": "read_file", "args": {"path": "/repo/README.md"}}).encode()
    due = int(rate * seconds)
    each = due // connections + 20  # proofs per connection; a busier one signs more as it goes
    if seconds + DRAIN > MAX_PROOF_AGE - 10:
        each = 0  # proofs made ahead would be refused as stale: a long step signs as it goes
    ready = [[authorize_request(svc, t, body) for _ in range(each)] for t in tokens]
    gc.collect()
    gc.disable()  # the client's own collections would pause it, and show as the service's latency
    try:
        start, done = asyncio.run(_offer(svc, rate, due, seconds, ready, tokens, body))
    finally:
        gc.enable()
    latencies = sorted(answered - at for at, _, answered, _ in done)
    late = sorted(queued - at for at, queued, _, _ in done)
    return Step(
        offered=rate,
        served=sum(1 for *_, answered, _ in done if answered <= start + seconds) / seconds,
        p50_ms=nearest_rank(latencies, 0.5) * 1000,
        p99_ms=nearest_rank(latencies, 0.99) * 1000,
        answered=len(done),
        not_200=sum(1 for *_, status in done if status != b"200"),
        missed=due - len(done),
        client_late_ms=nearest_rank(late, 0.99) * 1000,
    )


async def _offer(
    svc: Service,
    rate: float,
    due: int,
    seconds: float,
    ready: list[list[bytes]],
    tokens: list[str],
    body: bytes,
) -> tuple[float, list[tuple[float, float, float, bytes]]]:
    """When the first call was due, and (due at, queued for a connection at, answered at,
    status) of every call answered before the step was given up. A call waits in the queue
    while every connection waits for an answer: that is the service's lateness, not the
    client's, and counts in its latency."""
    queue: asyncio.Queue[tuple[float, float] | None] = asyncio.Queue()  # (due, queued at)
    done: list[tuple[float, float, float, bytes]] = []
    start = time.perf_counter() + 0.05
    give_up = start + seconds + DRAIN

    async def dispatch() -> None:
        for i in range(due):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((at, time.perf_counter()))
        for _ in ready:
            queue.put_nowait(None)

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        try:
            while (call := await queue.get()) is not None:
                at, queued = call
                if time.perf_counter() > give_up:
                    continue  # missed: the step is over
                request = ready[n].pop() if ready[n] else authorize_request(svc, tokens[n], body)
                status = await exchange(reader, writer, request)
                done.append((at, queued, time.perf_counter(), status))
        finally:
            writer.close()

    try:
        async with asyncio.timeout(seconds + DRAIN + 30):  # a service that stopped answering
            await asyncio.gather(dispatch(), *(connection(n) for n in range(len(ready))))
    except TimeoutError:
        pass  # what was not answered counts as missed
    return start, done


def run(store: str, workers: int, db: str | None, rates: Sequence[int], args: Namespace) -> Run:
    """One set-up, from a fresh service: a short warm-up, then the steps until it gives up."""
    result = Run(store, workers)
    with served(workers, db) as svc, sampling(svc.pid, result.memory, time.monotonic()):
        step(svc, rates[0] / 2, min(1.0, args.seconds), args.connections)  # warm-up
        for rate in rates:
            result.steps.append(step(svc, rate, args.seconds, args.connections))
            if result.steps[-1].served < GIVEN_UP * rate:
                break
    return result


def postgres_up(url: str) -> bool:
    """Whether the PostgreSQL server answers (its runs are made on a database of their own)."""
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except sa.exc.SQLAlchemyError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short steps: a smoke run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--pg", default=PG_DEFAULT, help="a PostgreSQL server to make a database on"
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rates", type=int, nargs="+", help=f"offered (default {RATES})")
    parser.add_argument("--out", type=Path, help="plots and load.md here (default: docs/evidence)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rates = tuple(args.rates or (QUICK_RATES if args.quick else RATES))
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
    out = args.out or (None if args.quick else HERE.parent / "docs" / "evidence")
    console = Console()

    stores = ["SQLite"]
    no_pg = not args.no_pg and not postgres_up(args.pg)
    if no_pg:
        console.print(f"[red]PostgreSQL is not reachable at {args.pg}: its runs are NOT made")
        out = args.out  # the last whole run's figures stay where they are
    elif not args.no_pg:
        stores.append("PostgreSQL")
    runs: list[Run] = []
    for store in stores:
        for workers in args.workers:
            if store == "SQLite":
                runs.append(run(store, workers, None, rates, args))
            else:
                with database(args.pg) as db:
                    runs.append(run(store, workers, db, rates, args))
            print_run(console, runs[-1])

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot(runs, out)
        command = " ".join(["benchmarks/load.py", *(sys.argv[1:] if argv is None else argv)])
        (out / "load.md").write_text(markdown(runs, args, command))
        console.print(f"plots and summary in {out}/load*.png, {out}/load.md")
    if args.json:
        figures = {r.name: {"knee": r.knee.offered if r.knee else None,
                            "steps": [s.__dict__ for s in r.steps],
                            "memory_mib": [m for _, m in r.memory]} for r in runs}  # fmt: skip
        args.json.write_text(json.dumps({"runs": figures, "quick": args.quick}, indent=2))
    failed = [s for r in runs for s in r.steps if s.not_200]
    return 1 if failed or no_pg else 0


if __name__ == "__main__":
    sys.exit(main())
