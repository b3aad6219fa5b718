"""The load run's report (benchmarks/load.py): its tables, the Markdown summary and the plots."""

from __future__ import annotations

import os
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

KEPT_UP = 0.95  # share of the offered calls served within the step, at or under the knee
P99_MS = 25.0  # the knee's p99 (issue 7's latency target)


@dataclass
class Step:
    offered: float
    served: float  # calls a second answered within the step
    p50_ms: float
    p99_ms: float
    answered: int
    not_200: int
    missed: int  # due, but not answered by the time the step was given up
    client_late_ms: float  # p99 of how late the client queued calls for a connection


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
    """Whether the service kept up with the step's offered rate (the knee's rule)."""
    return step.served >= KEPT_UP * step.offered and step.p99_ms <= P99_MS and not step.missed


COLUMNS = ("offered/s", "served/s", "p50 ms", "p99 ms", "answered", "not 200", "missed",
           "client late p99 ms")  # fmt: skip


def cells(s: Step) -> list[str]:
    """A step's row, in COLUMNS' order."""
    return [
        f"{s.offered:,.0f}", f"{s.served:,.0f}", f"{s.p50_ms:.1f}", f"{s.p99_ms:.1f}",
        f"{s.answered:,}", f"{s.not_200:,}", f"{s.missed:,}", f"{s.client_late_ms:.1f}",
    ]  # fmt: skip


def print_run(console: Console, r: Run) -> None:
    """One set-up's steps as a table, the knee and memory under it."""
    table = Table(title=f"tether serve, {r.name}, commit durability")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for s in r.steps:
        first, *rest = cells(s)
        table.add_row(first + ("" if kept_up(s) else " [red]x[/]"), *rest)
    console.print(table)
    knee = r.knee
    console.print(f"knee: {f'{knee.offered:,.0f}/s' if knee else 'below the first step'}; "
                  f"memory {memory_line(r)}")  # fmt: skip


def memory_line(r: Run) -> str:
    """Memory at the start, at most, and at the end of a set-up."""
    if not r.memory:
        return "not sampled"
    values = [m for _, m in r.memory]
    return f"{values[0]:.0f} MiB at start, {max(values):.0f} MiB at most, {values[-1]:.0f} at end"


def markdown(runs: list[Run], args: Namespace, command: str) -> str:
    """The summary beside the plots: each set-up's knee and memory, then every step."""
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
        lines += ["", f"## {r.name}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---:|" * len(COLUMNS)]  # fmt: skip
        lines += ["| " + " | ".join(cells(s)) + " |" for s in r.steps]
    lines += ["", "![served against offered](load-throughput.png)", "",
              "![latency against offered](load-latency.png)", "",
              "![memory over time](load-memory.png)", ""]  # fmt: skip
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> None:
    """Served against offered, latency against offered, memory over time: one PNG each."""
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
