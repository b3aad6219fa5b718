"""The one scenario every engine decides, and how it is timed (issue 10). Standard library
only: each engine's driver imports this file in its own virtual environment.

Agent `coder` in workspace `acme`:

- R1: `read_file` only for paths under `/repo` (so `/repo/../etc/passwd` is refused);
- R2: `send_email` only to recipients `@acme.com` (so `eve@acme.com.evil.io` is refused);
- R3: `delete_branch` needs a person's approval;
- R4: no `http_post` once anything labelled secret was read in the same task;
- and a call aimed at another workspace, a call by another agent (`intern`, known but given
  nothing), and a call of a tool no one defined, are all refused.

A task is the 13 calls of `TASK`, in order, in a fresh task (session) each round. Only the
decision is timed; what follows it (reporting the secret's output to the task, or the glue a
peer needs to remember that a secret was read) is done outside the clock, for every engine
alike.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

ALLOW, DENY, APPROVAL = "allow", "deny", "approval_required"
SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmU= -----END"


@dataclass(frozen=True)
class Call:
    workspace: str
    agent: str
    tool: str
    args: dict[str, Any]
    expect: str
    what: str


TASK: tuple[Call, ...] = (
    Call("acme", "coder", "read_file", {"path": "/repo/src/app.py"}, ALLOW, "R1 inside"),
    Call("acme", "coder", "read_file", {"path": "/repo/../etc/passwd"}, DENY, "R1 traversal"),
    Call(
        "acme",
        "coder",
        "send_email",
        {"to": "bob@acme.com", "subject": "build", "body": "ok"},
        ALLOW,
        "R2 colleague",
    ),
    Call(
        "acme",
        "coder",
        "send_email",
        {"to": "eve@acme.com.evil.io", "subject": "build", "body": "ok"},
        DENY,
        "R2 lookalike",
    ),
    Call("acme", "coder", "delete_branch", {"branch": "old-parser"}, APPROVAL, "R3"),
    Call(
        "acme",
        "coder",
        "http_post",
        {"url": "https://ci.acme.com/hook", "body": "done"},
        ALLOW,
        "R4 before any secret",
    ),
    Call("acme", "coder", "read_secret", {"name": "deploy-key"}, ALLOW, "R4 the secret read"),
    Call(
        "acme",
        "coder",
        "http_post",
        {"url": "https://ci.acme.com/hook", "body": "done"},
        DENY,
        "R4 after the secret",
    ),
    Call("acme", "coder", "read_file", {"path": "/repo/README.md"}, ALLOW, "R1 inside"),
    Call("globex", "coder", "read_file", {"path": "/repo/README.md"}, DENY, "wrong workspace"),
    Call("acme", "intern", "read_file", {"path": "/repo/README.md"}, DENY, "wrong agent"),
    Call("acme", "coder", "format_disk", {"device": "/dev/sda"}, DENY, "unknown tool"),
    Call(
        "acme",
        "coder",
        "send_email",
        {"to": "carol@acme.com", "subject": "hi", "body": "x"},
        ALLOW,
        "R2 colleague",
    ),
)


class Task(Protocol):
    def decide(self, call: Call) -> Any:
        """allow, deny or approval_required (or an awaitable of it)."""

    def after(self, call: Call, effect: str) -> None:
        """What the task learns once the call is made (untimed): the secret's output."""


class Engine(Protocol):
    def new_task(self) -> Task: ...


def run(engine: Engine, rounds: int, warmup: int = 20) -> dict[str, Any]:
    """`rounds` fresh tasks of TASK, timed call by call, after `warmup` untimed ones; each
    answer checked against the expected one. (An engine whose API is asynchronous answers
    with an awaitable, awaited inside the clock: its own event loop is its cost.)"""
    return asyncio.run(_run(engine, rounds, warmup))


async def _run(engine: Engine, rounds: int, warmup: int) -> dict[str, Any]:
    clock = time.perf_counter_ns
    samples: list[int] = []
    wrong: dict[str, str] = {}
    right = total = 0
    for round_ in range(warmup + rounds):
        task = engine.new_task()
        for call in TASK:
            t0 = clock()
            effect = task.decide(call)
            if inspect.isawaitable(effect):
                effect = await effect
            t1 = clock()
            task.after(call, effect)
            if round_ < warmup:
                continue
            samples.append(t1 - t0)
            total += 1
            if effect == call.expect:
                right += 1
            else:
                wrong.setdefault(f"{call.tool} ({call.what})", f"{effect}, not {call.expect}")
    samples.sort()
    return {
        "decisions": total,
        "median_us": statistics.median(samples) / 1e3,
        "p99_us": samples[max(0, int(len(samples) * 0.99) - 1)] / 1e3,
        "correct": right,
        "wrong": wrong,
    }


def main(make: Callable[[], Engine], about: dict[str, Any]) -> None:
    """A driver's entry point: `--rounds N`; prints one JSON object (the figures and `about`:
    the engine's version and which rules it expresses natively)."""
    figures = run(make(), option("--rounds", 1600))
    print(json.dumps({**about, **figures}))


FILLER_ARGUMENT = {"read_file": "path", "send_email": "to", "http_post": "url",
                   "read_secret": "name", "delete_branch": "branch"}  # fmt: skip


def filler(count: int) -> str:
    """`count` more policies, for a bundle of a real size: each lets another agent (team0,
    team1, ...) make one of the scenario's calls with one exact argument. None can match the
    scenario's calls; an engine that evaluates every policy pays for them all the same."""
    tools = list(FILLER_ARGUMENT)
    return "\n".join(
        f'@id("filler-{i}")\n'
        f'permit (principal == Agent::"team{i}", action == Action::"{tools[i % 5]}", '
        f'resource == Workspace::"acme")\n'
        f'when {{ context.args.{FILLER_ARGUMENT[tools[i % 5]]} == "team-{i}" }};\n'
        for i in range(count)
    )


def option(name: str, default: int) -> int:
    """A driver's `--name N` option."""
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def under(path: str, folder: str) -> bool:
    """Glue some engines need for R1: `path`, normalized, is inside `folder`."""
    import posixpath  # noqa: PLC0415

    normal = posixpath.normpath("/" + path.lstrip("/"))
    return normal == folder or normal.startswith(folder.rstrip("/") + "/")
