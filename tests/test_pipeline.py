"""The decision pipeline: every gate, every stage failing closed, every decision recorded."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EMAIL_SCHEMA, POLICIES, Clock, delegate

from tether import CredentialRefused, Guard
from tether.model import Effect, Reason, Stage
from tether.pdp import AuthorizeRequest, Call, task_gate
from tether.store import Store

MAIL = {"to": "bob@acme.com", "subject": "hi"}


def open_task(guard: Guard, tools: tuple[str, ...] = ("send_email", "read_file")) -> Any:
    return guard.task(
        workspace="acme", agent="coder", user="alice", request="mail bob", tools=tools
    )


@pytest.mark.sqlite
def test_allowed_call_is_recorded_with_its_context(guard: Guard, home: Path) -> None:
    with open_task(guard) as task:
        d = task.authorize("send_email", MAIL)
        # Committed before the answer: another connection sees the row at once.
        row = (
            sqlite3.connect(home / "tether.db")
            .execute(
                "select effect, agent, user, tool, task_id, policy_version, context, reasons "
                "from decisions where id = ?",
                (d.decision_id,),
            )
            .fetchone()
        )
    assert d.effect is Effect.ALLOW
    effect, agent, user, tool, task_id, version, context, reasons = row
    assert (effect, agent, user, tool, task_id) == (
        "allow",
        "coder",
        "alice",
        "send_email",
        task.id,
    )
    assert version == d.policy_version and version.startswith("sha256:")
    assert json.loads(context)["args"] == {"to": "bob@acme.com", "subject": "hi"}
    assert json.loads(reasons)[0]["policy"] == "mail-inside"


def deny_stage(d: Any) -> tuple[Effect, Stage, str]:
    return d.effect, d.reasons[0].stage, d.reasons[0].text


def test_unknown_tool_is_denied_at_the_workspace_gate(guard: Guard) -> None:
    with open_task(guard) as task:
        effect, stage, text = deny_stage(task.authorize("wire_money", {}))
    assert (effect, stage) == (Effect.DENY, Stage.WORKSPACE)
    assert "wire_money is not in the catalogue" in text


def test_tool_outside_the_task_scope_is_denied_at_the_task_gate(guard: Guard) -> None:
    with open_task(guard, tools=("read_file",)) as task:
        effect, stage, text = deny_stage(task.authorize("send_email", MAIL))
    assert (effect, stage) == (Effect.DENY, Stage.TASK)
    assert "outside this task's scope (granted: read_file)" in text


def test_arguments_that_break_the_schema_are_denied_before_policy(guard: Guard) -> None:
    with open_task(guard) as task:
        effect, stage, text = deny_stage(task.authorize("send_email", {"to": 42}))
        assert "is not of type" in text
        assert deny_stage(task.authorize("send_email", {"to": "a@acme.com", "bcc": "eve"}))[
            2
        ].endswith("argument `bcc`: not declared in the tool's argument schema")
        assert deny_stage(task.authorize("send_email", "not an object"))[1] is Stage.CONTEXT
    assert (effect, stage) == (Effect.DENY, Stage.CONTEXT)


def test_bytes_arguments_are_denied_since_policies_would_see_base64(guard: Guard) -> None:
    # Bytes that base64 spells as "/eve/acmecom": a tool taking str or bytes would get the
    # bytes, while a policy read the text.
    with open_task(guard) as task:
        direct = deny_stage(task.authorize("send_email", {"to": base64.b64decode("/eve/acme.com")}))
        nested = deny_stage(task.authorize("send_email", {"to": "a@acme.com", "x": [bytearray()]}))
    assert direct[:2] == (Effect.DENY, Stage.CONTEXT) and "argument `to` is bytes" in direct[2]
    assert "argument `x[0]` is bytes" in nested[2]


def test_huge_arguments_are_denied_and_not_stored_whole(guard: Guard) -> None:
    with open_task(guard) as task:
        d = task.authorize("send_email", {"to": "a@acme.com", "subject": "x" * 2_000_000})
    assert deny_stage(d)[:2] == (Effect.DENY, Stage.CONTEXT)
    (record,) = [r for r in guard.store.decisions(limit=5) if r.id == d.decision_id]
    assert record.args == '{"truncated":true}' and len(record.args_digest) == 64


def test_suspended_agent_is_denied_mid_task(clocked: Guard, clock: Clock) -> None:
    guard = clocked
    with open_task(guard) as task:
        assert task.authorize("send_email", MAIL).allowed
        guard.suspend_agent("acme", "coder")
        effect, stage, text = deny_stage(task.authorize("send_email", MAIL))
        guard.resume_agent("acme", "coder")
        # Resuming the agent does not revive what the suspension revoked.
        after_resume = deny_stage(task.authorize("send_email", MAIL))
    assert (effect, stage, text) == (
        Effect.DENY,
        Stage.AUTHENTICATE,
        "credential refused: the token is revoked: agent coder was suspended: "
        "its credentials were revoked",
    )
    assert after_resume == (effect, stage, text)
    stored = guard.store.task(task.id)
    assert stored is not None and stored.status == "revoked"
    # Within the clock skew allowed between processes, a new token could be one issued before
    # the suspension by a process whose clock runs fast: none is issued.
    with pytest.raises(CredentialRefused, match="the token would be revoked"):
        open_task(guard)
    # After it, the resumed agent works again, in a new task with a fresh token.
    clock.now += 31
    with open_task(guard) as fresh:
        resumed = fresh.authorize("send_email", MAIL)
    assert resumed.allowed, resumed.reasons


def test_a_task_cannot_act_in_another_workspace(guard: Guard) -> None:
    guard.add_workspace("beta")
    with open_task(guard) as task:
        d = guard.authorize(task.id, "send_email", MAIL, workspace="beta")
    assert deny_stage(d)[:2] == (Effect.DENY, Stage.WORKSPACE)
    assert "belongs to workspace acme (its token was issued there); it cannot act in beta" in (
        d.reason
    )


@pytest.fixture
def clocked(home: Path, clock: Clock) -> Iterator[Guard]:
    """The `guard` fixture's workspace, on a clock the test moves."""
    with Guard(Store.at_home(home), clock=clock) as g:
        g.add_workspace("acme")
        g.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        g.register_tool(
            "acme", "send_email", effects=["external"], sinks=["to"], args_schema=EMAIL_SCHEMA
        )
        g.register_tool("acme", "read_file", effects=["read"])
        g.activate_policies("acme", POLICIES)
        delegate(g, "acme", "coder")
        yield g


def change_store(*statements: str) -> Callable[[Guard, Path, Clock], None]:
    """Change the stored workspace behind the Guard's back, as another process might."""

    def change(guard: Guard, home: Path, clock: Clock) -> None:
        with guard.store.engine.begin() as db:  # SQL straight to the database, whichever it is
            for statement in statements:
                db.exec_driver_sql(statement)
            db.exec_driver_sql("update workspaces set revision = revision + 1")
        guard._views.poll()

    return change


def pass_the_end(guard: Guard, home: Path, clock: Clock) -> None:
    clock.now += 60  # the task's ttl: its end, and its token's


@pytest.mark.parametrize(
    ("change", "stage", "text"),
    [
        (
            change_store("delete from agents where name = 'coder'"),
            Stage.WORKSPACE,
            "agent coder is not registered in workspace acme",
        ),
        (
            change_store(
                *(
                    f"delete from {table} where workspace = 'acme'"
                    for table in ("agents", "users", "tools", "policy_bundles", "tasks", "grants")
                ),
                "delete from workspaces where name = 'acme'",
            ),
            Stage.WORKSPACE,
            "workspace acme does not exist",
        ),
        # A task's token never outlives the task: once the task is over, so is its token.
        (pass_the_end, Stage.AUTHENTICATE, "credential refused: the token expired 0 s ago"),
    ],
)
def test_gates_deny_missing_or_stale_things(
    clocked: Guard,
    home: Path,
    clock: Clock,
    change: Callable[[Guard, Path, Clock], None],
    stage: Stage,
    text: str,
) -> None:
    with clocked.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"], ttl=60
    ) as task:
        assert task.authorize("send_email", MAIL).allowed
        change(clocked, home, clock)
        d = clocked.authorize(task.id, "send_email", MAIL)
    assert deny_stage(d) == (Effect.DENY, stage, text)
    assert any(r.id == d.decision_id for r in clocked.store.decisions(limit=3))


def test_the_task_gate_denies_an_expired_task_whatever_its_token_says(
    clocked: Guard, clock: Clock
) -> None:
    """The token's expiry refuses an expired task first; the task gate does not rely on it."""
    task = clocked.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"], ttl=60
    )
    call = Call(AuthorizeRequest(tool="send_email", args=MAIL, task_id=task.id), clock.now + 60)
    call.task, call.claims = task.state, task.claims
    assert task_gate(call) == Reason(Stage.TASK, f"task {task.id} expired")
    call.now = clock.now + 59
    assert task_gate(call) is None


def test_calls_outside_any_task_or_in_unknown_tasks_are_denied_and_recorded(guard: Guard) -> None:
    no_task = guard.authorize(None, "send_email", MAIL, workspace="acme")
    unknown = guard.authorize("task_forged", "send_email", MAIL)
    with open_task(guard) as task:  # a real task's token does not open another task
        borrowed = guard.authorize("task_forged", "send_email", MAIL, token=task.token)
    assert deny_stage(no_task) == (
        Effect.DENY,
        Stage.AUTHENTICATE,
        "no task: tool calls are authorized only inside a task",
    )
    assert deny_stage(unknown) == (
        Effect.DENY,
        Stage.AUTHENTICATE,
        "no credential for task task_forged: present its token",
    )
    assert deny_stage(borrowed) == (
        Effect.DENY,
        Stage.AUTHENTICATE,
        f"the token is for task {task.id}, not task_forged",
    )
    recorded = {r.id: r for r in guard.store.decisions(limit=10)}
    assert recorded[no_task.decision_id].stage is Stage.AUTHENTICATE
    assert recorded[unknown.decision_id].effect is Effect.DENY
    assert recorded[borrowed.decision_id].effect is Effect.DENY


def test_ended_task_can_no_longer_act(guard: Guard) -> None:
    task = open_task(guard)
    task.end()
    assert deny_stage(task.authorize("send_email", MAIL))[:2] == (Effect.DENY, Stage.AUTHENTICATE)


def test_no_active_policies_means_deny(home: Path) -> None:
    with Guard.embedded(home=home) as g:
        g.add_workspace("acme")
        g.register_agent("acme", "coder", kind="coder", owner="o")
        g.register_tool("acme", "ping", effects=["read"])
        delegate(g, "acme", "coder", users=("u",))
        with g.task(workspace="acme", agent="coder", user="u", request="", tools=["ping"]) as task:
            d = task.authorize("ping")
    assert deny_stage(d) == (Effect.DENY, Stage.POLICY, "no policies are active in workspace acme")


STAGE_FUNCTIONS = [
    ("authenticate", Stage.AUTHENTICATE),
    ("workspace_gate", Stage.WORKSPACE),
    ("task_gate", Stage.TASK),
    ("build_context", Stage.CONTEXT),
    ("apply_policy", Stage.POLICY),
]


@pytest.mark.parametrize(("function", "stage"), STAGE_FUNCTIONS)
def test_every_stage_that_raises_yields_a_deny_naming_it(
    guard: Guard, monkeypatch: pytest.MonkeyPatch, function: str, stage: Stage
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("injected fault")

    with open_task(guard) as task:
        assert task.authorize("send_email", MAIL).allowed
        monkeypatch.setattr(f"tether.pdp.{function}", boom)
        d = task.authorize("send_email", MAIL)
    assert d.effect is Effect.DENY
    assert d.reasons[0].stage is stage
    assert (
        d.reasons[0].text
        == f"{stage.value} stage failed, so the call is denied: RuntimeError: injected fault"
    )
    assert any(r.id == d.decision_id for r in guard.store.decisions(limit=3))


def test_a_decision_that_cannot_be_recorded_is_a_deny(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*_: Any, **__: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with open_task(guard) as task:
        monkeypatch.setattr(guard.store.audit, "append", full_disk)
        d = task.authorize("send_email", MAIL)
        state = task.state
    assert deny_stage(d) == (
        Effect.DENY,
        Stage.RECORD,
        "the decision could not be recorded, so the call is denied: "
        "OperationalError: database or disk is full",
    )
    # The task counted the call as decided (its state is kept before the record, so that
    # replicas agree on it): counting a call that was then refused only makes limits stricter.
    assert (state.calls, state.calls_by_tool["send_email"]) == (1, 1)
    assert [step.decision_id for step in state.history] == [d.decision_id]


@pytest.mark.sqlite
def test_a_workspace_whose_stored_state_does_not_compile_denies(guard: Guard, home: Path) -> None:
    with open_task(guard) as task:
        db = sqlite3.connect(home / "tether.db")
        with db:
            db.execute(
                "update tools set args_schema = '{\"type\": \"string\"}' where name = 'send_email'"
            )
            db.execute("update workspaces set revision = revision + 1")
        guard._views.poll()
        effect, stage, text = deny_stage(task.authorize("send_email", MAIL))
    assert (effect, stage) == (Effect.DENY, Stage.WORKSPACE)
    assert "workspace 'acme' cannot be loaded" in text and "must describe an object" in text


@pytest.mark.sqlite
def test_an_output_reported_while_the_workspace_cannot_load_still_labels_the_task(
    guard: Guard, home: Path
) -> None:
    with open_task(guard) as task:
        d = task.authorize("read_file", {"path": "/x"})
        db = sqlite3.connect(home / "tether.db")
        with db:
            db.execute('update tools set args_schema = \'{"type": "string"}\'')
            db.execute("update workspaces set revision = revision + 1")
        guard._views.poll()
        task.report(d, "mail bob@acme.com")  # read_file is trusted, but nothing says so now
    assert task.state.labels == {"untrusted", "pii"}


def test_a_policy_stage_that_reaches_no_verdict_is_a_deny(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether.pdp.apply_policy", lambda call: None)  # passes, decides nothing
    with open_task(guard) as task:
        d = task.authorize("send_email", MAIL)
    assert deny_stage(d) == (Effect.DENY, Stage.POLICY, "no verdict was reached")


def test_task_counts_its_decisions(guard: Guard) -> None:
    with open_task(guard) as task:
        task.authorize("send_email", MAIL)
        task.authorize("read_file", {"path": "/x"})
        task.authorize("send_email", {"to": "eve@evil.io"})
        assert task.state.calls == 3
        assert (task.state.allowed, task.state.denied) == (2, 1)
        assert task.state.calls_by_tool == {"send_email": 1, "read_file": 1}  # allowed calls
        assert task.state.calls_by_effect == {"external": 1, "read": 1}
        d = task.authorize("send_email", MAIL)
    record = next(r for r in guard.store.decisions(limit=1) if r.id == d.decision_id)
    assert record.context is not None and json.loads(record.context)["task"]["calls"] == 3


def test_store_reopens_with_every_decision(guard: Guard, home: Path) -> None:
    with open_task(guard) as task:
        ids = {task.authorize("send_email", MAIL).decision_id for _ in range(20)}
    store = Store.at_home(home)
    try:
        assert ids <= {r.id for r in store.decisions(limit=100)}
    finally:
        store.close()


def test_a_failure_outside_every_stage_is_still_a_deny(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise MemoryError("no room to answer")

    with open_task(guard) as task:
        monkeypatch.setattr("tether.pdp._answer", broken)
        d = task.authorize("send_email", MAIL)
    assert deny_stage(d) == (
        Effect.DENY,
        Stage.ANSWER,
        "the decision failed, so the call is denied: MemoryError: no room to answer",
    )
    (stored,) = [r for r in guard.store.decisions(task_id=task.id) if r.id == d.decision_id]
    assert (stored.effect, stored.stage) == (Effect.DENY, Stage.ANSWER)
