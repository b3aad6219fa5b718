"""Tether, with everything on: an embedded Guard on a fresh SQLite store, each decision's
record committed (hash-chained) before the answer (`commit` durability), the task's state kept
(its labels ratchet when the secret's output is reported), the task token checked on every
call. The scenario's rules are Cedar policies (../policies.cedar) over a catalogue."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scenario  # noqa: E402
from scenario import SECRET, Call  # noqa: E402

from tether import Guard  # noqa: E402
from tether.model import Durability, Effect  # noqa: E402

STRING = {"type": "string"}
SCENARIO_POLICIES = 7
ASKED_DURABILITY = (
    sys.argv[sys.argv.index("--durability") + 1] if "--durability" in sys.argv else "commit"
)
TOOLS: dict[str, dict[str, Any]] = {
    "read_file": {"effects": ["read"], "args": {"path": STRING}},
    "send_email": {
        "effects": ["external"],
        "sinks": ["to"],
        "args": {"to": STRING, "subject": STRING, "body": STRING},
    },
    "delete_branch": {"effects": ["destructive"], "args": {"branch": STRING}},
    "http_post": {
        "effects": ["external"],
        "sinks": ["url"],
        "args": {"url": STRING, "body": STRING},
    },
    "read_secret": {"effects": ["secret_access"], "labels": ["secret"], "args": {"name": STRING}},
}


def build(home: Path, extra_policies: dict[str, str] | None, durability: Durability) -> Guard:
    guard = Guard.embedded(home=home, durability=durability)
    for workspace in ("acme", "globex"):
        guard.add_workspace(workspace)
        guard.add_user(workspace, "alice", roles=["approver"])
    for agent in ("coder", "intern"):
        guard.register_agent("acme", agent, kind=agent, owner="alice@acme.com")
    for name, spec in TOOLS.items():
        guard.register_tool(
            "acme",
            name,
            effects=spec["effects"],
            sinks=spec.get("sinks", ()),
            labels=spec.get("labels", ()),
            args_schema={"type": "object", "properties": spec["args"], "required": [*spec["args"]]},
        )
    policies = {"scenario.cedar": (HERE.parent / "policies.cedar").read_text()}
    guard.activate_policies("acme", {**policies, **(extra_policies or {})})
    guard.grant("acme", user="alice", agent="coder", tools=list(TOOLS))
    guard.grant("acme", user="alice", agent="intern", tools=["read_file"])
    return guard


class Task:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.coder = guard.task(
            workspace="acme", agent="coder", user="alice", request="fix the build",
            tools=list(TOOLS),
        )  # fmt: skip
        self.intern = guard.task(
            workspace="acme", agent="intern", user="alice", request="read", tools=["read_file"]
        )
        self.last: Any = None

    def decide(self, call: Call) -> str:
        handle = self.intern if call.agent == "intern" else self.coder
        if call.workspace != "acme":  # the coder's task, aimed at another workspace
            self.last = self.guard.authorize(
                handle.id, call.tool, call.args, workspace=call.workspace
            )
        else:
            self.last = handle.authorize(call.tool, call.args)
        return str(self.last.effect.value)

    def after(self, call: Call, effect: str) -> None:
        if call.tool == "read_secret" and self.last.effect is Effect.ALLOW:
            self.coder.report(self.last, {"key": SECRET})
        if call is scenario.TASK[-1]:
            self.coder.end()
            self.intern.end()


class Engine:
    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="tether-peers-")
        more = max(0, scenario.option("--policies", 0) - SCENARIO_POLICIES)
        extra = {"filler.cedar": scenario.filler(more)} if more else None
        durability = Durability(ASKED_DURABILITY)
        self.guard = build(Path(self.folder.name) / "home", extra, durability)

    def new_task(self) -> Task:
        return Task(self.guard)


ABOUT = {
    "engine": "tether",
    "setup": "full pipeline: task token, session state, Cedar, durable hash-chained record",
    "native": ["R1", "R2", "R3", "R4", "wrong workspace", "wrong agent", "unknown tool"],
    "glue": [],
}


def long_tasks(length: int, tasks: int) -> dict[str, Any]:
    """Tasks of `length` allowed calls each: does a decision cost more as its task's history
    grows? Every call timed; also the median over the last tenth of each task."""
    allowed = [c for c in scenario.TASK if c.expect == scenario.ALLOW and c.tool != "read_secret"]
    engine = Engine()
    clock = time.perf_counter_ns
    every: list[int] = []
    late: list[int] = []
    for _ in range(tasks):
        task = engine.new_task()
        for i in range(length):
            call = allowed[i % len(allowed)]
            t0 = clock()
            effect = task.decide(call)
            t1 = clock()
            assert effect == scenario.ALLOW, (i, call, effect)
            every.append(t1 - t0)
            if i >= length - max(1, length // 10):
                late.append(t1 - t0)
        task.coder.end()
        task.intern.end()
    every.sort()
    return {
        "decisions": len(every),
        "median_us": statistics.median(every) / 1e3,
        "p99_us": every[max(0, int(len(every) * 0.99) - 1)] / 1e3,
        "late_median_us": statistics.median(late) / 1e3,
    }


if __name__ == "__main__":
    from importlib.metadata import version

    if "--task-length" in sys.argv:
        figures = long_tasks(scenario.option("--task-length", 10), scenario.option("--rounds", 3))
        print(json.dumps(figures))
    else:
        about = {**ABOUT, "version": version("tether")}
        if ASKED_DURABILITY != "commit":
            about["engine"] = f"tether ({ASKED_DURABILITY} durability)"
            about["setup"] = about["setup"].replace("durable", f"{ASKED_DURABILITY}-durability")
        scenario.main(Engine, about)
