"""Races (on SQLite and PostgreSQL): people answering one approval at once, a task revoked while
its agent calls, a bundle activated while calls are decided. Whatever the interleaving, one
answer wins, nothing is decided under a revoked token, and no decision sees half a bundle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tether import Guard
from tether.errors import Conflict
from tether.model import ApprovalStatus, Effect

ALLOW_ALL = {"all.cedar": "permit (principal, action, resource);"}
ASK = """@id("ask")
@approval("approver")
forbid (principal, action == Action::"delete_branch", resource) unless { context.approved };
permit (principal, action, resource);
"""
PAUSE = {"pause.cedar": 'forbid (principal, action == Action::"read_file", resource);'}


@pytest.fixture
def guard(home: Path) -> Any:
    with Guard.embedded(home=home) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        string = {"type": "string"}
        for tool, effect in (("read_file", "read"), ("delete_branch", "destructive")):
            guard.register_tool(
                "acme", tool, effects=[effect],
                args_schema={"type": "object", "properties": {"x": string}},
            )  # fmt: skip
        guard.add_user("acme", "alice")
        for approver in ("bob", "carol", "dave", "erin"):
            guard.add_user("acme", approver, roles=["approver"])
        guard.grant("acme", user="alice", agent="coder", tools=["read_file", "delete_branch"])
        yield guard


def task(guard: Guard) -> Any:
    return guard.task(
        workspace="acme", agent="coder", user="alice", request="work",
        tools=["read_file", "delete_branch"],
    )  # fmt: skip


def together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs at once (released by one barrier); their results or exceptions."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int, job: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = job()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("round_", range(5))
def test_people_answering_one_approval_at_once_leave_one_answer(guard: Guard, round_: int) -> None:
    guard.activate_policies("acme", {"ask.cedar": ASK})
    work = task(guard)
    asked = work.authorize("delete_branch", {"x": f"old-{round_}"})
    assert asked.effect is Effect.APPROVAL_REQUIRED and asked.approval_id is not None
    people = ("bob", "carol", "dave", "erin")
    answers = together(
        *(
            (lambda p=p, i=i: (guard.approve if i % 2 else guard.deny)(asked.approval_id, approver=p))
            for i, p in enumerate(people)
        )
    )  # fmt: skip
    won = [a for a in answers if not isinstance(a, Exception)]
    assert len(won) == 1, answers
    assert all(isinstance(a, Conflict) for a in answers if a is not won[0])
    final = guard.approval(asked.approval_id)
    assert final.status is won[0].status and final.decided_by == won[0].decided_by
    again = work.authorize("delete_branch", {"x": f"old-{round_}"})
    expected = Effect.ALLOW if final.status is ApprovalStatus.APPROVED else Effect.DENY
    assert again.effect is expected


def test_nothing_is_decided_under_a_task_once_its_revocation_returned(guard: Guard) -> None:
    guard.activate_policies("acme", ALLOW_ALL)
    work = task(guard)
    decisions: list[Any] = []
    stop = threading.Event()

    def call() -> None:
        while not stop.is_set():
            decisions.append((time.time(), work.authorize("read_file", {"x": "a"})))

    caller = threading.Thread(target=call)
    caller.start()
    try:
        until(lambda: len(decisions) >= 20)
        guard.revoke_task(work.id)
        revoked_at = time.time()
        until(lambda: sum(1 for at, _ in decisions if at > revoked_at) >= 20)
    finally:
        stop.set()
        caller.join(timeout=30)
    started_after = [d for at, d in decisions if at > revoked_at]
    assert started_after, "the caller made no call after the revocation"
    assert all(d.effect is Effect.DENY for d in started_after)
    assert any(d.effect is Effect.ALLOW for at, d in decisions if at < revoked_at)


def test_a_bundle_activated_during_calls_is_seen_whole_or_not_at_all(guard: Guard) -> None:
    first = guard.activate_policies("acme", ALLOW_ALL)
    work = task(guard)
    seen: list[Any] = []
    stop = threading.Event()

    def call() -> None:
        while not stop.is_set():
            seen.append(work.authorize("read_file", {"x": "a"}))

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        until(lambda: len(seen) >= 30)
        second = guard.activate_policies("acme", {**ALLOW_ALL, **PAUSE})
        until(lambda: sum(1 for d in seen if d.policy_version == second) >= 30)
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
    versions = {d.policy_version for d in seen}
    assert versions == {first, second}, versions
    for decision in seen:  # each answer is its version's answer, never a mixture
        expected = Effect.ALLOW if decision.policy_version == first else Effect.DENY
        assert decision.effect is expected, decision
    assert seen[-1].policy_version == second


def until(condition: Callable[[], bool], seconds: float = 60) -> None:
    """Wait for the callers to have made the calls a step needs (not for a time: a slow
    machine makes fewer calls in one); fail if they never do."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the callers stopped calling"
        time.sleep(0.01)
