"""`tether serve` under load: decisions per second over HTTP, p50 and p99, beside the serving
ceiling of the same service in the same run.

A bounded load generator on 127.0.0.1 (it stops after `--requests` per figure or `--seconds`,
whichever is first) against `tether serve` in its own processes (`--workers`, default 2; task
state shared through the store, so any worker can take any call), on a fresh SQLite store (or
the PostgreSQL database `--db` names) at the `commit` durability level (every decision committed
before its answer). `--connections` clients at once, each its own agent task (decisions of one
task are made one at a time), keep-alive connections, from one client process (asyncio).

The client writes ready-made HTTP/1.1 requests on raw keep-alive connections (a client library
would be slower than the service and measure itself).

- **ceiling**: `GET /healthz`, the same framework and middleware with no decision: what this
  machine serves at all.
- **authorize, proofs made ahead**: `POST /v1/authorize` with each task's cached token and a DPoP
  proof per request signed before the clock starts, so the figure is the service's (it still
  checks every proof: signature, claims, replay cache).
- **authorize, a proof signed per call**: the same with the client signing each proof as it
  sends, as a real agent does (the client shares the machine's two cores with the service).

Target (issue 7, on this 2-core machine): >= 2,500 authorize calls/s with cached task tokens,
p99 <= 25 ms at that load.

    .venv/bin/python benchmarks/http_api.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from service import authorize_request, exchange, http_request, nearest_rank, served, start_task

TARGET_RATE = 2_500.0
TARGET_P99_MS = 25.0


async def load(
    port: int,
    connections: int,
    requests: int,
    seconds: float,
    make: Callable[[int], bytes],
) -> dict[str, float]:
    """`requests` calls shared evenly by `connections` keep-alive connections; each call's
    latency, and the rate. The client writes ready-made HTTP/1.1 requests (`make(connection)`)
    and reads the answers itself: a client library would be slower than the service."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(requests // connections):
                if time.perf_counter() > deadline:
                    return
                request = make(number)
                started = time.perf_counter()
                status = await exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                if status != b"200":
                    failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(connections)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "rate": len(latencies) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": nearest_rank(ordered, 0.99) * 1000,
        "calls": len(latencies),
        "failed": failures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", help="a PostgreSQL URL instead of a fresh SQLite store")
    parser.add_argument("--requests", type=int, default=20_000, help="per figure")
    parser.add_argument("--seconds", type=float, default=30.0, help="per figure, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    requests = 300 if args.quick else args.requests
    console = Console()
    results: dict[str, dict[str, float]] = {}
    with served(args.workers, args.db) as svc:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            tokens = [start_task(http, svc) for _ in range(args.connections)]
        body = json.dumps({"tool": "read_file", "args": {"path": "/repo/README.md"}}).encode()
        healthz = http_request("GET", "/healthz", svc.port, {}, b"")
        made = {
            n: [authorize_request(svc, t, body) for _ in range(requests // args.connections)]
            for n, t in enumerate(tokens)
        }
        for name, make in (
            ("ceiling: GET /healthz", lambda _: healthz),
            ("authorize, proofs made ahead", lambda n: made[n].pop()),
            ("authorize, a proof signed per call",
             lambda n: authorize_request(svc, tokens[n], body)),
        ):  # fmt: skip
            results[name] = asyncio.run(
                load(svc.port, args.connections, requests, args.seconds, make)
            )

    store = "PostgreSQL" if args.db else "SQLite"
    title = f"tether serve, {args.workers} workers, {store} at commit"
    title += f", {args.connections} connections"
    table = Table(title=title)
    for column in ("figure", "calls/s", "p50 ms", "p99 ms", "calls", "not 200"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['rate']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['calls']:,.0f}",
            f"{r['failed']:,.0f}",
        )
    console.print(table)
    best = results["authorize, proofs made ahead"]
    ceiling_rate = results["ceiling: GET /healthz"]["rate"]
    console.print(f"authorize is {best['rate'] / ceiling_rate:.2f}x of the ceiling")
    met = best["rate"] >= TARGET_RATE and best["p99_ms"] <= TARGET_P99_MS
    mark = "[green]met[/]" if met else "[red]missed[/]"
    console.print(
        f"target >= {TARGET_RATE:,.0f} calls/s with p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{best['rate']:,.0f}/s, p99 {best['p99_ms']:.1f} ms {mark}"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "quick": args.quick}, indent=2))
    return 0 if all(r["failed"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
