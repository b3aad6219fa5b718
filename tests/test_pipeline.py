"""The decision pipeline: every gate, every stage failing closed, every decision recorded.

The tests of the Guard's behaviour run twice: on an embedded Guard, and on a remote one speaking to
`tether serve` (conftest.py's `open_guard`), reading results through the public reads both Guards
offer, or through the test's own store on the home (`store`). Tests that inject faults into the
embedded pipeline, or change or read the stored state behind its back, run embedded only."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, OpenGuard, acme, delegate

from tether import CredentialRefused, Guard
from tether.errors import InvalidInput
from tether.model import Effect, Reason, Stage
from tether.pdp import AuthorizeRequest, Call, task_gate
from tether.store import Store

MAIL = {"to": "bob@acme.com", "subject": "hi"}


@pytest.fixture
def guard(open_guard: OpenGuard, home: Path, clock: Clock) -> Iterator[Any]:
    """conftest's `acme`, on a Guard of the test's mode, on a clock the test moves."""
    with open_guard(home, clock) as g:
        acme(g)
        yield g


@pytest.fixture
def embedded(home: Path, clock: Clock) -> Iterator[Guard]:
    """conftest's `acme` on an embedded Guard, on a clock the test moves: for the tests that
    reach into its internals."""
    with Guard(Store.at_home(home), clock=clock) as g:
        acme(g)
        yield g


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    """The store the Guard decides on, opened by the test itself: for what no Guard method
    reads (a task's stored row, the records of calls whose credential named no workspace)."""
    opened = Store.at_home(home)
    yield opened
    opened.close()


def recorded(guard: Any, decision_id: str, **filters: Any) -> Any:
    """The record of one decision in acme's log, read through the Guard."""
    (record,) = [r for r in guard.decisions("acme", **filters) if r.id == decision_id]
    return record


def open_task(guard: Any, tools: tuple[str, ...] = ("send_email", "read_file")) -> Any:
    return guard.task(
        workspace="acme", agent="coder", user="alice", request="mail bob", tools=tools
    )


@pytest.mark.sqlite
def test_allowed_call_is_recorded_with_its_context(embedded: Guard, home: Path) -> None:
    # Embedded only: it reads the SQLite file, from a connection of its own.
    with open_task(embedded) as task:
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


def test_an_allowed_call_is_committed_before_its_answer(guard: Any, store: Store) -> None:
    with open_task(guard) as task:
        d = task.authorize("send_email", MAIL)
        # Another connection to the store sees the record at once.
        (record,) = [r for r in store.decisions(task_id=task.id) if r.id == d.decision_id]
    assert d.effect is Effect.ALLOW
    assert (record.effect, record.agent, record.user, record.tool, record.task_id) == (
        Effect.ALLOW,
        "coder",
        "alice",
        "send_email",
        task.id,
    )
    assert record.policy_version == d.policy_version and d.policy_version.startswith("sha256:")
    assert record.context is not None
    assert json.loads(record.context)["args"] == {"to": "bob@acme.com", "subject": "hi"}
    assert json.loads(record.reasons)[0]["policy"] == "mail-inside"


def deny_stage(d: Any) -> tuple[Effect, Stage, str]:
    return d.effect, d.reasons[0].stage, d.reasons[0].text


def test_unknown_tool_is_denied_at_the_workspace_gate(guard: Any) -> None:
    with open_task(guard) as task:
        effect, stage, text = deny_stage(task.authorize("wire_money", {}))
    assert (effect, stage) == (Effect.DENY, Stage.WORKSPACE)
    assert "wire_money is not in the catalogue" in text


def test_tool_outside_the_task_scope_is_denied_at_the_task_gate(guard: Any) -> None:
    with open_task(guard, tools=("read_file",)) as task:
        effect, stage, text = deny_stage(task.authorize("send_email", MAIL))
    assert (effect, stage) == (Effect.DENY, Stage.TASK)
    assert "outside this task's scope (granted: read_file)" in text


def test_arguments_that_break_the_schema_are_denied_before_policy(guard: Any) -> None:
    with open_task(guard) as task:
        effect, stage, text = deny_stage(task.authorize("send_email", {"to": 42}))
        assert "is not of type" in text
        assert deny_stage(task.authorize("send_email", {"to": "a@acme.com", "bcc": "eve"}))[
            2
        ].endswith("argument `bcc`: not declared in the tool's argument schema")
        assert deny_stage(task.authorize("send_email", "not an object"))[1] is Stage.CONTEXT
    assert (effect, stage) == (Effect.DENY, Stage.CONTEXT)


def test_bytes_arguments_are_denied_since_policies_would_see_base64(guard: Any, mode: str) -> None:
    # Bytes that base64 spells as "/eve/acmecom": a tool taking str or bytes would get the
    # bytes, while a policy read the text.
    with open_task(guard) as task:
        direct = task.authorize("send_email", {"to": base64.b64decode("/eve/acme.com")})
        nested = task.authorize("send_email", {"to": "a@acme.com", "x": [bytearray()]})
        calls = task.state.calls
    assert deny_stage(direct)[:2] == (Effect.DENY, Stage.CONTEXT)
    assert "argument `to` is bytes" in deny_stage(direct)[2]
    assert "argument `x[0]` is bytes" in deny_stage(nested)[2]
    if mode == "embedded":
        assert calls == 2
        assert recorded(guard, direct.decision_id, task_id=task.id).stage is Stage.CONTEXT
    else:  # a remote Guard denies them without asking (JSON would carry the base64 text)
        assert calls == 0 and direct.decision_id == nested.decision_id == ""


@pytest.mark.parametrize("odd", [math.inf, -math.inf, math.nan])
def test_floats_json_cannot_carry_are_denied_since_policies_would_see_null(
    guard: Any, mode: str, odd: float
) -> None:
    # JSON writes NaN and infinity as null: a bound such as `context.args.limit > 1000` would
    # not hold, and an approval given for null would be spent on infinity.
    with open_task(guard) as task:
        direct = task.authorize("send_email", {"to": "a@acme.com", "subject": odd})
        nested = task.authorize("send_email", {"to": "a@acme.com", "x": {"y": [1.5, odd]}})
        finite = task.authorize("send_email", {"to": "a@acme.com", "x": [1.5, -0.0, 1e308]})
        calls = task.state.calls
    assert deny_stage(direct)[:2] == (Effect.DENY, Stage.CONTEXT)
    assert f"argument `subject` is {odd!r}, which JSON cannot carry" in deny_stage(direct)[2]
    assert f"argument `x.y[1]` is {odd!r}" in deny_stage(nested)[2]
    assert "cannot carry" not in finite.reason  # finite floats go on (to the schema, here)
    if mode == "embedded":
        assert calls == 3
    else:  # a remote Guard denies them without asking (JSON would carry null)
        assert calls == 1 and direct.decision_id == nested.decision_id == ""


def test_huge_arguments_are_denied_and_not_stored_whole(guard: Any, mode: str) -> None:
    huge = {"to": "a@acme.com", "subject": "x" * 2_000_000}
    with open_task(guard) as task:
        if mode == "remote":
            # Arguments over the decision point's limit make a request over the service's body
            # limit (both 1 MiB): the service refuses the request, and nothing is decided.
            with pytest.raises(InvalidInput, match="the body is over 1048576 bytes"):
                task.authorize("send_email", huge)
            assert task.state.calls == 0
            return
        d = task.authorize("send_email", huge)
    assert deny_stage(d)[:2] == (Effect.DENY, Stage.CONTEXT)
    record = recorded(guard, d.decision_id, task_id=task.id)
    assert record.args == '{"truncated":true}' and len(record.args_digest) == 64


def test_suspended_agent_is_denied_mid_task(guard: Any, store: Store, clock: Clock) -> None:
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
    stored = store.task(task.id)
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


def test_a_task_cannot_act_in_another_workspace(guard: Any) -> None:
    guard.add_workspace("beta")
    with open_task(guard) as task:
        d = guard.authorize(task.id, "send_email", MAIL, workspace="beta")
    assert deny_stage(d)[:2] == (Effect.DENY, Stage.WORKSPACE)
    assert "belongs to workspace acme (its token was issued there); it cannot act in beta" in (
        d.reason
    )
    # Recorded where its token was issued: naming a workspace files nothing in that one's log.
    assert d.workspace == "acme"
    assert recorded(guard, d.decision_id).args_digest
    assert d.decision_id not in {r.id for r in guard.decisions("beta")}


def test_a_refused_call_keeps_no_more_of_its_arguments_than_its_workspace_allows(
    home: Path, clock: Clock, store: Store
) -> None:
    """An expired token is still a genuine one: its denial is its task's, cut as its workspace
    cuts records. A call no credential ties to a workspace keeps only the digest."""
    secret = {"to": "bob@acme.com", "subject": "hunter2-SECRET"}
    with Guard(Store.at_home(home), clock=clock) as guard:
        acme(guard, settings={"audit": {"redact": ["subject"]}})
        with open_task(guard) as task:
            token = task.token
            clock.now += 400  # past the token's five minutes, within the task's life
            expired = guard.authorize(task.id, "send_email", secret, token=token)
            no_token = guard.authorize(None, "send_email", secret, workspace="acme")
    assert "the token expired" in deny_stage(expired)[2]
    log = {r.id: r for r in store.decisions(limit=10)}
    stale, anonymous = log[expired.decision_id], log[no_token.decision_id]
    assert (stale.workspace, stale.task_id) == ("acme", task.id)
    assert json.loads(stale.args) == {"to": "bob@acme.com", "subject": "[redacted]"}
    assert anonymous.workspace is None and json.loads(anonymous.args) == {}
    real = hashlib.sha256(json.dumps(secret, sort_keys=True, separators=(",", ":")).encode())
    assert stale.args_digest == anonymous.args_digest == real.hexdigest()


def change_store(*statements: str) -> Callable[[Guard], None]:
    """Change the stored workspace behind the Guard's back, as another process might."""

    def change(guard: Guard) -> None:
        with guard.store.engine.begin() as db:  # SQL straight to the database, whichever it is
            for statement in statements:
                db.exec_driver_sql(statement)
            db.exec_driver_sql("update workspaces set revision = revision + 1")
        guard._views.poll()

    return change


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (
            change_store("delete from agents where name = 'coder'"),
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
            "workspace acme does not exist",
        ),
    ],
)
def test_gates_deny_missing_or_stale_things(
    embedded: Guard, change: Callable[[Guard], None], text: str
) -> None:
    # Embedded only: it changes the store behind the Guard's back and makes its views notice.
    with embedded.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"], ttl=60
    ) as task:
        assert task.authorize("send_email", MAIL).allowed
        change(embedded)
        d = embedded.authorize(task.id, "send_email", MAIL)
    assert deny_stage(d) == (Effect.DENY, Stage.WORKSPACE, text)
    assert any(r.id == d.decision_id for r in embedded.store.decisions(limit=3))


def test_a_task_token_never_outlives_its_task(guard: Any, store: Store, clock: Clock) -> None:
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"], ttl=60
    ) as task:
        assert task.authorize("send_email", MAIL).allowed
        clock.now += 60  # the task's ttl: its end, and its token's
        d = guard.authorize(task.id, "send_email", MAIL)
    assert deny_stage(d) == (
        Effect.DENY,
        Stage.AUTHENTICATE,
        "credential refused: the token expired 0 s ago",
    )
    # A refused credential names no workspace: the record is in the store's log, not acme's.
    assert any(r.id == d.decision_id for r in store.decisions(limit=3))


def test_the_task_gate_denies_an_expired_task_whatever_its_token_says(
    embedded: Guard, clock: Clock
) -> None:
    """The token's expiry refuses an expired task first; the task gate does not rely on it."""
    # Embedded only: it calls the pipeline's task gate itself, on the task's live state.
    task = embedded.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"], ttl=60
    )
    call = Call(AuthorizeRequest(tool="send_email", args=MAIL, task_id=task.id), clock.now + 60)
    call.task, call.claims = task.state, task.claims
    assert task_gate(call) == Reason(Stage.TASK, f"task {task.id} expired")
    call.now = clock.now + 59
    assert task_gate(call) is None


def test_calls_outside_any_task_or_in_unknown_tasks_are_denied_and_recorded(
    guard: Any, store: Store, mode: str
) -> None:
    no_task = guard.authorize(None, "send_email", MAIL, workspace="acme")
    unknown = guard.authorize("task_forged", "send_email", MAIL)
    with open_task(guard) as task:  # a real task's token does not open another task
        token, proof = task.credential()  # and the proof of its key, where one is required
        borrowed = guard.authorize("task_forged", "send_email", MAIL, token=token, proof=proof)
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
    if mode == "embedded":
        # No credential proves a workspace: the records are in the store's log, not acme's,
        # though the first call named acme (a name alone would let anyone write in its log).
        log = {r.id: r for r in store.decisions(limit=10)}
        assert {log[d.decision_id].workspace for d in (no_task, unknown)} == {None}
        assert not {no_task.decision_id, unknown.decision_id} & {
            r.id for r in guard.decisions("acme")
        }
        assert log[no_task.decision_id].stage is Stage.AUTHENTICATE
        assert log[unknown.decision_id].effect is Effect.DENY
        assert log[borrowed.decision_id].effect is Effect.DENY
    else:  # a remote Guard denies them without asking (no credential; another task's token)
        assert no_task.decision_id == unknown.decision_id == borrowed.decision_id == ""
        assert task.id not in {r.task_id for r in store.decisions(limit=10)}  # nothing decided


def test_ended_task_can_no_longer_act(guard: Any) -> None:
    task = open_task(guard)
    task.end()
    assert deny_stage(task.authorize("send_email", MAIL))[:2] == (Effect.DENY, Stage.AUTHENTICATE)


def test_no_active_policies_means_deny(open_guard: OpenGuard, home: Path) -> None:
    with open_guard(home) as g:
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
    embedded: Guard,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    function: str,
    stage: Stage,
) -> None:
    # Embedded only: it injects a fault into a stage of the in-process pipeline.
    def boom(*_: Any) -> None:
        raise RuntimeError("injected fault at /srv/tether/secret.key")

    with open_task(embedded) as task:
        assert task.authorize("send_email", MAIL).allowed
        monkeypatch.setattr(f"tether.pdp.{function}", boom)
        d = task.authorize("send_email", MAIL)
    assert d.effect is Effect.DENY
    assert d.reasons[0].stage is stage
    # The caller learns the stage and the kind of failure; its text (which can be anything:
    # a path here) goes to the operator's log, under the decision's id.
    assert d.reasons[0].text == (
        f"{stage.value} stage failed, so the call is denied: "
        "RuntimeError (the details are in Tether's log)"
    )
    assert any(r.id == d.decision_id for r in embedded.store.decisions(limit=3))
    logged = [r for r in caplog.records if d.decision_id in r.getMessage()]
    assert logged and "secret.key" in str(logged[0].exc_info[1] if logged[0].exc_info else "")


def test_a_decision_that_cannot_be_recorded_is_a_deny(
    embedded: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Embedded only: it injects a fault into the in-process audit log.
    def full_disk(*_: Any, **__: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full: /var/lib/tether/tether.db")

    with open_task(embedded) as task:
        monkeypatch.setattr(embedded.store.audit, "insert", full_disk)
        d = task.authorize("send_email", MAIL)
        state = task.state
    assert deny_stage(d) == (
        Effect.DENY,
        Stage.RECORD,
        "the decision could not be recorded, so the call is denied: "
        "OperationalError (the details are in Tether's log)",
    )
    # Its task's event is written in the record's transaction, so the call did not count in
    # the task either (it was not made): what a task remembers is always what was recorded.
    assert (state.calls, state.calls_by_tool.get("send_email", 0)) == (0, 0)
    assert not state.history


@pytest.mark.sqlite
def test_a_workspace_whose_stored_state_does_not_compile_denies(
    embedded: Guard, home: Path
) -> None:
    # Embedded only: it writes to the SQLite file behind the Guard's back.
    with open_task(embedded) as task:
        db = sqlite3.connect(home / "tether.db")
        with db:
            db.execute(
                "update tools set args_schema = '{\"type\": \"string\"}' where name = 'send_email'"
            )
            db.execute("update workspaces set revision = revision + 1")
        embedded._views.poll()
        effect, stage, text = deny_stage(task.authorize("send_email", MAIL))
    assert (effect, stage) == (Effect.DENY, Stage.WORKSPACE)
    assert "workspace 'acme' cannot be loaded" in text and "must describe an object" in text


@pytest.mark.sqlite
def test_an_output_reported_while_the_workspace_cannot_load_still_labels_the_task(
    embedded: Guard, home: Path
) -> None:
    # Embedded only: it writes to the SQLite file behind the Guard's back.
    with open_task(embedded) as task:
        d = task.authorize("read_file", {"path": "/x"})
        db = sqlite3.connect(home / "tether.db")
        with db:
            db.execute('update tools set args_schema = \'{"type": "string"}\'')
            db.execute("update workspaces set revision = revision + 1")
        embedded._views.poll()
        task.report(d, "mail bob@acme.com")  # read_file is trusted, but nothing says so now
    assert task.state.labels == {"untrusted", "pii"}


def test_a_policy_stage_that_reaches_no_verdict_is_a_deny(
    embedded: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Embedded only: it replaces a stage of the in-process pipeline.
    monkeypatch.setattr("tether.pdp.apply_policy", lambda call: None)  # passes, decides nothing
    with open_task(embedded) as task:
        d = task.authorize("send_email", MAIL)
    assert deny_stage(d) == (Effect.DENY, Stage.POLICY, "no verdict was reached")


def test_task_counts_its_decisions(guard: Any) -> None:
    with open_task(guard) as task:
        task.authorize("send_email", MAIL)
        task.authorize("read_file", {"path": "/x"})
        task.authorize("send_email", {"to": "eve@evil.io"})
        assert task.state.calls == 3
        assert (task.state.allowed, task.state.denied) == (2, 1)
        assert task.state.calls_by_tool == {"send_email": 1, "read_file": 1}  # allowed calls
        assert task.state.calls_by_effect == {"external": 1, "read": 1}
        d = task.authorize("send_email", MAIL)
    record = recorded(guard, d.decision_id, task_id=task.id)
    assert record.context is not None and json.loads(record.context)["task"]["calls"] == 3


def test_store_reopens_with_every_decision(guard: Any, home: Path) -> None:
    with open_task(guard) as task:
        ids = {task.authorize("send_email", MAIL).decision_id for _ in range(20)}
    store = Store.at_home(home)
    try:
        assert ids <= {r.id for r in store.decisions(limit=100)}
    finally:
        store.close()


def test_a_failure_outside_every_stage_is_still_a_deny(
    embedded: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Embedded only: it injects a fault into the in-process pipeline's answer.
    def broken(*_: Any) -> None:
        raise MemoryError("no room to answer")

    with open_task(embedded) as task:
        monkeypatch.setattr("tether.pdp._answer", broken)
        d = task.authorize("send_email", MAIL)
    assert deny_stage(d) == (
        Effect.DENY,
        Stage.ANSWER,
        "the decision failed, so the call is denied: MemoryError (the details are in Tether's log)",
    )
    (stored,) = [r for r in embedded.store.decisions(task_id=task.id) if r.id == d.decision_id]
    assert (stored.effect, stored.stage) == (Effect.DENY, Stage.ANSWER)
