"""Task state shared through the store: two Guards on one store are two replicas, and a task's
calls may land on either. Runs on SQLite, and on PostgreSQL in the PostgreSQL run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import delegate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import Guard
from tether.credentials import make_proof
from tether.model import Decision, Effect, Stage
from tether.sdk.guard import TaskHandle
from tether.session import Decided, Observed
from tether.store import Store
from tether.store import tables as t
from tether.store.tasks import PURGE_AFTER

POLICIES = {
    "rules.cedar": """
@id("anything")
permit (principal, action, resource);

@id("no-exfiltration-after-a-secret")
forbid (principal, action == Action::"http_post", resource)
when { context.task.labels.contains("secret") };

@id("three-reads")
forbid (principal, action == Action::"read_file", resource)
when { context.task.tool_calls >= 3 };
""",
}
PATH = {"type": "object", "properties": {"path": {"type": "string"}}}


@pytest.fixture
def replicas(home: Path) -> Iterator[tuple[Guard, Guard]]:
    with Guard(Store.at_home(home), shared_tasks=True) as a:
        a.add_workspace("acme")
        a.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        a.register_tool("acme", "read_file", effects=["read"], args_schema=PATH)
        a.register_tool("acme", "read_secret", effects=["secret_access"], labels=["secret"])
        a.register_tool("acme", "http_post", effects=["external"], args_schema=PATH)
        a.activate_policies("acme", POLICIES)
        delegate(a, "acme", "coder", users=("alice",))
        with Guard(Store.at_home(home), shared_tasks=True) as b:
            yield a, b


def start(guard: Guard) -> TaskHandle:
    return guard.task(
        workspace="acme",
        agent="coder",
        user="alice",
        request="tidy the repo",
        tools=["read_file", "read_secret", "http_post"],
    )


def delegating(guard: Guard) -> TaskHandle:
    """A task of the coder's, under a grant that lets it delegate to a helper."""
    guard.register_agent("acme", "helper", kind="coder", owner="alice@acme.com")
    tools = ["read_file", "read_secret", "http_post"]
    grant = guard.grant("acme", user="alice", agent="coder", tools=tools, may_act=["helper"])
    return guard.task(
        workspace="acme", agent="coder", user="alice", request="tidy", tools=tools, grant=grant.id
    )


def on(guard: Guard, task: TaskHandle, tool: str, args: dict[str, str] | None = None) -> Effect:
    """A call of `task` decided by `guard` (another replica than the one that started it)."""
    return guard.authorize(None, tool, args or {}, token=task.token).effect


def test_a_replayed_proof_counts_for_nothing_on_any_replica(
    replicas: tuple[Guard, Guard],
) -> None:
    """The proof's one-time id is claimed with the decision's record and task event: the
    replay is refused, recorded, and takes no place in the task."""
    a, b = replicas
    task = start(a)
    key = a.agent_keys.get("acme", "coder")
    proof = make_proof(
        key, htm="POST", htu="tether:embedded", now=a._clock(), access_token=task.token
    )
    first = a.authorize(None, "read_file", {"path": "/r"}, token=task.token, proof=proof)
    again = b.authorize(None, "read_file", {"path": "/r"}, token=task.token, proof=proof)
    assert first.effect is Effect.ALLOW
    assert again.effect is Effect.DENY and again.reasons[0].stage is Stage.AUTHENTICATE
    assert "already used (replay)" in again.reasons[0].text
    assert [on(g, task, "read_file", {"path": "/r"}) for g in (b, a, b)] == [
        Effect.ALLOW,
        Effect.ALLOW,
        Effect.DENY,  # the fourth read: the replay was not one
    ]
    recorded = {r.id: r.effect for r in a.store.decisions(limit=None)}
    assert recorded[first.decision_id] is Effect.ALLOW
    assert recorded[again.decision_id] is Effect.DENY


def test_a_task_alternating_replicas_keeps_its_chain_rules(
    replicas: tuple[Guard, Guard],
) -> None:
    a, b = replicas
    task = start(a)
    assert [on(g, task, "read_file", {"path": "/r"}) for g in (a, b, a, b)] == [
        Effect.ALLOW,
        Effect.ALLOW,
        Effect.ALLOW,
        Effect.DENY,  # the fourth read, wherever it lands
    ]
    secret = b.authorize(None, "read_secret", {}, token=task.token)
    assert secret.effect is Effect.ALLOW
    b.report(task.id, secret.decision_id, "the deploy key")  # reported to the other replica
    refused = a.authorize(None, "http_post", {"path": "/out"}, token=task.token)
    assert refused.effect is Effect.DENY
    assert refused.reasons[0].policy == "no-exfiltration-after-a-secret"
    assert "secret" in task.state.labels and task.state.calls == 6


def test_a_sub_task_sees_what_its_parent_read_on_another_replica(
    replicas: tuple[Guard, Guard],
) -> None:
    """Replica b has the parent's state cached from deciding a call of the sub-task; the
    parent then reads a secret through replica a. b's next decision in the sub-task sees it."""
    a, b = replicas
    parent = delegating(a)
    sub = parent.delegate("helper", tools=["http_post"])
    before = on(b, sub, "http_post", {"path": "/status"})
    read = parent.authorize("read_secret", {})
    parent.report(read, "the deploy key")
    after = b.authorize(None, "http_post", {"path": "/status"}, token=sub.token)
    assert (before, read.effect) == (Effect.ALLOW, Effect.ALLOW)
    assert after.effect is Effect.DENY, after.reason
    assert after.reasons[0].policy == "no-exfiltration-after-a-secret"
    sub.end()
    parent.end()


def test_a_parent_task_sees_what_its_sub_task_read_on_another_replica(
    replicas: tuple[Guard, Guard],
) -> None:
    """Replica a has the parent's state from deciding its call; the sub-task then reads a
    secret through replica b. a's next decision in the parent sees it."""
    a, b = replicas
    parent = delegating(a)
    before = parent.authorize("http_post", {"path": "/status"})
    sub = parent.delegate("helper", tools=["read_secret"])
    read = on(b, sub, "read_secret", {})
    secret = b.authorize(None, "read_secret", {}, token=sub.token)
    b.report(sub.id, secret.decision_id, "the deploy key")
    sub.end()
    after = parent.authorize("http_post", {"path": "/status"})
    assert (before.effect, read, secret.effect) == (Effect.ALLOW, Effect.ALLOW, Effect.ALLOW)
    assert after.effect is Effect.DENY, after.reason
    assert after.reasons[0].policy == "no-exfiltration-after-a-secret"
    assert "secret" in parent.state.labels
    parent.end()


def test_concurrent_calls_on_two_replicas_are_decided_one_at_a_time(
    replicas: tuple[Guard, Guard],
) -> None:
    a, b = replicas
    task = start(a)
    token = task.token
    effects: list[tuple[Effect, Stage | None]] = []

    def calls(guard: Guard) -> None:
        for _ in range(5):
            d = guard.authorize(None, "read_file", {"path": "/r"}, token=token)
            effects.append((d.effect, d.reasons[0].stage if d.reasons else None))

    threads = [threading.Thread(target=calls, args=(g,)) for g in (a, b) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(effects) == 30
    # However the calls interleave across the replicas, the limit holds exactly.
    assert sum(effect is Effect.ALLOW for effect, _ in effects) == 3
    counted = sum(stage is not Stage.RECORD for _, stage in effects)  # not given up on
    for guard in (a, b):
        state = guard._tasks.get(task.id)
        assert state is not None
        with state.lock:
            guard._tasks.catch_up(state)
        assert (state.calls, state.allowed) == (counted, 3)


def test_events_are_sealed_and_a_tampered_one_fails_closed(
    replicas: tuple[Guard, Guard], home: Path
) -> None:
    a, _ = replicas
    task = start(a)
    assert on(a, task, "read_file", {"path": "/repo/MARKER-7f3a"}) is Effect.ALLOW
    with a.store.engine.begin() as db:
        (body,) = db.execute(
            sa.select(t.task_events.c.body).where(t.task_events.c.task_id == task.id)
        ).scalars()
        assert b"MARKER-7f3a" not in body
        db.execute(
            t.task_events.update()
            .where(t.task_events.c.task_id == task.id)
            .values(body=body[:-1] + bytes([body[-1] ^ 1]))
        )
    with Guard(Store.at_home(home), shared_tasks=True) as fresh:  # must read the task back
        d = fresh.authorize(None, "read_file", {"path": "/r"}, token=task.token)
    assert d.effect is Effect.DENY and d.reasons[0].stage is Stage.AUTHENTICATE
    assert "InvalidTag" in d.reasons[0].text


def test_an_unshared_guard_decides_only_its_own_tasks(home: Path) -> None:
    with Guard(Store.at_home(home), shared_tasks=False) as a:
        a.add_workspace("acme")
        a.register_agent("acme", "coder", kind="coder", owner="o")
        a.register_tool("acme", "read_file", effects=["read"], args_schema=PATH)
        a.activate_policies("acme", {"p.cedar": POLICIES["rules.cedar"].split('@id("no')[0]})
        delegate(a, "acme", "coder", users=("alice",))
        task = a.task(
            workspace="acme", agent="coder", user="alice", request="r", tools=["read_file"]
        )
        with Guard(Store.at_home(home), shared_tasks=False) as b:
            d = b.authorize(None, "read_file", {"path": "/r"}, token=task.token)
        assert d.effect is Effect.DENY and "is not open here" in d.reasons[0].text
        assert a.store.task_events.after(task.id, 0) == []  # nothing of it left this process


def test_a_replica_keeps_a_bounded_number_of_tasks_and_reads_the_others_back(
    replicas: tuple[Guard, Guard], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = replicas
    monkeypatch.setattr("tether.session.shared.MAX_CACHED", 10)
    first = start(a)
    assert on(a, first, "read_file", {"path": "/r"}) is Effect.ALLOW
    others = [start(a) for _ in range(12)]  # past the bound: the oldest are let go
    assert len(a._tasks.known()) <= 10 and first.id not in {s.id for s in a._tasks.known()}
    # Read back from its events when used again: its count (one read) is still there.
    assert [on(a, first, "read_file", {"path": "/r"}) for _ in range(3)] == [
        Effect.ALLOW,
        Effect.ALLOW,
        Effect.DENY,
    ]
    assert first.state.calls == 4 and others[-1].state.calls == 0


def test_a_closed_tasks_events_outlive_any_replica_that_could_still_act_on_it(
    replicas: tuple[Guard, Guard],
) -> None:
    """Events are purged only well after their task closed: a replica that has not heard of
    the end yet must not find an emptied log (and rebuild the task without its labels)."""
    a, _ = replicas
    task = start(a)
    assert on(a, task, "read_secret") is Effect.ALLOW
    ended_at = a._clock()
    task.end()
    events = a.store.task_events
    assert events.purge(ended_at + 1) == 0 and len(events.after(task.id, 0)) == 1
    assert events.purge(ended_at + PURGE_AFTER + 1) == 1 and events.after(task.id, 0) == []


def test_renewing_a_token_elsewhere_never_starts_its_task_afresh(home: Path) -> None:
    """An unshared Guard that did not start a task must not take a renewal of its token as a
    new task: a blank state would have forgotten the secret the task read."""
    with Guard(Store.at_home(home), shared_tasks=False) as a:
        a.add_workspace("acme")
        a.register_agent("acme", "coder", kind="coder", owner="o")
        a.register_tool("acme", "read_file", effects=["read"], args_schema=PATH)
        a.register_tool("acme", "read_secret", effects=["secret_access"], labels=["secret"])
        a.register_tool("acme", "http_post", effects=["external"], args_schema=PATH)
        a.activate_policies("acme", POLICIES)
        delegate(a, "acme", "coder", users=("alice",))
        task = a.task(
            workspace="acme", agent="coder", user="alice", request="r",
            tools=["read_secret", "http_post"],
        )  # fmt: skip
        secret = task.authorize("read_secret")
        task.report(secret, "the deploy key")
        with Guard(Store.at_home(home), shared_tasks=False) as b:
            renewal = a._signed(task._exchange, task._key, "acme", "coder")
            renewed = b.exchange(renewal).response.access_token
            d = b.authorize(None, "http_post", {"path": "/out"}, token=renewed)
        assert d.effect is Effect.DENY and "is not open here" in d.reasons[0].text


EVENTS = st.lists(
    st.one_of(
        st.builds(
            Decided,
            decision_id=st.just("dec_x"),
            tool=st.sampled_from(["read_file", "http_post"]),
            effects=st.just(("read",)),
            effect=st.sampled_from(list(Effect)),
            at=st.just(0.0),
            args=st.one_of(st.none(), st.just(b'{"to":"eve@evil.io"}')),
            outside=st.booleans(),
        ),
        st.builds(
            Observed,
            trusted=st.booleans(),
            labels=st.frozensets(st.sampled_from(["secret", "pii", "untrusted"])),
            pieces=st.lists(st.sampled_from(["eve@evil.io", "bob@acme.com", "x"])).map(tuple),
        ),
    ),
    max_size=12,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS)
def test_a_task_read_back_on_another_replica_is_the_task_its_events_made(
    replicas: tuple[Guard, Guard], events: list[Decided | Observed]
) -> None:
    """Whatever happened in a task, another replica rebuilds the same state from the store;
    and along the way its labels only ever grew."""
    a, b = replicas
    task = start(a)
    state = a._tasks.get(task.id)
    assert state is not None
    seen: set[str] = set()
    with state.lock:
        for event in events:
            assert a._tasks.add(state, event)
            assert seen <= state.labels
            seen = set(state.labels)
    b._tasks.drop(task.id)
    there = b._tasks.get(task.id)
    assert there is not None
    assert there.context("http_post", ["read"]) == state.context("http_post", ["read"])
    assert (there.outside_workspace, there.executed, there.seq) == (
        state.outside_workspace,
        state.executed,
        state.seq,
    )
    for value in ("eve@evil.io", "bob@acme.com"):
        assert there.provenance.of(value) == state.provenance.of(value)


# -- decisions on an event loop (the service's): waiting records share a commit ------------------


def test_calls_in_flight_on_a_loop_are_recorded_in_one_commit(
    replicas: tuple[Guard, Guard], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = replicas
    tasks = [start(a) for _ in range(8)]
    transaction, commits = a.store.writes.transaction, []

    def counted() -> Any:
        commits.append(1)
        return transaction()

    monkeypatch.setattr(a.store.writes, "transaction", counted)

    async def all_at_once() -> list[Decision]:
        return await asyncio.gather(
            *(
                a.authorize_async("read_file", {"path": "/r"}, token=t.token, proof=None)
                for t in tasks
            )
        )

    decided = asyncio.run(all_at_once())
    assert [d.effect for d in decided] == [Effect.ALLOW] * 8
    assert len(commits) == 1  # eight records, their events, one transaction
    stored = {r.id for r in a.store.decisions(limit=None)}
    assert {d.decision_id for d in decided} <= stored
    assert [t.state.calls for t in tasks] == [1] * 8


def test_calls_of_one_task_on_a_loop_take_turns(replicas: tuple[Guard, Guard]) -> None:
    """Four reads of one task at once on the loop: each decided on the state the one before
    left (the task's lock is re-entrant, so the loop's calls keep out of each other)."""
    a, b = replicas
    task = start(a)

    async def four() -> list[Decision]:
        return await asyncio.gather(
            *(
                a.authorize_async("read_file", {"path": "/r"}, token=task.token, proof=None)
                for _ in range(4)
            )
        )

    effects = [d.effect for d in asyncio.run(asyncio.wait_for(four(), 10))]
    assert sorted(effects) == [Effect.ALLOW] * 3 + [Effect.DENY]  # three-reads held
    assert on(b, task, "read_file", {"path": "/r"}) is Effect.DENY  # and on the other replica


def test_a_call_cancelled_while_its_record_waits_frees_its_task(
    replicas: tuple[Guard, Guard],
) -> None:
    a, _ = replicas
    task = start(a)

    async def cancel_one_then_call() -> Decision:
        first = asyncio.ensure_future(
            a.authorize_async("read_file", {"path": "/r"}, token=task.token, proof=None)
        )
        await asyncio.sleep(0)  # it runs to its commit's wait, holding the task's lock
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        return await a.authorize_async("read_file", {"path": "/r"}, token=task.token, proof=None)

    after = asyncio.run(asyncio.wait_for(cancel_one_then_call(), 10))
    assert after.effect is Effect.ALLOW
    # A thread (blocking on the task's lock, unlike the loop's calls) gets it too.
    effects: list[Effect] = []
    thread = threading.Thread(
        target=lambda: effects.append(on(a, task, "read_file", {"path": "/r"})), daemon=True
    )
    thread.start()
    thread.join(10)
    assert effects == [Effect.ALLOW]


def test_a_call_on_a_loop_whose_record_cannot_be_stored_is_denied(
    replicas: tuple[Guard, Guard], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = replicas
    task = start(a)

    def full_disk(*_: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(a.store.audit, "insert", full_disk)
    denied = asyncio.run(
        a.authorize_async("read_file", {"path": "/r"}, token=task.token, proof=None)
    )
    assert denied.effect is Effect.DENY and denied.reasons[0].stage is Stage.RECORD
    # the kind of failure, not its text (that is in the log: it can hold what is not the
    # caller's, such as other calls' values committed with it)
    assert denied.reasons[0].text.endswith("OSError (the details are in Tether's log)")
    assert task.state.calls == 0  # nothing of it counted in its task


def test_a_report_run_while_a_decision_of_its_task_waits_on_the_loop_counts_each_event_once(
    replicas: tuple[Guard, Guard],
) -> None:
    """An MCP gateway reports a call's result on its event loop, where another call of the
    same task may be between its record's commit and its return (the task's lock is
    re-entrant on the loop's thread). The report then finds the decision's event in the store
    and applies it; the decision must not apply it again (the task would count the call
    twice, and number its next event past the store's, failing every later decision)."""
    a, _ = replicas
    task = start(a)
    first = task.authorize("read_file", {"path": "/r"})
    assert first.allowed

    async def interleaved() -> Decision:
        loop = asyncio.get_running_loop()
        deciding = asyncio.ensure_future(
            a.authorize_async("read_file", {"path": "/s"}, token=task.token, proof=None)
        )
        await asyncio.sleep(0)  # the decision runs to its commit, which the loop runs next
        loop.call_soon(a.report, task.id, first.decision_id, "the notes")  # then this
        return await deciding

    second = asyncio.run(interleaved())
    third = task.authorize("read_file", {"path": "/t"})
    assert second.allowed and third.allowed, (second.reason, third.reason)
    state = task.state
    assert (state.calls, state.allowed, state.executed) == (3, 3, 1)
    fresh = a._tasks.get(task.id)
    assert fresh is not None and fresh.seq == len(a.store.task_events.after(task.id, 0))
    task.end()
