"""Decision latency: Tether's full embedded pipeline against raw cedarpy, at 10/100/1,000 policies.

What is measured, per policy count (one configuration each, in a fresh temporary home):

- **tether**: `TaskHandle.authorize(tool, args)` on a `Guard.embedded(home)`: the whole pipeline
  (authenticate, workspace gate, task gate, context, Cedar on the tool's slice, and the decision
  record committed to the SQLite store before the answer).
- **cedarpy (docs style)**: `cedarpy.is_authorized` with pre-parsed `PolicySet`, `Entities` and
  `Schema` handles, string uids (`Agent::"coder"`) and the context as a dict, the way cedarpy
  documents pre-parsed use; on the whole, unsliced policy set.
- **cedarpy (fastest)**: the same, but with `{"type", "id"}` uids, the context pre-encoded as a JSON
  string and no schema: the cheapest call cedarpy offers; on the whole policy set.
- **cedarpy (selection)**: the fastest call style on only the policies Tether selects for the
  tool and the calling agent (`bundle.select(tool, agent).enforced`), with the full context, to
  show what slicing alone buys.
- **stages**: the time of each pipeline stage inside real decisions, as the pipeline itself
  reports it (`PDP.stage_timer`), in a separate pass so the latency figures carry no timing
  overhead.

All four variants decide the same requests on the same policies, with the same `Entities` handle
and the same context Tether builds (args, task, approved, time), pre-built once per request for
the raw calls. An `approval_required` answer costs Tether a second Cedar call (the same request,
approved), which the raw baselines do not make.

Each configuration generates a catalogue of 50 tools in five effect groups (read, write,
external, destructive, financial) with typed arguments (strings, an integer, a number), three
agents (kinds planner, coder, monitor) and N validated policies drawn deterministically from a
seeded `random.Random`: mostly per-tool permits and forbids with conditions on `principal.kind` and
`context.args`, about 20% forbids, a few of them `@approval("admin")` step-ups. Two workloads
differ only in their cross-cutting rules, which every call of a group or of any tool must evaluate:

- **proportional**: about 10% of the policies are scoped to an effect group and about 2% are
  unscoped, at every size (120 cross-cutting rules at 1,000 policies);
- **bounded**: the cross-cutting rules stop growing at 20 group-scoped and 5 unscoped ones (a
  policy base that grows by adding tools and per-tool rules), the rest being per-tool.

What a decision costs depends on how many policies can apply to the calling tool and agent, not on
the bundle's size; the two workloads show both sides of that.

Requests go only to tools that have policies of their own
and that the requesting task was granted, so every timed decision reaches the policy stage.

Timing is `time.perf_counter_ns()` around each single call, after a warm-up pass; the variants
are interleaved pass by pass so that drift affects them alike; median and p99 (nearest rank) are
reported in microseconds. Correctness is checked on every timed decision: Tether's effect must
agree with raw cedarpy on the whole set (allow <-> Allow; deny and approval_required <-> Deny).

Run it from the repository root:

    .venv/bin/python benchmarks/decision.py              # full run, 10,000 decisions per figure
    .venv/bin/python benchmarks/decision.py --quick      # a few hundred per figure (smoke test)
    .venv/bin/python benchmarks/decision.py --json out.json

The exit status is 0 when every decision agreed with cedarpy, 1 otherwise; a missed latency
target is reported, not turned into a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cedarpy
from rich.console import Console
from rich.table import Table

from tether.model import Effect, Stage
from tether.sdk import Guard, TaskHandle

WORKSPACE = "bench"
GROUPS = ("read", "write", "external", "destructive", "financial")
TOOLS_PER_GROUP = 10
AGENTS = ("planner", "coder", "monitor")  # each agent's kind is its name
POLICY_COUNTS = (10, 100, 1000)
WORKLOADS = ("proportional", "bounded")
SEED = 20240601
DISTINCT_REQUESTS = 250
TASK_TTL = 24 * 3600.0

# Issue targets.
TARGET_RATIO_AT_10 = 1.5
TARGET_MEDIAN_US_AT_1000 = 100.0

STAGES = (
    Stage.AUTHENTICATE,
    Stage.WORKSPACE,
    Stage.TASK,
    Stage.CONTEXT,
    Stage.POLICY,
    Stage.APPROVAL,
    Stage.RECORD,
)

# Each group's tools take a group-specific string argument besides the common ones.
EXTRA_ARG = {
    "read": "path",
    "write": "path",
    "external": "recipient",
    "destructive": "branch",
    "financial": "customer",
}
# What policies compare each string argument with (`like` when there is a wildcard), and the
# values requests draw from.
STRING_PATTERNS = {
    "path": ["/repo/*", "/repo/src/*", "/tmp/*", "/etc/*", "*.env"],
    "recipient": ["*@acme.com", "*@partner.io", "ops@*", "*.evil.io"],
    "branch": ["feature/*", "fix/*", "main", "release/*"],
    "customer": ["cus_1*", "cus_*", "acct_*"],
    "target": ["prod*", "staging", "dev*", "*-eu"],
}
STRING_VALUES = {
    "path": ["/repo/src/app.py", "/repo/docs/guide.md", "/tmp/scratch.txt", "/etc/passwd", ".env"],
    "recipient": ["bob@acme.com", "eve@partner.io", "ops@acme.com", "x@mail.evil.io"],
    "branch": ["feature/login", "fix/parser", "main", "release/1.2"],
    "customer": ["cus_123", "cus_987", "acct_42"],
    "target": ["prod-eu", "prod-us", "staging", "dev", "dev-eu"],
}
AMOUNTS = [0, 5, 12.5, 99.99, 100, 250, 999.5, 1200.75, 5000]


# -- the workspace ------------------------------------------------------------------------------


def tool_names() -> list[tuple[str, str]]:
    """(tool, effect group) for the 50 tools of the catalogue."""
    return [(f"{g}_tool_{i:02d}", g) for g in GROUPS for i in range(TOOLS_PER_GROUP)]


def args_schema(group: str) -> dict[str, Any]:
    extra = EXTRA_ARG[group]
    return {
        "type": "object",
        "properties": {
            extra: {"type": "string"},
            "target": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "amount": {"type": "number", "minimum": 0},
        },
        "required": [extra, "target", "count", "amount"],
    }


def string_condition(rng: random.Random, arg: str) -> str:
    pattern = rng.choice(STRING_PATTERNS[arg])
    if "*" in pattern:
        return f'context.args.{arg} like "{pattern}"'
    return f'context.args.{arg} == "{pattern}"'


def arg_condition(rng: random.Random, extra: str | None) -> str:
    """One condition on the arguments every tool in scope has (`extra` if the scope shares it)."""
    roll = rng.random()
    if extra is not None and roll < 0.4:
        return string_condition(rng, extra)
    if roll < 0.6:
        return string_condition(rng, "target")
    if roll < 0.85:
        op = rng.choice(["<", "<=", ">", ">="])
        return f"context.args.count {op} {rng.randrange(5, 100, 5)}"
    method = rng.choice(["lessThan", "greaterThan"])
    return f'context.args.amount.{method}(decimal("{rng.choice([10, 100, 500, 1000])}.0"))'


def kind_condition(rng: random.Random) -> str:
    kind = rng.choice(AGENTS)
    return f'principal.kind {"==" if rng.random() < 0.8 else "!="} "{kind}"'


def generate_policies(n: int, seed: int, workload: str) -> str:
    """`n` policies over the catalogue; every one validates against its schema."""
    rng = random.Random(seed)
    tools = tool_names()
    out: list[str] = []
    unscoped, grouped = min(5, round(0.02 * n)), min(20, round(0.10 * n))
    for i in range(n):
        scope_roll, effect_roll = rng.random(), rng.random()
        if workload == "bounded":  # the first policies are the cross-cutting ones
            scope_roll = 0.0 if i < unscoped else 0.05 if i < unscoped + grouped else 0.5
        if scope_roll < 0.02:
            scope, extra, label = "action", None, "any"
        elif scope_roll < 0.12:
            group = rng.choice(GROUPS)
            scope, extra, label = f'action in Action::"{group}"', EXTRA_ARG[group], group
        else:
            tool, group = rng.choice(tools)
            if rng.random() < 0.25:  # a list of tools of the same group
                peers = [t for t, g in tools if g == group and t != tool]
                other = rng.choice(peers)
                scope = f'action in [Action::"{tool}", Action::"{other}"]'
            else:
                scope = f'action == Action::"{tool}"'
            extra, label = EXTRA_ARG[group], tool
        if effect_roll < 0.03:
            condition = f'principal.kind == "{rng.choice(AGENTS)}" && {arg_condition(rng, extra)}'
            out.append(
                f'@id("p{i:04d}-approval-{label}")\n'
                f'@approval("admin")\n'
                f'@reason("generated step-up {i}")\n'
                f"forbid (principal, {scope}, resource)\n"
                f"when {{ {condition} }}\n"
                f"unless {{ context.approved }};\n"
            )
            continue
        effect = "forbid" if effect_roll < 0.20 else "permit"
        if effect == "forbid":  # narrow: one kind of agent, two conditions on the arguments
            kind = f'principal.kind == "{rng.choice(AGENTS)}"'
            conditions = [kind, arg_condition(rng, extra), arg_condition(rng, extra)]
        else:
            conditions = [arg_condition(rng, extra)]
            if rng.random() < 0.6:
                conditions.insert(0, kind_condition(rng))
            if rng.random() < 0.3:
                conditions.append(arg_condition(rng, extra))
        out.append(
            f'@id("p{i:04d}-{effect}-{label}")\n'
            f'@reason("generated {effect} {i}")\n'
            f"{effect} (principal, {scope}, resource)\n"
            f"when {{ {' && '.join(conditions)} }};\n"
        )
    return "\n".join(out)


def request_args(rng: random.Random, group: str) -> dict[str, Any]:
    extra = EXTRA_ARG[group]
    return {
        extra: rng.choice(STRING_VALUES[extra]),
        "target": rng.choice(STRING_VALUES["target"]),
        "count": rng.randrange(0, 101),
        "amount": rng.choice(AMOUNTS),
    }


# -- statistics --------------------------------------------------------------------------------


@dataclass
class Samples:
    ns: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.ns)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        return {
            "n": len(ordered),
            "median_us": statistics.median(ordered) / 1000,
            "p99_us": p99 / 1000,
            "mean_us": statistics.fmean(ordered) / 1000,
        }


# -- one configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    handle: TaskHandle
    agent: str
    tool: str
    args: dict[str, Any]
    docs: dict[str, Any]  # cedarpy request, documented style (string uids, dict context)
    fast: dict[str, Any]  # cedarpy request, fastest style (dict uids, JSON string context)
    expected: bool  # raw cedarpy on the whole set: Allow?


def setup(guard: Guard, n_policies: int, seed: int, workload: str) -> tuple[Any, list[str]]:
    guard.add_workspace(WORKSPACE)
    for agent in AGENTS:
        guard.register_agent(WORKSPACE, agent, kind=agent, owner="bench@example.com")
    guard.add_user(WORKSPACE, "alice", ["admin"])
    for tool, group in tool_names():
        guard.register_tool(WORKSPACE, tool, effects=[group], args_schema=args_schema(group))
    guard.activate_policies(WORKSPACE, {"gen.cedar": generate_policies(n_policies, seed, workload)})
    # alice delegates every tool to every agent, for tasks as long as the benchmark's; each task
    # make_requests starts asks for just the tools its requests use.
    tools = [tool for tool, _ in tool_names()]
    for agent in AGENTS:
        guard.grant(WORKSPACE, user="alice", agent=agent, tools=tools, max_ttl=TASK_TTL)
    view = guard._views.get(WORKSPACE)
    assert view is not None and view.bundle is not None
    assert len(view.bundle.policies) == n_policies
    own = sorted(
        {t for p in view.bundle.policies.values() for t in (p.actions or ()) if t not in GROUPS}
    )
    return view, own


def make_requests(guard: Guard, view: Any, tools: Sequence[str], seed: int) -> list[Request]:
    """Deterministic requests, each in a task (one per agent and effect group) that grants it."""
    rng = random.Random(seed + 1)
    groups = dict(tool_names())
    drawn = [
        (rng.choice(AGENTS), tool, request_args(rng, groups[tool]))
        for tool in (rng.choice(tools) for _ in range(DISTINCT_REQUESTS))
    ]
    grants: dict[tuple[str, str], set[str]] = {}
    for agent, tool, _ in drawn:
        grants.setdefault((agent, groups[tool]), set()).add(tool)
    handles = {
        key: guard.task(
            workspace=WORKSPACE,
            agent=key[0],
            user="alice",
            request=f"benchmark: {key[0]} uses {key[1]} tools",
            tools=sorted(granted),
            ttl=TASK_TTL,
        )
        for key, granted in sorted(grants.items())
    }
    whole = view.bundle.whole()
    requests = []
    for agent, tool, args in drawn:
        handle = handles[(agent, groups[tool])]
        # The full context Tether built for this call is in its record: the raw baselines
        # decide the very same request.
        decision = handle.authorize(tool, args)
        if decision.reasons and decision.reasons[0].stage is not Stage.POLICY:
            raise RuntimeError(f"benchmark request stopped before the policy stage: {decision}")
        (stored,) = [d for d in guard.store.decisions(limit=1) if d.id == decision.decision_id]
        assert stored.context is not None
        context = json.loads(stored.context)
        fast = {
            "principal": {"type": "Agent", "id": agent},
            "action": {"type": "Action", "id": tool},
            "resource": {"type": "Workspace", "id": WORKSPACE},
            "context": stored.context,
        }
        docs = {
            "principal": f'Agent::"{agent}"',
            "action": f'Action::"{tool}"',
            "resource": f'Workspace::"{WORKSPACE}"',
            "context": context,
        }
        result = cedarpy.is_authorized(fast, whole, view.entities)
        assert not result.diagnostics.errors, result.diagnostics.errors
        expected = result.decision is cedarpy.Decision.Allow
        requests.append(Request(handle, agent, tool, args, docs, fast, expected))
    return requests


def run_config(
    workload: str, n_policies: int, seed: int, rounds: int, console: Console
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as home:
        guard = Guard.embedded(home=Path(home))
        try:
            started = time.perf_counter()
            view, tools = setup(guard, n_policies, seed, workload)
            setup_s = time.perf_counter() - started
            requests = make_requests(guard, view, tools, seed)
            result = measure(guard, view, requests, rounds)
        finally:
            guard.close()
    bundle = view.bundle
    agents = view.agents
    slice_sizes = [
        len(bundle.select(r.tool, agents[r.agent]).enforced.to_pst().static_policies)
        for r in requests
    ]
    result.update(
        workload=workload,
        policies=n_policies,
        setup_seconds=round(setup_s, 2),
        tools_with_policies=len(tools),
        distinct_requests=len(requests),
        tasks=len({r.handle.id for r in requests}),
        slice_policies_median=statistics.median(slice_sizes),
        slice_policies_max=max(slice_sizes),
    )
    console.print(
        f"  {workload:>12} {n_policies:>5} policies: setup {setup_s:.1f} s, "
        f"{len(tools)} tools with policies, "
        f"{result['tasks']} tasks, {result['timed_per_variant']} timed decisions per variant"
    )
    return result


def measure(guard: Guard, view: Any, requests: list[Request], rounds: int) -> dict[str, Any]:
    bundle, entities, schema = view.bundle, view.entities, view.bundle.schema
    whole = bundle.whole()
    slices = {
        (r.tool, r.agent): bundle.select(r.tool, view.agents[r.agent]).enforced for r in requests
    }
    clock = time.perf_counter_ns
    authorized = cedarpy.is_authorized
    allow = cedarpy.Decision.Allow
    samples = {name: Samples() for name in ("tether", "docs", "fast", "slice")}
    effects: Counter[str] = Counter()
    disagree = {"tether_vs_whole": 0, "docs_vs_fast": 0, "slice_vs_whole": 0}

    def tether_pass(timed: bool) -> None:
        out = samples["tether"].ns
        for r in requests:
            t0 = clock()
            decision = r.handle.authorize(r.tool, r.args)
            t1 = clock()
            if timed:
                out.append(t1 - t0)
                effects[decision.effect.value] += 1
            if (decision.effect is Effect.ALLOW) != r.expected:
                disagree["tether_vs_whole"] += 1

    def docs_pass(timed: bool) -> None:
        out = samples["docs"].ns
        for r in requests:
            t0 = clock()
            result = authorized(r.docs, whole, entities, schema)
            t1 = clock()
            if timed:
                out.append(t1 - t0)
            if (result.decision is allow) != r.expected:
                disagree["docs_vs_fast"] += 1

    def fast_pass(timed: bool) -> None:
        out = samples["fast"].ns
        for r in requests:
            t0 = clock()
            authorized(r.fast, whole, entities)
            t1 = clock()
            if timed:
                out.append(t1 - t0)

    def slice_pass(timed: bool) -> None:
        out = samples["slice"].ns
        for r in requests:
            policy_set = slices[r.tool, r.agent]
            t0 = clock()
            result = authorized(r.fast, policy_set, entities)
            t1 = clock()
            if timed:
                out.append(t1 - t0)
            if (result.decision is allow) != r.expected:
                disagree["slice_vs_whole"] += 1

    passes = (tether_pass, docs_pass, fast_pass, slice_pass)
    for run in passes:  # warm-up: one untimed pass each
        run(False)
    for _ in range(rounds):
        for run in passes:
            run(True)

    stages = measure_stages(guard, requests, rounds)
    figures = {name: s.summary() for name, s in samples.items()}
    return {
        "timed_per_variant": len(samples["tether"].ns),
        "latency": figures,
        "ratios": {
            base: figures["tether"]["median_us"] / figures[base]["median_us"]
            for base in ("docs", "fast", "slice")
        },
        "stages": stages,
        "effects": dict(effects),
        "disagreements": disagree,
    }


def measure_stages(guard: Guard, requests: list[Request], rounds: int) -> dict[str, Any]:
    """Each stage's time inside real decisions, as the pipeline reports it (PDP.stage_timer)."""
    samples = {stage.value: Samples() for stage in STAGES}

    def collect(stage: Stage, ns: int) -> None:
        samples[stage.value].ns.append(ns)

    guard._pdp.stage_timer = collect
    try:
        for _ in range(rounds):
            for r in requests:
                r.handle.authorize(r.tool, r.args)
    finally:
        guard._pdp.stage_timer = None
    return {stage: s.summary() for stage, s in samples.items()}


VARIANTS = (
    ("tether", "tether task.authorize (full pipeline, committed)"),
    ("docs", "cedarpy (docs style), whole set"),
    ("fast", "cedarpy (fastest), whole set"),
    ("slice", "cedarpy (fastest), Tether's selection"),
)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_count = {r["policies"]: r for r in results}
    out = []
    if 10 in by_count:
        r = by_count[10]
        for base, label in (("docs", "docs style"), ("fast", "fastest")):
            ratio = r["ratios"][base]
            out.append(
                {
                    "target": f"median <= {TARGET_RATIO_AT_10}x raw cedarpy ({label}) at 10 "
                    "policies",
                    "measured": f"{ratio:.2f}x",
                    "value": ratio,
                    "passed": ratio <= TARGET_RATIO_AT_10,
                }
            )
    if 1000 in by_count:
        median = by_count[1000]["latency"]["tether"]["median_us"]
        out.append(
            {
                "target": f"median <= {TARGET_MEDIAN_US_AT_1000:.0f} us at 1,000 policies",
                "measured": f"{median:.1f} us",
                "value": median,
                "passed": median <= TARGET_MEDIAN_US_AT_1000,
            }
        )
    return out


def report(console: Console, results: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    counts = [r["policies"] for r in results]

    latency = Table(title="Decision latency, microseconds (median / p99)", title_justify="left")
    latency.add_column("variant")
    for n in counts:
        latency.add_column(f"{n:,} policies", justify="right")
    for key, label in VARIANTS:
        latency.add_row(
            label,
            *(
                f"{r['latency'][key]['median_us']:8.1f} / {r['latency'][key]['p99_us']:8.1f}"
                for r in results
            ),
        )
    console.print(latency)

    ratios = Table(title="Tether median / raw cedarpy median", title_justify="left")
    ratios.add_column("baseline")
    for n in counts:
        ratios.add_column(f"{n:,} policies", justify="right")
    for key, label in VARIANTS[1:]:
        ratios.add_row(label, *(f"{r['ratios'][key]:.2f}x" for r in results))
    console.print(ratios)

    stages = Table(
        title="Stage medians / p99, microseconds, timed inside real decisions",
        title_justify="left",
        caption="record includes answering, the commit and updating the task's state",
        caption_justify="left",
    )
    stages.add_column("stage")
    for n in counts:
        stages.add_column(f"{n:,} policies", justify="right")
    for stage in STAGES:
        stages.add_row(
            stage.value,
            *(
                f"{r['stages'][stage.value]['median_us']:6.1f} / "
                f"{r['stages'][stage.value]['p99_us']:6.1f}"
                for r in results
            ),
        )
    stages.add_row(
        "sum of stage medians",
        *(f"{sum(r['stages'][s.value]['median_us'] for s in STAGES):6.1f}" for r in results),
    )
    stages.add_row(
        "task.authorize median",
        *(f"{r['latency']['tether']['median_us']:6.1f}" for r in results),
    )
    console.print(stages)

    facts = Table(title="Workload and correctness", title_justify="left")
    facts.add_column("")
    for n in counts:
        facts.add_column(f"{n:,} policies", justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("timed decisions per variant", lambda r: f"{r['timed_per_variant']:,}"),
        ("distinct requests / tasks", lambda r: f"{r['distinct_requests']} / {r['tasks']}"),
        ("tools with own policies", lambda r: str(r["tools_with_policies"])),
        (
            "policies selected per call (median / max)",
            lambda r: f"{r['slice_policies_median']:g} / {r['slice_policies_max']}",
        ),
        (
            "tether effects (allow/deny/approval)",
            lambda r: "/".join(
                str(r["effects"].get(e.value, 0))
                for e in (Effect.ALLOW, Effect.DENY, Effect.APPROVAL_REQUIRED)
            ),
        ),
        ("disagreements tether vs cedarpy", lambda r: str(r["disagreements"]["tether_vs_whole"])),
        ("disagreements docs style vs fastest", lambda r: str(r["disagreements"]["docs_vs_fast"])),
        ("disagreements slice vs whole", lambda r: str(r["disagreements"]["slice_vs_whole"])),
        ("setup (catalogue + activation), s", lambda r: f"{r['setup_seconds']:.1f}"),
    ]
    for label, cell in rows:
        facts.add_row(label, *(cell(r) for r in results))
    console.print(facts)

    goals = Table(title="Targets (from the issue)", title_justify="left")
    goals.add_column("target")
    goals.add_column("measured", justify="right")
    goals.add_column("result")
    for check in checks:
        verdict = "[green]PASS[/green]" if check["passed"] else "[red]MISS[/red]"
        goals.add_row(check["target"], check["measured"], verdict)
    console.print(goals)


def timer_overhead_ns() -> float:
    """The median cost of the two perf_counter_ns calls around nothing (included in figures)."""
    clock = time.perf_counter_ns
    deltas = []
    for _ in range(20_000):
        t0 = clock()
        deltas.append(clock() - t0)
    return statistics.median(deltas)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cedarpy": version("cedarpy"),
        "tether": version("tether"),
        "timer_overhead_ns": timer_overhead_ns(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write all figures here")
    parser.add_argument("--seed", type=int, default=SEED, help="policy and request seed")
    parser.add_argument(
        "--workload",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="policy workloads to run (default: both)",
    )
    parser.add_argument(
        "--policies",
        type=int,
        nargs="+",
        default=list(POLICY_COUNTS),
        metavar="N",
        help="policy counts to run (default: 10 100 1000)",
    )
    options = parser.parse_args(argv)
    rounds = 2 if options.quick else 40  # timed passes over the 250 distinct requests

    console = Console(width=None if sys.stdout.isatty() else 120)
    env = environment()
    console.print(
        f"Tether decision benchmark: Python {env['python']}, cedarpy {env['cedarpy']}, "
        f"{env['cpus']} CPUs, {env['platform']}; timer overhead {env['timer_overhead_ns']:.0f} ns"
        + (" [quick]" if options.quick else "")
    )
    results = [
        run_config(workload, n, options.seed, rounds, console)
        for workload in options.workload
        for n in sorted(set(options.policies))
    ]
    checks = []
    for workload in options.workload:
        of_workload = [r for r in results if r["workload"] == workload]
        workload_checks = [dict(c, workload=workload) for c in targets(of_workload)]
        checks.extend(workload_checks)
        console.print()
        console.rule(f"workload: {workload}")
        report(console, of_workload, workload_checks)

    if options.json:
        payload = {
            "environment": env,
            "settings": {
                "quick": options.quick,
                "seed": options.seed,
                "rounds": rounds,
                "tools": len(tool_names()),
                "agents": list(AGENTS),
            },
            "results": results,
            "targets": checks,
        }
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"figures written to {options.json}")

    failures = sum(sum(r["disagreements"].values()) for r in results)
    if failures:
        console.print(f"[red]{failures} decisions disagreed with cedarpy[/red]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
