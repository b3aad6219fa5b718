"""Task memory under load: does a task's 1,000th call cost what its 10th did?

What is measured, in one run, on the embedded Guard with every decision committed:

- **authorize + report** (the baseline pack in force, but for its task limits, which would stop
  a 1,000-call task): `task.authorize(tool, args)` then, when allowed, `task.report(decision,
  output)` with a 20 KB output (text with addresses, URLs and numbers, so the detectors and the
  provenance index have work), for tasks that already made 10, 100 and 1,000 calls. Each length
  runs on several fresh tasks primed to that length, so every timed call is at that length
  (plus at most `PER_TASK`).
- **context additions**: what chained actions add to building a decision's context at 100 prior
  calls — the task's counters and labels, the provenance of each sink argument and the risk
  signals — timed around exactly those calls; and the whole context stage, as the pipeline reports
  it, beside the decision core (argument checks and conversion) timed the same way.

Targets (issue 3): the 1,000-call median within 1.5x of the 10-call median, and the additions at
most 30 us at the median at 100 calls.

    .venv/bin/python benchmarks/session.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tether import Guard
from tether.model import Stage
from tether.policy import read_policy_dir
from tether.session.risk import assess

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = (10, 100, 1000)
OUTPUT_BYTES = 20_000
PER_TASK = 20
TASK_TTL = 24 * 3600.0
TARGET_FLAT = 1.5
TARGET_ADDED_US = 30.0
STRING = {"type": "string"}
TOOLS: dict[str, dict[str, Any]] = {
    "read_email": {
        "effects": ["read"],
        "output": "untrusted",
        "args_schema": {"type": "object", "properties": {"folder": STRING}},
    },
    "read_file": {
        "effects": ["read"],
        "args_schema": {"type": "object", "properties": {"path": STRING}, "required": ["path"]},
    },
    "send_email": {
        "effects": ["external"],
        "sinks": ["to"],
        "args_schema": {
            "type": "object",
            "properties": {"to": STRING, "body": STRING},
            "required": ["to"],
        },
    },
    "write_file": {
        "effects": ["write"],
        "sinks": ["path"],
        "args_schema": {
            "type": "object",
            "properties": {"path": STRING, "content": STRING},
            "required": ["path"],
        },
    },
}
CALLS = [
    ("read_email", {"folder": "inbox"}),
    ("read_file", {"path": "/repo/src/app.py"}),
    ("send_email", {"to": "bob@acme.com", "body": "summary"}),
    ("write_file", {"path": "/repo/notes.md", "content": "x"}),
]
WORDS = [
    "the",
    "invoice",
    "report",
    "customer",
    "order",
    "shipped",
    "delivered",
    "meeting",
    "agenda",
    "draft",
    "review",
    "budget",
    "quarter",
    "revenue",
    "forecast",
    "account",
    "team",
    "project",
    "deadline",
    "update",
    "status",
    "issue",
    "fixed",
    "merged",
]


def outputs(rng: random.Random, count: int) -> list[str]:
    """Varied 20 KB texts with the kinds of values tools return."""
    made = []
    for i in range(count):
        parts: list[str] = []
        size = 0
        while size < OUTPUT_BYTES:
            roll = rng.random()
            if roll < 0.02:
                word = f"user{rng.randrange(10_000)}@example{i % 7}.com"
            elif roll < 0.03:
                word = f"https://docs.example.com/{rng.randrange(1000)}/page"
            elif roll < 0.05:
                word = str(rng.randrange(10**6))
            else:
                word = rng.choice(WORDS)
            parts.append(word)
            size += len(word) + 1
        made.append(" ".join(parts)[:OUTPUT_BYTES])
    return made


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def setup(guard: Guard) -> None:
    guard.add_workspace("acme")
    guard.register_agent("acme", "assistant", kind="assistant", owner="bench@example.com")
    for name, spec in TOOLS.items():
        guard.register_tool("acme", name, **spec)
    permit = {"permit.cedar": '@id("permit") permit (principal, action, resource);'}
    # The baseline pack without its task limits: at 1,000 calls they would deny most calls,
    # and a denied call reports nothing, which would hide the cost being measured.
    baseline = read_policy_dir(ROOT / "policies" / "baseline")
    baseline = {name: text for name, text in baseline.items() if not name.startswith("limit-")}
    guard.activate_policies("acme", {**baseline, **permit})
    guard.add_user("acme", "alice")
    guard.grant("acme", user="alice", agent="assistant", tools=list(TOOLS), max_ttl=TASK_TTL)


def step(task: Any, i: int, pool: list[str]) -> None:
    tool, args = CALLS[i % len(CALLS)]
    decision = task.authorize(tool, args)
    if decision.allowed:
        task.report(decision, pool[i % len(pool)])


def new_task(guard: Guard) -> Any:
    return guard.task(
        workspace="acme",
        agent="assistant",
        user="alice",
        request="Summarise my inbox and the repo notes for bob@acme.com",
        tools=list(TOOLS),
        ttl=TASK_TTL,
    )


def measure_lengths(guard: Guard, pool: list[str], tasks_per_length: int) -> dict[int, list[float]]:
    timings: dict[int, list[float]] = {}
    for length in LENGTHS:
        samples: list[float] = []
        for _ in range(tasks_per_length):
            with new_task(guard) as task:
                for i in range(length):
                    step(task, i, pool)
                for i in range(length, length + PER_TASK):
                    started = time.perf_counter_ns()
                    step(task, i, pool)
                    samples.append((time.perf_counter_ns() - started) / 1000)
        timings[length] = samples
    return timings


def measure_context(guard: Guard, pool: list[str], rounds: int) -> dict[str, list[float]]:
    """At 100 prior calls: the chained-action additions, the decision core's argument work, and
    the whole context stage as the pipeline reports it."""
    view = guard._views.get("acme")
    assert view is not None
    agent_activity = guard._pdp._activity
    stage: list[float] = []
    guard._pdp.stage_timer = lambda s, ns: stage.append(ns / 1000) if s is Stage.CONTEXT else None
    added: list[float] = []
    core: list[float] = []
    clock = time.perf_counter_ns
    try:
        with new_task(guard) as task:
            for i in range(100):
                step(task, i, pool)
            state = task.state
            for r in range(rounds):
                tool_name, args = CALLS[r % len(CALLS)]
                tool = view.catalogue.get(tool_name)
                assert tool is not None
                t0 = clock()
                tool.cedar_args(args)
                t1 = clock()
                state.context(tool_name, view.catalogue.effects)
                state.sources(args, tool.spec.sinks)
                activity = agent_activity.of("acme", "assistant", time.time())
                assess(
                    task=state, activity=activity, tool=tool_name, now=time.time(), hours=view.hours
                )
                t2 = clock()
                core.append((t1 - t0) / 1000)
                added.append((t2 - t1) / 1000)
                task.authorize(tool_name, args)  # the whole stage, timed by the pipeline
    finally:
        guard._pdp.stage_timer = None
    return {"core": core, "added": added, "stage": stage}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_us": statistics.median(values),
        "p99_us": percentile(values, 0.99),
        "n": len(values),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds (smoke test)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures here")
    options = parser.parse_args(argv)
    tasks_per_length, rounds = (1, 200) if options.quick else (5, 3000)
    console = Console(width=None if sys.stdout.isatty() else 110)
    pool = outputs(random.Random(7), 64)
    with tempfile.TemporaryDirectory(prefix="tether-session-") as home:
        guard = Guard.embedded(home=home)
        try:
            setup(guard)
            lengths = measure_lengths(guard, pool, tasks_per_length)
            context = measure_context(guard, pool, rounds)
        finally:
            guard.close()

    figures = {
        "authorize_and_report": {str(n): summary(v) for n, v in lengths.items()},
        "context": {name: summary(v) for name, v in context.items()},
    }
    table = Table(title="authorize + report (20 KB outputs), microseconds", title_justify="left")
    for column in ("prior calls", "median", "p99", "timed calls"):
        table.add_column(column, justify="right")
    for n in LENGTHS:
        s = figures["authorize_and_report"][str(n)]
        table.add_row(f"{n:,}", f"{s['median_us']:.1f}", f"{s['p99_us']:.1f}", str(s["n"]))
    console.print(table)

    parts = Table(
        title="building the context at 100 prior calls, microseconds", title_justify="left"
    )
    for column in ("part", "median", "p99"):
        parts.add_column(column, justify="right" if column != "part" else "left")
    labels: list[tuple[str, str]] = [
        ("core", "decision core: argument conversion"),
        ("added", "chained actions: counters, labels, provenance, risk"),
        ("stage", "whole context stage, in the pipeline"),
    ]
    for key, label in labels:
        s = figures["context"][key]
        parts.add_row(label, f"{s['median_us']:.1f}", f"{s['p99_us']:.1f}")
    console.print(parts)

    flat = (
        figures["authorize_and_report"]["1000"]["median_us"]
        / figures["authorize_and_report"]["10"]["median_us"]
    )
    added = figures["context"]["added"]["median_us"]
    checks: list[tuple[str, str, bool]] = [
        (
            f"1,000-call median <= {TARGET_FLAT}x the 10-call median",
            f"{flat:.2f}x",
            flat <= TARGET_FLAT,
        ),
        (
            f"context additions <= {TARGET_ADDED_US:.0f} us median at 100 calls",
            f"{added:.1f} us",
            added <= TARGET_ADDED_US,
        ),
    ]
    goals = Table(title="Targets (issue 3)", title_justify="left")
    for column in ("target", "measured", "result"):
        goals.add_column(column)
    for target, measured, passed in checks:
        goals.add_row(target, measured, "PASS" if passed else "MISS")
    console.print(goals)
    figures["targets"] = [{"target": t, "measured": m, "passed": p} for t, m, p in checks]
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
