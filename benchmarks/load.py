"""`tether serve` under a rising offered load: at each step the throughput it kept, p50 and p99,
then the knee, and the service's memory over the whole run; with 1 and 2 workers, on SQLite and
on PostgreSQL. Plots as PNG beside a Markdown summary.

    .venv/bin/python benchmarks/load.py [--quick] [--out docs/evidence] [--json F]
                                        [--pg URL | --no-pg] [--seconds 5]

The load is an open loop: calls are due at a fixed rate whatever the service does, and a
call's latency runs from when it was due (or, if later, when the client's event loop woke to
send it: its timer oversleeps by up to 1 ms), not from when a free connection took it, so a
service falling behind shows as latency instead of hiding in a slower client (coordinated
omission). Each step is `--seconds` long at one offered rate; the steps rise until the service
keeps up with less than 80% of what is offered (or the last step). Whatever is still queued 5 s
after a step's end is not sent and counted as missed. Everything is bounded: 127.0.0.1 only,
at most `len(RATES)` steps per set-up.

Each call is `POST /v1/authorize` at `commit` durability (its record committed before its
answer), from `--connections` keep-alive connections, each an agent task of its own (new tasks
every step), with DPoP proofs signed before the step starts so the client's two-core share
goes to sending. The client writes ready-made HTTP/1.1 requests (as benchmarks/http_api.py).

The knee: the highest offered rate at which the service served at least 95% of the calls
within the step and kept p99 at or under 25 ms (issue 7's latency target).
Memory: the resident set of every process of the service (its process group), summed, sampled
every 0.25 s from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from http_api import _free_port, http_request, prepare, start_task
from joserfc.jwk import ECKey
from rich.console import Console
from rich.table import Table

from tether.credentials import make_proof

RATES = (250, 500, 1_000, 1_500, 2_000, 2_500, 3_000, 3_500, 4_000, 5_000)
QUICK_RATES = (50, 100)
KEPT_UP = 0.95  # share of the offered calls served within the step, at or under the knee
GIVEN_UP = 0.80  # below this share the steps stop: the service is well past its knee
P99_MS = 25.0
DRAIN = 5.0  # seconds after a step's end that queued calls may still be sent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent


@dataclass
class Step:
    offered: float
    served: float  # calls a second answered within the step
    p50_ms: float
    p99_ms: float
    answered: int
    not_200: int
    missed: int  # due, but still queued when the step's drain ran out
    started: float  # seconds since the set-up's load began (the memory plot's clock)


@dataclass
class Run:
    store: str
    workers: int
    steps: list[Step] = field(default_factory=list)
    memory: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)

    @property
    def name(self) -> str:
        return f"{self.store}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def knee(self) -> Step | None:
        kept = [s for s in self.steps if kept_up(s)]
        return max(kept, key=lambda s: s.offered) if kept else None


def kept_up(step: Step) -> bool:
    return step.served >= KEPT_UP * step.offered and step.p99_ms <= P99_MS


# -- the service -----------------------------------------------------------------------------


@contextmanager
def database(server_url: str) -> Iterator[str]:
    """A PostgreSQL database of the run's own on `server_url`'s server, dropped afterwards."""
    name = f"tether_load_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as db:
        db.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with server.connect() as db:
            db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@dataclass
class Service:
    port: int
    pid: int  # and its process group's id
    key: ECKey
    grant: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def service(workers: int, db: str | None) -> Iterator[Service]:
    """`tether serve` on a fresh home (or database), in a process group of its own."""
    with tempfile.TemporaryDirectory() as home:
        key, grant = prepare(Path(home), db)
        port = _free_port()
        command = [
            sys.executable, "-m", "tether.cli", "--home", home, "serve", "--port", str(port),
            "--rate", "1000000", "--burst", "1000000", "--durability", "commit",
            "--workers", str(workers), *(["--db", db] if db else []),
        ]  # fmt: skip
        child = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"tether serve did not start: {child.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
                time.sleep(0.1)
            yield Service(port, child.pid, key, grant)
        finally:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def resident_mib(group: int) -> float:
    """The summed resident set of the processes in process group `group`, from /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            # after the name in parentheses (which may hold spaces): state ppid pgrp ...
            if int(stat.rsplit(")", 1)[1].split()[2]) != group:
                continue
            total += int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # the process ended between the listing and the read
    return total / 2**20


@contextmanager
def sampling(
    group: int, into: list[tuple[float, float]], started: float, every: float = 0.25
) -> Iterator[None]:
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            into.append((time.monotonic() - started, resident_mib(group)))
            stop.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- one step of offered load ----------------------------------------------------------------


def step(svc: Service, rate: float, seconds: float, connections: int, since: float) -> Step:
    """`rate` calls a second for `seconds`, open loop, each connection an agent task of its own."""
    authorize_url = f"{svc.url}/v1/authorize"
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        tokens = [start_task(http, svc.url, svc.key, svc.grant) for _ in range(connections)]
    body = json.dumps({"tool": "read_file", "args": {"path": "/repo/README.md"}}).encode()
    due = int(rate * seconds)
    each = due // connections + 20  # proofs per connection; a busier one signs more as it goes

    def request(n: int) -> bytes:
        proof = make_proof(
            svc.key, htm="POST", htu=authorize_url, now=time.time(), access_token=tokens[n]
        )
        headers = {"Authorization": f"DPoP {tokens[n]}", "DPoP": proof,
                   "Content-Type": "application/json"}  # fmt: skip
        return http_request("POST", "/v1/authorize", svc.port, headers, body)

    ready = [[request(n) for _ in range(each)] for n in range(connections)]
    gc.collect()
    gc.disable()  # the client's own collections would pause it, and show as the service's latency
    started = time.perf_counter()
    try:
        done = asyncio.run(_offer(svc.port, rate, due, seconds, ready, request))
    finally:
        gc.enable()
    end = started + seconds
    latencies = sorted(d - due_at for due_at, d, _ in done)
    answered_in_time = sum(1 for _, d, _ in done if d <= end)
    return Step(
        offered=rate,
        served=answered_in_time / seconds,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        answered=len(done),
        not_200=sum(1 for *_, status in done if status != b"200"),
        missed=due - len(done),
        started=time.monotonic() - since,
    )


async def _offer(
    port: int,
    rate: float,
    due: int,
    seconds: float,
    ready: list[list[bytes]],
    request: Any,
) -> list[tuple[float, float, bytes]]:
    """(due at, answered at, status) of every call answered."""
    queue: asyncio.Queue[float | None] = asyncio.Queue()  # when each call was due
    done: list[tuple[float, float, bytes]] = []
    start = time.perf_counter() + 0.05
    give_up = start + seconds + DRAIN

    async def dispatch() -> None:
        for i in range(due):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # the event loop's timer wakes up to 1 ms late: that is the client's, not the
            # service's; waiting for a free connection still counts
            queue.put_nowait(max(at, time.perf_counter()))
        for _ in ready:
            queue.put_nowait(None)

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (at := await queue.get()) is not None:
                if time.perf_counter() > give_up:
                    continue  # missed: the step is over
                writer.write(ready[n].pop() if ready[n] else request(n))
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                done.append((at, time.perf_counter(), head[9:12]))
        finally:
            writer.close()

    await asyncio.gather(dispatch(), *(connection(n) for n in range(len(ready))))
    return done


def run(store: str, workers: int, db: str | None, rates: tuple[int, ...], args: Any) -> Run:
    result = Run(store, workers)
    with service(workers, db) as svc:
        since = time.monotonic()
        with sampling(svc.pid, result.memory, since):
            step(svc, rates[0] / 2, min(1.0, args.seconds), args.connections, since)  # warm-up
            for rate in rates:
                result.steps.append(step(svc, rate, args.seconds, args.connections, since))
                if result.steps[-1].served < GIVEN_UP * rate:
                    break
    return result


# -- report ----------------------------------------------------------------------------------


def print_run(console: Console, r: Run) -> None:
    table = Table(title=f"tether serve, {r.name}, commit durability")
    for column in ("offered/s", "served/s", "p50 ms", "p99 ms", "answered", "not 200", "missed"):
        table.add_column(column, justify="right")
    for s in r.steps:
        mark = "" if kept_up(s) else " [red]x[/]"
        cells = (s.served, s.p50_ms, s.p99_ms, s.answered, s.not_200, s.missed)
        formats = (",.0f", ".1f", ".1f", ",", ",", ",")
        shown = (format(v, f) for v, f in zip(cells, formats, strict=True))
        table.add_row(f"{s.offered:,.0f}{mark}", *shown)
    console.print(table)
    knee = r.knee
    console.print(f"knee: {f'{knee.offered:,.0f}/s' if knee else 'below the first step'}; "
                  f"memory {memory_line(r)}")  # fmt: skip


def memory_line(r: Run) -> str:
    if not r.memory:
        return "not sampled"
    values = [m for _, m in r.memory]
    return f"{values[0]:.0f} MiB at start, {max(values):.0f} MiB at most, {values[-1]:.0f} at end"


def markdown(runs: list[Run], args: Any, command: str) -> str:
    lines = [
        "# Load run",
        "",
        f"`{command}` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: open loop, "
        f"`POST /v1/authorize` at commit durability, {args.connections} connections (one agent "
        f"task each), {args.seconds:g} s per step. The knee: the highest offered rate served at "
        f">= {KEPT_UP:.0%} within the step with p99 <= {P99_MS:g} ms.",
        "",
        "| set-up | knee (calls/s) | p50 / p99 at the knee (ms) | most served (calls/s) "
        "| memory start / peak / end (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        knee = r.knee
        values = [m for _, m in r.memory] or [float("nan")]
        most = max((s.served for s in r.steps), default=0.0)
        lines.append(
            f"| {r.name} | {f'{knee.offered:,.0f}' if knee else '-'} | "
            f"{f'{knee.p50_ms:.1f} / {knee.p99_ms:.1f}' if knee else '-'} | {most:,.0f} | "
            f"{values[0]:.0f} / {max(values):.0f} / {values[-1]:.0f} |"
        )
    for r in runs:
        lines += ["", f"## {r.name}", "",
                  "| offered/s | served/s | p50 ms | p99 ms | answered | not 200 | missed |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        lines += [
            f"| {s.offered:,.0f} | {s.served:,.0f} | {s.p50_ms:.1f} | {s.p99_ms:.1f} | "
            f"{s.answered:,} | {s.not_200:,} | {s.missed:,} |"
            for s in r.steps
        ]
    lines += ["", "![served against offered](load-throughput.png)", "",
              "![latency against offered](load-latency.png)", "",
              "![memory over time](load-memory.png)", ""]  # fmt: skip
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(7, 4.5))
    top = max(s.offered for r in runs for s in r.steps)
    axes.plot([0, top], [0, top], color="lightgray", linestyle="--", label="served = offered")
    for r in runs:
        axes.plot([s.offered for s in r.steps], [s.served for s in r.steps], marker="o",
                  label=r.name)  # fmt: skip
    axes.set(xlabel="offered calls/s", ylabel="served calls/s", title="Throughput")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "load-throughput.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        line = axes.plot([s.offered for s in r.steps], [s.p99_ms for s in r.steps], marker="o",
                         label=f"{r.name}: p99")  # fmt: skip
        axes.plot([s.offered for s in r.steps], [s.p50_ms for s in r.steps], marker=".",
                  linestyle=":", color=line[0].get_color(), label=f"{r.name}: p50")  # fmt: skip
    axes.axhline(P99_MS, color="lightgray", linestyle="--", label=f"{P99_MS:g} ms")
    axes.set(xlabel="offered calls/s", ylabel="ms (log)", yscale="log", title="Latency")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "load-latency.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        axes.plot([t for t, _ in r.memory], [m for _, m in r.memory], label=r.name)
    axes.set(xlabel="seconds since the load began", ylabel="resident MiB (all processes)",
             title="Memory", ylim=(0, None))  # fmt: skip
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "load-memory.png", dpi=100)
    plt.close(figure)


def postgres_up(url: str) -> bool:
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
    if not args.no_pg:
        if postgres_up(args.pg):
            stores.append("PostgreSQL")
        else:
            console.print(f"[red]PostgreSQL is not reachable at {args.pg}: its runs were NOT made")
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
