"""The public Guard contract (issue #2's example), the decorator, and the control plane.

Every test runs twice: on an embedded Guard, and on a remote one speaking to `tether serve`
(conftest.py's `open_guard`); they use the Guard's public methods only, which both offer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import OpenGuard, acme, delegate

from tether import ApprovalRequired, Conflict, Denied, Guard, NotFound, PolicyError
from tether.errors import CatalogueError, CredentialRefused, InvalidInput
from tether.model import Effect


@pytest.fixture
def guard(open_guard: OpenGuard, home: Path) -> Iterator[Any]:
    """conftest's `acme`, on a Guard of the test's mode."""
    with open_guard(home) as g:
        acme(g)
        yield g


def test_the_documented_contract(open_guard: OpenGuard, home: Path) -> None:
    policies = home.parent / "policies" / "acme"
    policies.mkdir(parents=True)
    (policies / "mail.cedar").write_text(
        '@id("inside") @reason("inside acme")\n'
        'permit (principal, action == Action::"send_email", resource)\n'
        'when { context.args.to like "*@acme.com" };\n'
    )
    with open_guard(home) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.register_tool(
            "acme",
            "send_email",
            effects=["external"],
            sinks=["to"],
            output="trusted",
            args_schema={
                "type": "object",
                "properties": {"to": {"type": "string"}},
                "required": ["to"],
            },
        )
        version = guard.activate_policies("acme", policies)
        guard.add_user("acme", "alice")
        guard.grant("acme", user="alice", agent="coder", tools=["send_email"])
        with guard.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="Email the report to bob@acme.com",
            tools=["send_email"],
        ) as task:
            d = task.authorize("send_email", {"to": "bob@acme.com"})
            assert d.effect == "allow" and d.allowed
            assert [r.text for r in d.reasons] == ["inside acme"]
            assert d.decision_id.startswith("dec_") and d.policy_version == version
            assert d.approval_id is None
            task.report(d, "sent")
            assert task.state.executed == 1
            refused = task.authorize("send_email", {"to": "eve@evil.io"})
            assert refused.effect == "deny"
            with pytest.raises(InvalidInput, match="did not allow"):
                task.report(refused, "sent anyway")


def test_decorated_tool_runs_only_when_allowed(guard: Guard) -> None:
    sent: list[str] = []

    @guard.tool(workspace="acme", effects=["external"], sinks=["to"])
    def send_email(to: str, subject: str = "") -> str:
        sent.append(to)
        return f"sent to {to}"

    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"]
    ) as task:
        assert send_email("bob@acme.com", subject="hi") == "sent to bob@acme.com"
        with pytest.raises(Denied) as denied:
            send_email("eve@evil.io")
        with pytest.raises(ApprovalRequired) as approval:
            send_email(to="ceo@acme.com")
        assert task.state.executed == 1
    assert sent == ["bob@acme.com"]
    assert denied.value.decision.effect is Effect.DENY
    assert approval.value.decision.approver_roles == ("admin",)
    assert isinstance(approval.value, Denied)  # code that only knows Denied still stops
    assert "needs approval by admin" in str(approval.value)


def test_decorated_tool_is_denied_outside_a_task(guard: Guard, mode: str) -> None:
    @guard.tool(workspace="acme", effects=["read"], name="read_file")
    def read(path: str) -> str:
        raise AssertionError("must not run")

    with pytest.raises(Denied, match="no task") as denied:
        read("/etc/passwd")
    assert denied.value.decision.reasons[0].stage == "authenticate"
    if mode == "embedded":  # recorded; a remote Guard has no credential to send it with
        (record,) = [
            r for r in guard.store.decisions(limit=5) if r.id == denied.value.decision.decision_id
        ]
        # No credential proved a workspace: in the store's log, not in acme's.
        assert record.workspace is None and guard.decisions("acme", limit=5) == []


def test_decorated_tool_registers_its_signature_as_schema(guard: Guard) -> None:
    @guard.tool(workspace="acme", effects=["write"])
    def file_ticket(
        title: str,
        priority: Literal["low", "high"] = "low",
        tags: list[str] | None = None,
        hours: float = 1.0,
    ) -> None:
        """File a ticket."""

    (tool,) = [t for t in guard.tools("acme") if t.name == "file_ticket"]
    assert tool.description == "File a ticket."
    props = tool.args_schema["properties"]
    assert tool.args_schema["required"] == ["title"]
    assert (
        sorted(props["priority"]["enum"]) == ["high", "low"] and props["hours"]["type"] == "number"
    )
    schema = guard.check_policies("acme", {}).cedar_schema
    args = schema[""]["actions"]["file_ticket"]["appliesTo"]["context"]["attributes"]["args"]
    assert args["attributes"]["tags"] == {
        "type": "Set",
        "element": {"type": "String"},
        "required": False,
    }


def test_a_tool_that_cannot_be_typed_is_refused_before_any_policy_is_active(
    open_guard: OpenGuard, home: Path
) -> None:
    with open_guard(home) as g:
        g.add_workspace("acme")
        g.register_agent("acme", "coder", kind="coder", owner="o")
        with pytest.raises(CatalogueError, match="argument `meta`"):
            g.register_tool(
                "acme",
                "t",
                effects=["read"],
                args_schema={"type": "object", "properties": {"meta": {"type": "object"}}},
            )
        with pytest.raises(CatalogueError, match="also effect names"):
            g.register_tool("acme", "read", effects=["read"])
        # Nothing was stored: the workspace still takes policies and decides calls.
        g.register_tool("acme", "ok", effects=["read"])
        g.activate_policies("acme", {"p.cedar": "permit (principal, action, resource);"})
        delegate(g, "acme", "coder", users=("u",))
        with g.task(workspace="acme", agent="coder", user="u", request="r", tools=["ok"]) as t:
            assert t.authorize("ok", {}).allowed


def test_untyped_parameters_are_refused_at_registration(guard: Guard) -> None:
    with pytest.raises(CatalogueError, match="argument `payload`"):

        @guard.tool(workspace="acme", effects=["write"])
        def store(payload):  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(CatalogueError, match=r"\*args"):

        @guard.tool(workspace="acme", effects=["write"])
        def spread(*items: str) -> None:
            pass


def test_async_tools_are_guarded(guard: Guard) -> None:
    @guard.tool(workspace="acme", effects=["read"], name="read_file")
    async def read(path: str) -> str:
        await asyncio.sleep(0)
        return f"contents of {path}"

    async def agent() -> str:
        return await read("/repo/a.py")

    with guard.task(workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]):
        assert asyncio.run(agent()) == "contents of /repo/a.py"
    with pytest.raises(Denied):
        asyncio.run(agent())


SECRET = "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
READ_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}


def test_a_tool_cannot_stream_its_output(guard: Guard) -> None:
    """A generator's content comes after the call was reported (even after its task ended),
    unread by any detector: such a tool is refused when it is registered."""
    with pytest.raises(TypeError, match="return the content"):

        @guard.tool(workspace="acme", effects=["read"], name="read_file")
        def read(path: str) -> Iterator[str]:
            yield SECRET

    with pytest.raises(TypeError, match="return the content"):

        @guard.tool(workspace="acme", effects=["read"], name="read_file")
        async def read_async(path: str) -> AsyncIterator[str]:
            yield SECRET

    class Reader:
        async def __call__(self, path: str) -> AsyncIterator[str]:
            yield SECRET

    with pytest.raises(TypeError, match="return the content"):
        guard.tool(workspace="acme", effects=["read"], name="read_file", args_schema=READ_SCHEMA)(
            Reader()
        )


def test_what_an_awaitable_resolves_to_is_reported(guard: Guard) -> None:
    """A tool that hands back an awaitable (a sync function returning a coroutine, an object
    whose __call__ is async) is reported with what the agent reads once it awaits it."""

    async def fetch() -> str:
        return SECRET

    @guard.tool(workspace="acme", effects=["read"], name="read_file")
    def read(path: str) -> Awaitable[str]:
        return fetch()

    class Reader:
        async def __call__(self, path: str) -> str:
            return SECRET

    read_object = guard.tool(
        workspace="acme", effects=["read"], name="read_file", args_schema=READ_SCHEMA
    )(Reader())

    for tool in (read, read_object):
        with guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
        ) as task:
            assert asyncio.run(_awaited(tool("/repo/a.py"))) == SECRET
            assert "secret" in task.state.labels and "unscanned" not in task.state.labels


async def _awaited(result: Any) -> Any:
    return await result


def test_a_stream_returned_is_reported_as_unread(guard: Guard) -> None:
    async def chunks() -> AsyncIterator[str]:
        yield SECRET

    @guard.tool(workspace="acme", effects=["read"], name="read_file")
    def read(path: str) -> AsyncIterator[str]:
        return chunks()

    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
    ) as task:
        read("/repo/a.py")
        assert "unscanned" in task.state.labels  # what it will yield is unknown, not clean


def test_an_async_tool_decides_and_reports_off_the_event_loop(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision (a remote Guard's HTTP round trip, say) must not stall the agent's other
    coroutines: here the decision waits for another coroutine to run, which it can only do
    while the decision is in flight off the loop."""
    released = threading.Event()
    threads: dict[str, int] = {}

    @guard.tool(workspace="acme", effects=["read"], name="read_file")
    async def read(path: str) -> str:
        return f"contents of {path}"

    async def agent() -> str:
        call = asyncio.create_task(read("/repo/a.py"))
        await asyncio.sleep(0)  # the call starts, and asks for its decision
        released.set()  # this coroutine runs while the decision is in flight
        return await call

    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
    ) as task:
        decide, report = guard.authorize, task.report

        def authorize(*args: Any, **kwargs: Any) -> Any:
            threads["authorize"] = threading.get_ident()
            if not released.wait(timeout=10):  # a safety net: only a blocked loop gets here
                raise AssertionError("the event loop was blocked while the call was decided")
            return decide(*args, **kwargs)

        def reported(*args: Any, **kwargs: Any) -> Any:
            threads["report"] = threading.get_ident()
            return report(*args, **kwargs)

        monkeypatch.setattr(guard, "authorize", authorize)
        monkeypatch.setattr(task, "report", reported)
        assert asyncio.run(agent()) == "contents of /repo/a.py"
        assert task.state.executed == 1
    loop_thread = threading.get_ident()
    assert threads["authorize"] != loop_thread and threads["report"] != loop_thread


def test_task_start_refuses_what_cannot_work(guard: Guard, mode: str) -> None:
    # Over HTTP, what the token endpoint refuses (a tool the user has not delegated, a
    # suspended agent) is a CredentialRefused: the service says why only once the agent has
    # proven itself. In process the Guard checks first, and says NotFound or InvalidInput.
    refused = mode == "remote"
    base = {
        "workspace": "acme",
        "agent": "coder",
        "user": "alice",
        "request": "",
        "tools": ["send_email"],
    }
    with pytest.raises(NotFound, match="workspace 'nowhere'"):
        guard.task(**{**base, "workspace": "nowhere"})
    with pytest.raises(NotFound, match="agent 'ghost'"):
        guard.task(**{**base, "agent": "ghost"})
    with pytest.raises(CredentialRefused if refused else NotFound, match="wire_money"):
        guard.task(**{**base, "tools": ["wire_money"]})
    with pytest.raises(InvalidInput, match="ttl"):
        guard.task(**base, ttl=0)
    guard.suspend_agent("acme", "coder")
    with pytest.raises(CredentialRefused if refused else InvalidInput, match="suspended"):
        guard.task(**base)


def test_task_ends_when_its_block_exits(guard: Guard) -> None:
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
    ) as task:
        assert task.state.status == "open"
    assert task.state.status == "ended"
    after = task.authorize("read_file", {"path": "/x"})
    assert after.effect is Effect.DENY and "ended" in after.reason
    assert guard.decisions("acme", limit=1)[0].id == after.decision_id  # and recorded


def test_changing_a_tool_that_breaks_active_policies_is_refused(guard: Guard) -> None:
    before = guard.workspace("acme")
    with pytest.raises(PolicyError, match="changing tool\\(s\\) send_email would break"):
        guard.register_tool(
            "acme",
            "send_email",
            effects=["external"],
            args_schema={"type": "object", "properties": {}},
        )
    after = guard.workspace("acme")
    assert before == after  # nothing written, not even a revision


def test_registering_a_tool_revalidates_and_reactivates_the_bundle(guard: Guard) -> None:
    before = guard.workspace("acme")
    guard.register_tool("acme", "list_files", effects=["read"])
    after = guard.workspace("acme")
    assert after.active_policy_version != before.active_policy_version  # schema is in the version
    guard.grant("acme", user="a", agent="coder", tools=["list_files"])
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["list_files"]
    ) as task:
        assert task.authorize("list_files").allowed  # the existing group-scoped permit covers it


def test_re_registering_the_same_tool_changes_nothing(guard: Guard) -> None:
    before = guard.workspace("acme")
    guard.register_tool(
        "acme",
        "read_file",
        effects=["read"],
        args_schema={"type": "object", "properties": {"path": {"type": "string"}}},
    )
    assert guard.workspace("acme") == before


def test_concurrent_catalogue_changes_all_land(guard: Guard) -> None:
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            guard.register_tool("acme", f"tool_{i}", effects=["read"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = {t.name for t in guard.tools("acme")}
    assert {f"tool_{i}" for i in range(4)} <= names
    bundle = guard.check_policies("acme", {})
    assert {f"tool_{i}" for i in range(4)} <= set(bundle.groups)


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda g: g.add_workspace("Acme Corp"), InvalidInput, "workspace name"),
        (lambda g: g.add_workspace("acme"), Conflict, "already exists"),
        (lambda g: g.register_agent("acme", "x", kind="coder", owner=" "), InvalidInput, "owner"),
        (
            lambda g: g.register_agent("nowhere", "x", kind="c", owner="o"),
            NotFound,
            "does not exist",
        ),
        (
            lambda g: g.register_tool("acme", "t", effects=["read"], output="maybe"),
            InvalidInput,
            "trusted",
        ),
        (lambda g: g.suspend_agent("acme", "ghost"), NotFound, "not registered"),
    ],
)
def test_bad_administration_is_a_clear_error(
    guard: Guard, call: Callable[[Guard], object], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as info:
        call(guard)
    assert fragment in str(info.value)


def test_many_threads_deciding_in_one_task(guard: Guard) -> None:
    """The embedded Guard is shared by an agent's threads: every decision is recorded, counted
    and answered correctly."""
    results: list[tuple[str, Effect]] = []
    lock = threading.Lock()

    def work(task_handle: object, n: int) -> None:
        for i in range(n):
            to = "bob@acme.com" if i % 2 else "eve@evil.io"
            d = task_handle.authorize("send_email", {"to": to})  # type: ignore[attr-defined]
            with lock:
                results.append((to, d.effect))

    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as task:
        threads = [threading.Thread(target=work, args=(task, 50)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert task.state.calls == 200
    assert len(results) == 200
    assert all((effect is Effect.ALLOW) == (to == "bob@acme.com") for to, effect in results)
    recorded = guard.decisions("acme", task_id=task.id, limit=500)
    assert len(recorded) == 200


def test_what_the_store_cannot_keep_is_refused_by_name_not_by_the_database(guard: Any) -> None:
    """PostgreSQL refuses a person's name over 255 characters or a risk tier over 16 (SQLite
    keeps them): found by schema fuzzing as 500s. Every way in refuses them first, saying why."""
    long_name = "a" * 256
    with pytest.raises(InvalidInput, match="owner"):
        guard.register_agent("acme", "scribe", kind="coder", owner=long_name)
    with pytest.raises(InvalidInput, match="255"):
        guard.add_user("acme", long_name)
    with pytest.raises(InvalidInput, match="16"):
        guard.register_tool("acme", "archive", effects=["write"], risk_tier="x" * 17)
    with pytest.raises(InvalidInput, match="255"):
        guard.task(
            workspace="acme", agent="coder", user=long_name, tools=["read_file"], request="x"
        )
    # at the limits, kept as given
    assert guard.add_user("acme", "b" * 255).name == "b" * 255
    guard.register_tool("acme", "archive", effects=["write"], risk_tier="x" * 16)


def test_an_admin_tokens_holder_is_held_to_the_same_rule(starter: Guard) -> None:
    from tether.server import admin_tokens  # noqa: PLC0415 - the service's, not the Guard's

    with pytest.raises(InvalidInput, match="255"):
        admin_tokens.issue(starter.store, name="a" * 256, roles={"acme": ["admin"]},
                           lifetime=60, now=time.time())  # fmt: skip
