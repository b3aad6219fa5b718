"""The MCP gateway's added latency: a `tools/call` through `tether gateway serve` against the same
call made to the upstream directly, in one run.

Both paths use the official MCP client over streamable HTTP from this process, one call at a
time (latency, not throughput), to an upstream MCP server (benchmarks/mcp_echo.py: one `echo`
tool that answers at once) in its own process. Through the gateway (its own process, on a fresh
SQLite store at the `commit` durability level) each call carries the agent's task token and a
fresh DPoP proof signed by the client, is authenticated, decided by Cedar policy in the task,
recorded, forwarded upstream, and its result reported to the task before it is returned: what
a real agent's call costs. A third path is a client that offers elicitation, which the gateway
may ask something mid-call (an approval, or what the upstream asks) on the call's own stream;
its figures are printed beside. A fourth path is a reference: the same calls through a proxy
that only passes them on (benchmarks/passthrough.py, served and posting upstream as the
gateway's hot path is), so what one more process on the path costs on this machine is seen
apart from Tether's own work. The paths alternate in blocks, so drift in the machine's speed
falls on all.

Target (issue 8): <= 2 ms added at the median over streamable HTTP.

    .venv/bin/python benchmarks/gateway.py [--calls 2000] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from rich.console import Console
from rich.table import Table
from service import free_port

from tether import Guard
from tether.gateway.client_auth import TaskAuth
from tether.sdk.handle import TaskHandleBase
from tether.store import Store

HERE = Path(__file__).resolve().parent
TARGET_ADDED_MS = 2.0
BLOCK = 100  # calls on one path before switching to the next
PATHS = ("direct", "gateway", "gateway_eliciting", "passthrough")
SERVED_BY = {"gateway": "gateway", "gateway_eliciting": "gateway", "passthrough": "passthrough"}
POLICY = """
@id("echo")
permit (principal, action == Action::"bench.echo", resource);
"""


def _wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process ended ({process.returncode})")
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def _never_asked(*_: object) -> types.ElicitResult:
    raise AssertionError("the benchmark's policy asks no one")


@asynccontextmanager
async def _client(
    url: str, auth: httpx2.Auth | None, *, offers_elicitation: bool = False
) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(
            read, write, elicitation_callback=_never_asked if offers_elicitation else None
        ) as session,
    ):
        await session.initialize()
        yield session


def _cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and kernel, all threads (proc(5): fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """The machine's CPU time so far, in ticks: stolen by the hypervisor, and in all (proc(5),
    the `cpu` line of /proc/stat). A run on a machine whose host takes its CPU away is slow on
    every path; the share stolen tells such a run apart."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


async def _measure(
    urls: dict[str, str], task: TaskHandleBase, calls: int, pids: dict[str, int]
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Each path's call times, and the CPU seconds each server process used over each path's
    timed calls (read around each block). The gateway's CPU per call, as a multiple of the
    upstream's (which serves every call on every path), is a steadier figure than latency on
    a shared machine whose speed drifts: it shows what a change to the gateway is worth."""
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    cpu = {path: dict.fromkeys(pids, 0.0) for path in PATHS}
    gateway = urls["gateway"]
    async with (
        _client(urls["upstream"], None) as direct,
        _client(gateway, TaskAuth(task)) as through,
        _client(gateway, TaskAuth(task), offers_elicitation=True) as asking,
        _client(urls["passthrough"], None) as passed,
    ):
        paths = {
            "direct": (direct, "echo"),
            "gateway": (through, "bench.echo"),
            "gateway_eliciting": (asking, "bench.echo"),
            "passthrough": (passed, "echo"),
        }
        deadline = time.monotonic() + 30  # the gateway sees the activation on its next poll
        while (await through.call_tool("bench.echo", {"text": "ready?"})).is_error:
            assert time.monotonic() < deadline, "the gateway never saw the policies"
            await anyio.sleep(0.05)
        for session, tool in paths.values():  # warm all: connections, caches, first use
            for _ in range(50):
                result = await session.call_tool(tool, {"text": "warm"})
                assert not result.is_error, result
        done = 0
        while done < calls:
            for name, (session, tool) in paths.items():
                before = {process: _cpu_seconds(pid) for process, pid in pids.items()}
                for i in range(BLOCK):
                    started = time.perf_counter()
                    result = await session.call_tool(tool, {"text": f"call {done + i}"})
                    times[name].append(time.perf_counter() - started)
                    assert not result.is_error, result
                for process, pid in pids.items():
                    cpu[name][process] += _cpu_seconds(pid) - before[process]
            done += BLOCK
    return times, cpu


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls on each path")
    parser.add_argument("--quick", action="store_true", help="200 calls: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    calls = 200 if args.quick else args.calls
    console = Console()
    started: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        try:
            echo_port, gateway_port, passing_port = free_port(), free_port(), free_port()
            upstream = f"http://127.0.0.1:{echo_port}/mcp"
            started.append(
                subprocess.Popen([sys.executable, str(HERE / "mcp_echo.py"), str(echo_port)])
            )
            _wait_for(upstream, started[-1])
            passing = [str(HERE / "passthrough.py"), upstream, str(passing_port)]
            started.append(subprocess.Popen([sys.executable, *passing]))
            passthrough = f"http://127.0.0.1:{passing_port}/mcp"
            _wait_for(passthrough, started[-1])
            config = Path(folder) / "gateway.yaml"
            config.write_text(f"workspace: acme\nupstreams:\n  bench:\n    url: {upstream}\n")
            guard = Guard(Store.at_home(home), shared_tasks=True)
            guard.add_workspace("acme")
            guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
            guard.add_user("acme", "alice")
            tether = str(Path(sys.executable).with_name("tether"))
            started.append(
                subprocess.Popen(
                    [
                        tether,
                        "--home",
                        str(home),
                        "gateway",
                        "serve",
                        str(config),
                        "--port",
                        str(gateway_port),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            gateway = f"http://127.0.0.1:{gateway_port}/mcp"
            _wait_for(gateway, started[-1])
            deadline = time.monotonic() + 60
            while "bench.echo" not in {t.name for t in guard.tools("acme")}:
                assert time.monotonic() < deadline, "the gateway did not import the upstream"
                time.sleep(0.1)
            guard.activate_policies("acme", {"bench.cedar": POLICY})
            guard.grant("acme", user="alice", agent="coder", tools=["bench.echo"])
            task = guard.task(
                workspace="acme", agent="coder", user="alice", request="bench", tools=["bench.echo"]
            )
            names = ("upstream", "passthrough", "gateway")  # in the order they were started
            pids = {name: process.pid for name, process in zip(names, started, strict=True)}
            urls = {"upstream": upstream, "gateway": gateway, "passthrough": passthrough}
            ticks_before = _machine_ticks()
            times, cpu = anyio.run(_measure, urls, task, calls, pids)
            stolen, ticks = (a - b for a, b in zip(_machine_ticks(), ticks_before, strict=True))
            steal_percent = 100 * stolen / max(ticks, 1)
            task.end()
            guard.close()
        finally:
            for process in reversed(started):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()

    table = Table(title=f"tools/call over streamable HTTP, {calls:,} calls each, one at a time")
    for column in ("path", "median ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    labels = {
        "direct": "direct",
        "gateway": "gateway",
        "gateway_eliciting": "gateway, client offering elicitation",
        "passthrough": "a proxy passing calls on (reference)",
    }
    figures = {}
    for name, values in times.items():
        figures[name] = {"median_ms": statistics.median(values) * 1e3, "p99_ms": _p99(values) * 1e3}
        median, p99 = figures[name]["median_ms"], figures[name]["p99_ms"]
        table.add_row(labels[name], f"{median:.2f}", f"{p99:.2f}")
    console.print(table)
    direct = figures["direct"]["median_ms"]
    added = {path: figures[path]["median_ms"] - direct for path in PATHS[1:]}
    verdict = "met" if added["gateway"] <= TARGET_ADDED_MS else "missed"
    console.print(
        f"added by the gateway at the median: {added['gateway']:.2f} ms "
        f"({figures['gateway']['median_ms'] / direct:.2f}x the direct call); "
        f"target <= {TARGET_ADDED_MS:g} ms: {verdict}"
    )
    console.print(
        f"for a client offering elicitation: {added['gateway_eliciting']:.2f} ms "
        f"({figures['gateway_eliciting']['median_ms'] / direct:.2f}x)"
    )
    console.print(
        f"a proxy that only passes calls on adds {added['passthrough']:.2f} ms: one more process "
        f"on the path, here; the gateway's own work beyond it "
        f"{added['gateway'] - added['passthrough']:.2f} ms"
    )
    upstream_cpu = sum(cpu[path]["upstream"] for path in PATHS) / (calls * len(PATHS))
    cpu_ms = {path: cpu[path][SERVED_BY[path]] / calls * 1e3 for path in PATHS[1:]}
    cpu_ms["upstream"] = upstream_cpu * 1e3
    console.print(
        f"CPU per call: gateway {cpu_ms['gateway']:.2f} ms "
        f"({cpu_ms['gateway'] / cpu_ms['upstream']:.2f}x the upstream's {cpu_ms['upstream']:.2f}"
        f" ms); for a client offering elicitation {cpu_ms['gateway_eliciting']:.2f} ms "
        f"({cpu_ms['gateway_eliciting'] / cpu_ms['upstream']:.2f}x); the proxy passing calls "
        f"on {cpu_ms['passthrough']:.2f} ms ({cpu_ms['passthrough'] / cpu_ms['upstream']:.2f}x)"
    )
    console.print(
        f"CPU time the host took from this machine (steal) meanwhile: {steal_percent:.1f}%"
    )
    if args.json:
        summary = {
            **figures,
            "added_median_ms": added["gateway"],
            "added_eliciting_median_ms": added["gateway_eliciting"],
            "added_passthrough_median_ms": added["passthrough"],
            "cpu_per_call_ms": cpu_ms,
            "steal_percent": steal_percent,
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
