"""The gateway's hot path (tether/gateway/hot_path.py, forward.py): a plain `tools/call` on an
established session is decided, made and reported without the SDK's session machinery on
either side, and answers exactly what the SDK's path answers; everything else still goes
through the SDK.

The upstreams are the SDK's own server in this process, one answering with event streams and
one with JSON, with tools that log, ask their client things mid-call, or fail."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import mcp_types as types
import pytest
from gateway_env import FIXTURES, Gateway, coder_task, gateway, prepare
from hypothesis import given
from hypothesis import strategies as st
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INVALID_PARAMS
from served import serve_in_thread
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tether.gateway import forward, http, proxy
from tether.gateway.client_auth import TaskAuth
from tether.gateway.hot_path import HotPath, SdkSessions, _jsonrpc, _tools_call
from tether.gateway.proxy import Gateway as ProxyGateway
from tether.gateway.relay import legacy
from tether.model import Effect
from tether.sdk.handle import TaskHandleBase

HANG_SECONDS = 6  # longer than the gateway waits for an upstream here (`timeout` in _config)
STOPPED: list[types.RequestId] = []  # the `hangs` calls an upstream was told to stop
PERMIT_ALL = {"all.cedar": '@id("all")\npermit (principal, action, resource);'}
VERSION = "2025-11-25"
LEAKED = "AKIAIOSFODNN7EXAMPLE"  # an AWS access key id, of AWS's documentation
TOOLS = [
    types.Tool(
        name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        description="Say the text back.",
    ),
    types.Tool(  # not destructive, so the user the agent acts for may approve it
        name="note",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        description="Write the text down.",
        annotations=types.ToolAnnotations(destructive_hint=False),
    ),
    types.Tool(
        name="elicits",
        input_schema={"type": "object", "properties": {"leak": {"type": "boolean"}}},
        description="Ask the person for a name, mid-call (with a key in the question if `leak`).",
    ),
    *(
        types.Tool(name=name, input_schema={"type": "object"}, description=about)
        for name, about in [
            ("chatty", "Log twice, then answer."),
            ("leaky", "Log a key, then answer without it."),
            ("asks", "Ping the client and ask it for its roots, mid-call."),
            ("refuses", "Answer with a JSON-RPC error."),
            ("hangs", "Answer after longer than the gateway waits."),
            ("samples", "Ask the client's model about a key, mid-call; answer without it."),
        ]
    ),
]


async def _list(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def _call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    if params.name == "chatty":
        for n in (1, 2):
            with legacy():  # deprecated from 2026-07-28, still what clients use
                await ctx.session.send_log_message(
                    "info", f"step {n}", "chatty", related_request_id=ctx.request_id
                )
        text = "done"
    elif params.name == "leaky":
        with legacy():
            await ctx.session.send_log_message(
                "info", f"using key={LEAKED}", "leaky", related_request_id=ctx.request_id
            )
        text = "done"
    elif params.name == "asks":
        await ctx.session.send_request(types.PingRequest(), types.EmptyResult, metadata=related)
        try:
            await ctx.session.send_request(
                types.ListRootsRequest(), types.ListRootsResult, metadata=related
            )
            roots = "answered"
        except MCPError as exc:
            roots = f"refused ({exc.error.message})"
        text = f"ping answered; roots {roots}"
    elif params.name == "elicits":
        leak = f" (for key={LEAKED})" if args.get("leak") else ""
        asked = await ctx.session.elicit_form(
            f"Your name?{leak}",
            {"type": "object", "properties": {"name": {"type": "string"}}},
            related_request_id=ctx.request_id,
        )
        text = f"{asked.action}: {(asked.content or {}).get('name')}"
    elif params.name == "samples":
        question = types.TextContent(type="text", text=f"Which service is key={LEAKED} for?")
        with legacy():
            sampled = await ctx.session.create_message(
                [types.SamplingMessage(role="user", content=question)],
                max_tokens=20,
                related_request_id=ctx.request_id,
            )
        text = f"sampled: {cast(types.TextContent, sampled.content).text}"
    elif params.name == "refuses":
        raise MCPError(INVALID_PARAMS, "no such thing here")
    elif params.name == "hangs":
        try:
            await anyio.sleep(HANG_SECONDS)
        except anyio.get_cancelled_exc_class():  # told to stop (notifications/cancelled)
            STOPPED.append(ctx.request_id)
            raise
        text = "too late"
    else:
        text = str(args.get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


class _Forgetful:
    """The upstream's door: while `forget` is set, it answers every request on a session 404,
    as an upstream restarted (and so without its sessions) does; while `deaf` is set, it never
    answers a notice that a call is cancelled, and waits for its sender to give up (`deafened`
    says "held" as one comes, "given up" as its sender goes). It keeps every request's headers
    (`seen`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.forget = self.deaf = False
        self.seen: list[dict[bytes, bytes]] = []
        self.deafened: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        self.seen.append(headers)
        if self.forget and b"mcp-session-id" in headers:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.deaf and scope["method"] == "POST":
            body, more = b"", True
            while more:
                message = await receive()
                body, more = body + message.get("body", b""), message.get("more_body", False)
            if b'"notifications/cancelled"' in body:
                self.deafened.append("held")
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.deafened.append("given up")
                return
            receive = _once(body, receive)
        await self.app(scope, receive, send)


def _once(body: bytes, receive: Receive) -> Receive:
    """`receive` with a body already read given back first."""
    given = False

    async def again() -> Any:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


@pytest.fixture
def upstreams() -> Iterator[dict[str, tuple[str, _Forgetful]]]:
    """Two upstreams: `sse` answers calls with event streams (the SDK's default), `json` with
    one JSON message."""
    served: dict[str, tuple[str, _Forgetful]] = {}
    stops = []
    STOPPED.clear()
    for name, json_response in (("sse", False), ("json", True)):
        manager = StreamableHTTPSessionManager(
            app=Server(name, on_list_tools=_list, on_call_tool=_call), json_response=json_response
        )
        door = _Forgetful(StreamableHTTPASGIApp(manager))

        def make_app(_url: str, manager: Any = manager, door: Any = door) -> Starlette:
            @asynccontextmanager
            async def lifespan(_: Starlette) -> AsyncIterator[None]:
                async with manager.run():
                    yield

            route = Route("/mcp", door, methods=["GET", "POST", "DELETE"])
            return Starlette(routes=[route], lifespan=lifespan)

        url, _, stop = serve_in_thread(make_app)
        served[name] = (url + "/mcp", door)
        stops.append(stop)
    try:
        yield served
    finally:
        for stop in stops:
            stop()


def _config(
    folder: Path, upstreams: dict[str, tuple[str, _Forgetful]], *, elicit: bool = False
) -> Path:
    """The gateway in front of `upstreams`, and of `odd`, a command (tests/fixtures), which
    writes the calls it is told to stop in `odd-stopped` there."""
    config = folder / "gateway.yaml"
    lines = ["workspace: acme", f"approvals: {{elicit: {str(elicit).lower()}}}", "upstreams:"]
    for name, (url, _) in upstreams.items():
        lines += [f"  {name}:", f"    url: {url}", "    timeout: 5"]
        lines += ["    headers: {Authorization: Bearer upstream-secret}"]
    odd = [sys.executable, FIXTURES / "mcp_upstream.py", folder / "odd-stopped"]
    lines += ["  odd:", f"    command: [{', '.join(map(str, odd))}]"]
    config.write_text("\n".join(lines) + "\n")
    return config


class _Raw:
    """An agent speaking the streamable HTTP transport by hand, so what the gateway answers
    (JSON or an event stream) can be seen."""

    def __init__(self, url: str, task: Any, capabilities: dict[str, Any] | None = None) -> None:
        self.url, self.task = url, task
        self.session: str | None = None
        self.ids = iter(range(1, 1000))
        opened = self.post(
            "initialize",
            {
                "protocolVersion": VERSION,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert opened.status_code == 200, opened.text
        self.session = opened.headers["mcp-session-id"]
        self.post("notifications/initialized", None, notification=True)

    def post(
        self, method: str, params: Any, *, notification: bool = False, task: Any = None
    ) -> httpx2.Response:
        task = task or self.task
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        if not notification:
            body["id"] = next(self.ids)
        headers = {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"DPoP {task.token}",
            "DPoP": task.proof("POST", self.url, task.token),
        }
        if self.session is not None:
            headers |= {"Mcp-Session-Id": self.session, "MCP-Protocol-Version": VERSION}
        with httpx2.Client(timeout=20) as http:
            return http.post(self.url, json=body, headers=headers)

    def warm(self, tool: str, args: dict[str, Any]) -> str:
        """Call until the call is allowed (the gateway sees the policies just activated on its
        next look at the store); the content type of the answer that was."""
        deadline = time.monotonic() + 20
        while True:
            kind, messages = self.call(tool, args)
            if not messages[-1]["result"].get("isError"):
                return kind
            assert time.monotonic() < deadline, messages
            time.sleep(0.05)

    def call(self, tool: str, args: dict[str, Any], **meta: Any) -> tuple[str, list[Any]]:
        """The answer's content type and the JSON-RPC messages in it, in order."""
        params: dict[str, Any] = {"name": tool, "arguments": args}
        if meta:
            params["_meta"] = meta
        answer = self.post("tools/call", params)
        assert answer.status_code == 200, answer.text
        kind = answer.headers["content-type"].split(";")[0]
        if kind == "application/json":
            return kind, [answer.json()]
        data = [line[5:].strip() for line in answer.text.splitlines() if line.startswith("data:")]
        return kind, [json.loads(d) for d in data if d]


@contextmanager
def _served(
    home: Path,
    upstreams: dict[str, tuple[str, _Forgetful]],
    tools: list[str],
    policies: dict[str, str] = PERMIT_ALL,
    *,
    elicit: bool = False,
) -> Iterator[tuple[Gateway, TaskHandleBase]]:
    """The gateway in front of `upstreams`, and a task of agent coder with `tools`."""
    guard = prepare(home)
    with gateway(home, _config(home.parent, upstreams, elicit=elicit), guard, policies) as gw:
        task = coder_task(guard, tools)
        try:
            yield gw, task
        finally:
            task.end()
    guard.close()


def _text(message: dict[str, Any]) -> str:
    return " ".join(c["text"] for c in message["result"]["content"])


def test_a_plain_call_on_a_served_session_takes_the_hot_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """The session's first call opens its upstream sessions through the SDK (an event
    stream); the next ones are answered in JSON by the hot path: decided, made and reported
    all the same, whichever kind of answer the upstream gives."""
    with _served(home, upstreams, ["sse.echo", "json.echo"]) as (gw, task):
        agent = _Raw(gw.url, task)
        assert agent.warm("sse.echo", {"text": "first"}) == "text/event-stream"
        before = gw.server_guard.task_state(task.id).executed
        kinds = []
        for n, tool in enumerate(["sse.echo", "sse.echo", "json.echo", "json.echo"]):
            kind, [answer] = agent.call(tool, {"text": f"call {n}"})
            kinds.append(kind)
            assert _text(answer) == f"call {n}" and not answer["result"].get("isError")
        # The first call opened the agent session's upstream sessions; later ones, even to
        # another upstream (whose session is opened then), take the hot path.
        assert kinds == ["application/json"] * 4
        state = gw.server_guard.task_state(task.id)
        assert [s.tool for s in list(state.history)[-4:]] == [
            "sse.echo",
            "sse.echo",
            "json.echo",
            "json.echo",
        ]
        assert all(s.effect is Effect.ALLOW for s in list(state.history)[-4:])
        assert state.executed == before + 4  # every result was reported to the task


def test_upstreams_get_the_gateways_credentials_never_the_agents_token(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """As the MCP authorization specification requires of a proxy: every request to an
    upstream, on the SDK's path (opening the session) and on the hot path, carries the
    gateway's own credentials for it, and neither the agent's token nor its proof."""
    with _served(home, upstreams, ["sse.echo", "json.echo"]) as (gw, task):
        token = task.token
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        hot = [agent.call(tool, {"text": "hot"})[0] for tool in ("sse.echo", "json.echo")]
        assert hot == ["application/json"] * 2
    seen = [h for _, door in upstreams.values() for h in door.seen]
    assert len(seen) >= 4
    assert all(h.get(b"authorization") == b"Bearer upstream-secret" for h in seen)
    assert not any(b"dpop" in h or token.encode() in b" ".join(h.values()) for h in seen)


def test_an_upstream_that_hangs_fails_the_hot_call_closed_and_the_next_call_goes_on(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    with _served(home, upstreams, ["sse.echo", "sse.hangs"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        kind, [answer] = agent.call("sse.hangs", {})
        assert kind == "application/json" and answer["result"]["isError"]
        assert "did not answer tools/call hangs within 5 s" in _text(answer)
        _told_to_stop(1)  # the upstream, too, stops the call the gateway gave up on
        kind, [answer] = agent.call("sse.echo", {"text": "still here"})
        assert kind == "application/json" and _text(answer) == "still here"


def _told_to_stop(calls: int, *, posted: bool = True) -> None:
    """Wait until the upstream has stopped that many `hangs` calls on being told to (less time
    than one takes to end by itself). `posted`: each of them a call the gateway posted itself,
    else one the SDK's client session made (an id of its own, a number)."""
    deadline = time.monotonic() + HANG_SECONDS / 2
    while len(STOPPED) < calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(STOPPED) == calls, STOPPED
    assert all(str(request_id).startswith("tether-") == posted for request_id in STOPPED)


def test_a_denied_call_on_the_hot_path_never_reaches_the_upstream(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    policies = {
        "p.cedar": """
@id("all")
permit (principal, action, resource);

@id("no-secrets")
@reason("no secrets go upstream")
forbid (principal, action == Action::"sse.echo", resource)
when { context.args has text && context.args.text like "*AKIA*" };
"""
    }
    with _served(home, upstreams, ["sse.echo"], policies) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        kind, [answer] = agent.call("sse.echo", {"text": "AKIAIOSFODNN7EXAMPLE"})
        assert kind == "application/json"
        result = answer["result"]
        assert result["isError"] and "no secrets go upstream" in result["content"][0]["text"]
        assert result["_meta"]["tether/decision"]["effect"] == "deny"
        state = gw.server_guard.task_state(task.id)
        assert state.executed == 1  # the denied call was not made, so nothing was reported


def test_a_replayed_hot_call_is_denied_in_its_decision_and_never_made_again(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """On the hot path the proof's one-time id is claimed in the decision's transaction, not
    at the door: the same request sent again is decided (and recorded) as a denial, and the
    upstream is not called a second time; a replay of a call to a tool not offered is
    refused as well."""
    with _served(home, upstreams, ["sse.echo"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        assert agent.session is not None
        headers = {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"DPoP {task.token}",
            "DPoP": task.proof("POST", gw.url, task.token),
            "Mcp-Session-Id": agent.session,
            "MCP-Protocol-Version": VERSION,
        }
        call = {"name": "sse.echo", "arguments": {"text": "once"}}
        unknown = {"name": "sse.nothing", "arguments": {}}
        answers = []
        with httpx2.Client(timeout=20) as http:
            for params in (call, call):
                body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}
                answers.append(http.post(gw.url, json=body, headers=headers).json()["result"])
            headers["DPoP"] = task.proof("POST", gw.url, task.token)
            for params in (unknown, unknown):
                body = {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": params}
                answers.append(http.post(gw.url, json=body, headers=headers).json()["result"])
        made, replayed, withheld, withheld_again = answers
        assert not made.get("isError") and made["content"][0]["text"] == "once"
        assert replayed["isError"] and "already used" in replayed["content"][0]["text"]
        assert replayed["_meta"]["tether/decision"]["effect"] == "deny"
        assert withheld["isError"] and "unknown tool" in withheld["content"][0]["text"]
        assert withheld_again["isError"] and "already used" in withheld_again["content"][0]["text"]
        state = gw.server_guard.task_state(task.id)
        assert state.executed == 2  # the warm-up and the first: the replay was not made


def test_notifications_during_a_hot_call_come_before_its_answer(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """What the upstream logs during the call reaches the agent on the call's own stream,
    before the result, as through the SDK."""
    with _served(home, upstreams, ["sse.chatty"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.chatty", {})
        agent = _Raw(gw.url, task)  # a new session: its first call goes through the SDK
        answers = [agent.call("sse.chatty", {}) for _ in range(2)]  # the SDK's path, the hot one
        for kind, messages in answers:
            assert kind == "text/event-stream"
            assert all(m["jsonrpc"] == "2.0" for m in messages)
            assert [m.get("method") for m in messages] == [
                "notifications/message",
                "notifications/message",
                None,
            ]
            assert [m["params"]["data"] for m in messages[:2]] == ["step 1", "step 2"]
            assert _text(messages[2]) == "done"


def test_the_official_client_takes_in_what_an_upstream_logs_during_a_hot_call(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages on a hot call's stream are JSON-RPC messages the official client reads:
    the upstream's log messages reach its logging callback, in order, before the result."""
    hot = _hot_calls(monkeypatch)
    logged: list[Any] = []

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params.data)

    async def run(gw: Gateway, task: TaskHandleBase) -> str:
        async with gw.client(task, logging_callback=log) as client:
            await _warm(client)
            result = await client.call_tool("sse.chatty", {})
            return cast(types.TextContent, result.content[0]).text

    with _served(home, upstreams, ["sse.echo", "sse.chatty"]) as (gw, task):
        assert anyio.run(run, gw, task) == "done"
    assert hot == ["sse.chatty"] and logged == ["step 1", "step 2"]


def _on_either_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], tool: str, **callbacks: Any
) -> tuple[list[set[str]], list[str]]:
    """Call `tool` on the SDK's path (a session's first call) in one task and on the hot path
    (a session's second) in another, with a client given `callbacks`: each task's labels
    after, and each result's text. Labels only rise in a task: one task for each path."""

    async def run(gw: Gateway, task: TaskHandleBase, hot_call: bool) -> tuple[set[str], str]:
        async with gw.client(task) as client:
            await _warm(client)
        async with gw.client(task, **callbacks) as client:
            if hot_call:  # a session's first call takes the SDK's path; the next, the hot one
                await client.call_tool("sse.echo", {"text": "first"})
            result = await client.call_tool(tool, {})
        text = cast(types.TextContent, result.content[0]).text
        return set(gw.server_guard.task_state(task.id).labels), text

    tools = ["sse.echo", tool]
    with _served(home, upstreams, tools) as (gw, sdk_task):
        hot_task = coder_task(gw.guard, tools)
        seen = [anyio.run(run, gw, sdk_task, False), anyio.run(run, gw, hot_task, True)]
        hot_task.end()
    return [labels for labels, _ in seen], [text for _, text in seen]


def test_what_an_upstream_logs_during_a_call_is_reported_to_the_task_on_either_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent reads a call's log messages as it reads its result: a key an upstream logs
    is a secret the task has seen (its `secret` label), on the SDK's path (a session's first
    call) and on the hot path alike, though the result itself holds none."""
    hot = _hot_calls(monkeypatch)
    logged: list[Any] = []

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params.data)

    seen, texts = _on_either_path(home, upstreams, "sse.leaky", logging_callback=log)
    assert texts == ["done"] * 2
    assert hot.count("sse.leaky") == 1  # the second task's
    assert logged == [f"using key={LEAKED}"] * 2
    assert "secret" in seen[0] and "secret" in seen[1], seen


def test_what_a_sub_agent_read_through_the_gateway_counts_in_the_task_that_delegated_to_it(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner delegates to the coder; a key an upstream logs during the coder's call
    (on the hot path, reported on the gateway's event loop) labels the planner's task too,
    and the planner's next call through the gateway is decided on it."""
    hot = _hot_calls(monkeypatch)
    tools = ["sse.echo", "sse.leaky"]

    async def run(gw: Gateway, task: TaskHandleBase, tool: str) -> None:
        async with gw.client(task) as client:
            await _warm(client)
            assert not (await client.call_tool(tool, {})).is_error

    with _served(home, upstreams, tools) as (gw, _):
        grant = gw.guard.grant(
            "acme", user="alice", agent="planner", tools=tools, may_act=["coder"]
        )
        planner = gw.guard.task(
            workspace="acme", agent="planner", user="alice", request="", tools=tools, grant=grant.id
        )
        coder = planner.delegate("coder", tools=tools)
        anyio.run(run, gw, planner, "sse.echo")
        before = json.loads(gw.guard.decisions("acme", task_id=planner.id, limit=1)[0].context)
        anyio.run(run, gw, coder, "sse.leaky")
        anyio.run(run, gw, planner, "sse.echo")
        after = json.loads(gw.guard.decisions("acme", task_id=planner.id, limit=1)[0].context)
        coder.end()
        planner.end()
    assert hot.count("sse.leaky") == 1
    assert "secret" not in before["task"]["labels"]
    assert "secret" in after["task"]["labels"], after["task"]["labels"]


def test_what_an_upstream_asks_the_agents_model_mid_call_is_reported_to_the_task_on_either_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampling request's messages go to the agent's model: a key an upstream puts in one
    is a secret the task has seen (its `secret` label), though neither the model's answer nor
    the result holds it; on the SDK's path (a session's first call) and on the hot path."""
    hot = _hot_calls(monkeypatch)
    prompts: list[str] = []

    async def model(_context: Any, params: types.CreateMessageRequestParams) -> Any:
        prompts.append(cast(types.TextContent, params.messages[0].content).text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="AWS"), model="m"
        )

    seen, texts = _on_either_path(home, upstreams, "sse.samples", sampling_callback=model)
    assert texts == ["sampled: AWS"] * 2
    assert hot.count("sse.samples") == 1  # the second task's
    assert prompts == [f"Which service is key={LEAKED} for?"] * 2
    assert "secret" in seen[0] and "secret" in seen[1], seen


def test_what_an_upstream_asks_the_person_mid_call_is_reported_to_the_task(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An elicitation's message is shown to the agent's client, and so read: a key an upstream
    puts in one is a secret the task has seen (its `secret` label), though neither the answer
    nor the result holds it; the same call without it adds no such label."""
    hot = _hot_calls(monkeypatch)
    asked: list[str] = []

    async def person(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def run(gw: Gateway, task: TaskHandleBase, leak: bool) -> tuple[str, set[str]]:
        async with gw.client(task, elicitation_callback=person) as client:
            await _warm(client)
            result = await client.call_tool("sse.elicits", {"leak": leak})
        assert not result.is_error, result
        labels = set(gw.server_guard.task_state(task.id).labels)
        return cast(types.TextContent, result.content[0]).text, labels

    tools = ["sse.echo", "sse.elicits"]
    with _served(home, upstreams, tools) as (gw, clean_task):
        clean = anyio.run(run, gw, clean_task, False)
        leaky_task = coder_task(gw.guard, tools)
        leaky = anyio.run(run, gw, leaky_task, True)
        leaky_task.end()
    assert asked == ["Your name?", f"Your name? (for key={LEAKED})"]
    assert clean[0] == leaky[0] == "accept: Ada"
    assert hot.count("sse.elicits") == 2  # the hot path: the client offers elicitation
    assert "secret" not in clean[1] and "secret" in leaky[1], (clean[1], leaky[1])


def test_what_an_upstream_asks_mid_call_is_answered_as_the_sdk_client_answers_it(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """A ping is answered; a request the session did not offer (roots) is refused."""
    with _served(home, upstreams, ["sse.asks"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.asks", {})
        agent = _Raw(gw.url, task)  # a new session: its first call goes through the SDK
        texts = []
        for _ in range(2):
            _kind, messages = agent.call("sse.asks", {})
            texts.append(_text(messages[-1]))
        assert texts[0] == texts[1]
        assert texts[1].startswith("ping answered; roots refused")


def test_an_upstreams_error_on_the_hot_path_is_the_calls_failure_reported_to_the_task(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    with _served(home, upstreams, ["sse.echo", "sse.refuses", "json.refuses"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        for tool in ("sse.refuses", "json.refuses"):
            _kind, [answer] = agent.call(tool, {})
            text = answer["result"]["content"][0]["text"]
            assert answer["result"]["isError"] and "no such thing here" in text, text
            assert "was allowed" in text
        assert gw.server_guard.task_state(task.id).executed == 3


def test_an_upstream_that_lost_the_session_fails_the_call_and_the_next_one_starts_anew(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    with _served(home, upstreams, ["sse.echo"]) as (gw, task):
        agent = _Raw(gw.url, task)
        agent.warm("sse.echo", {"text": "warm"})
        door = upstreams["sse"][1]
        door.forget = True
        _kind, [answer] = agent.call("sse.echo", {"text": "lost"})
        text = answer["result"]["content"][0]["text"]
        assert answer["result"]["isError"] and "ended the session; the call was not made" in text
        door.forget = False
        anyio.run(anyio.sleep, 1.1)  # a session gone down is opened again after a second
        _kind, [answer] = agent.call("sse.echo", {"text": "again"})
        assert _text(answer) == "again"


def test_calls_that_need_the_sdk_keep_its_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """A call that asks for progress, or a call to an upstream that is a command, is served by
    the SDK. A client that may be asked things mid-call (elicitation, sampling) is not such a
    call: with nothing to ask, its calls are answered in JSON by the hot path."""
    with _served(home, upstreams, ["json.echo", "odd.echo"]) as (gw, task):
        for offers in ({"elicitation": {}}, {"sampling": {}}):
            asking = _Raw(gw.url, task, offers)
            asking.warm("json.echo", {"text": "warm"})
            kinds = [asking.call("json.echo", {"text": "x"})[0] for _ in range(2)]
            assert kinds == ["application/json"] * 2
        plain = _Raw(gw.url, task)
        plain.warm("json.echo", {"text": "warm"})
        kind, messages = plain.call("json.echo", {"text": "p"}, progressToken="t1")
        assert kind == "text/event-stream" and _text(messages[-1]) == "p"
        kind, messages = plain.call("odd.echo", {"text": "c"})  # its upstream is a command
        assert kind == "text/event-stream" and _text(messages[-1]) == "echo: c"


def _hot_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tools of the calls the hot path takes from now on (Gateway.hot_call counted)."""
    taken: list[str] = []
    hot_call = ProxyGateway.hot_call

    async def counted(self: ProxyGateway, *args: Any, **kwargs: Any) -> types.CallToolResult:
        taken.append(args[2])
        return await hot_call(self, *args, **kwargs)

    monkeypatch.setattr(ProxyGateway, "hot_call", counted)
    return taken


def _hot_paths(monkeypatch: pytest.MonkeyPatch) -> list[HotPath]:
    """The gateway's hot path, once the gateway has started."""
    made: list[HotPath] = []
    init = HotPath.__init__

    def kept(self: HotPath, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(HotPath, "__init__", kept)
    return made


async def _warm(client: ClientSession, tool: str = "sse.echo") -> None:
    """Call until the call is allowed: the gateway sees the policies on its next look."""
    deadline = time.monotonic() + 20
    while (await client.call_tool(tool, {"text": "warm"})).is_error:
        assert time.monotonic() < deadline, "the policies never came into force"
        await anyio.sleep(0.05)


def test_an_eliciting_clients_calls_take_the_hot_path_and_what_the_upstream_asks_reaches_it(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that offers elicitation: once its session is served, its calls take the hot
    path, posted directly (forward.py), and what the upstream asks mid-call is asked of the
    client on the call's own stream; the client's reply, a POST of its own, goes back."""
    posted: list[str] = []
    post = forward.call_tool

    async def counted(*args: Any, **kwargs: Any) -> types.CallToolResult:
        posted.append(kwargs["name"])
        return await post(*args, **kwargs)

    monkeypatch.setattr(forward, "call_tool", counted)
    hot = _hot_calls(monkeypatch)
    asked: list[str] = []

    async def person(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def run(gw: Gateway, task: TaskHandleBase) -> list[str]:
        async with gw.client(task, elicitation_callback=person) as client:
            await _warm(client)
            texts = []
            for _ in range(2):
                result = await client.call_tool("sse.elicits", {})
                assert not result.is_error, result
                texts.append(cast(types.TextContent, result.content[0]).text)
            return texts

    with _served(home, upstreams, ["sse.echo", "sse.elicits"]) as (gw, task):
        texts = anyio.run(run, gw, task)
        executed = gw.server_guard.task_state(task.id).executed
    assert texts == ["accept: Ada"] * 2 and asked == ["Your name?"] * 2
    assert hot.count("sse.elicits") == 2  # both on the hot path, not the SDK's session
    assert posted.count("elicits") == 2  # and posted directly, not by the SDK's client
    assert executed >= 3  # the warm call and both asks were reported to the task


APPROVAL_POLICIES = {
    "p.cedar": """
@id("all")
permit (principal, action, resource);

@id("risky-needs-approval")
@approval("admin")
@reason("a risky note needs an admin's approval")
forbid (principal, action == Action::"sse.note", resource)
when { context.args has text && context.args.text like "*risky*" }
unless { context.approved };
"""
}


def test_an_approval_on_the_hot_path_is_asked_of_the_person_at_the_client(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that needs approval, on the hot path of a client that offers elicitation: the
    person is asked on the call's own stream; an approval lets exactly that call through (its
    proof was spent by the first decision, and is not refused as a replay by the second), a
    refusal leaves it refused, and neither answer reaches the upstream otherwise."""
    hot = _hot_calls(monkeypatch)
    asked: list[str] = []
    answers = iter(["approve", "deny"])

    async def person(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": next(answers)})

    async def run(gw: Gateway, task: TaskHandleBase) -> list[types.CallToolResult]:
        async with gw.client(task, elicitation_callback=person) as client:
            await _warm(client)
            return [await client.call_tool("sse.note", {"text": f"risky {n}"}) for n in (1, 2)]

    tools = ["sse.echo", "sse.note"]
    with _served(home, upstreams, tools, APPROVAL_POLICIES, elicit=True) as (gw, task):
        approved, denied = anyio.run(run, gw, task)
        history = list(gw.server_guard.task_state(task.id).history)
    assert hot == ["sse.note", "sse.note"]
    assert not approved.is_error and cast(types.TextContent, approved.content[0]).text == "risky 1"
    assert denied.is_error and "denied" in cast(types.TextContent, denied.content[0]).text
    assert len(asked) == 2 and all("sse.note" in a for a in asked)
    assert "risky 1" in asked[0] and "risky 2" in asked[1]
    assert [c.effect for c in history[-4:]] == [
        Effect.APPROVAL_REQUIRED,
        Effect.ALLOW,
        Effect.APPROVAL_REQUIRED,
        Effect.DENY,
    ]


def test_a_call_too_long_for_an_approval_form_is_not_asked_but_left_pending(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A form shows at most FORM_ARGUMENTS characters of a call's arguments, and *approve*
    would approve all of them: an agent could push the harmful part out of view. Such a call
    is not asked through elicitation, on either path; its approval is left pending, named in
    the error, for someone to decide where the whole call is shown."""
    hot = _hot_calls(monkeypatch)
    asked: list[str] = []

    async def person(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": "approve"})

    text = "risky " + "x" * proxy.FORM_ARGUMENTS + " and then: rm -rf / (out of view)"

    async def run(gw: Gateway, task: TaskHandleBase) -> list[types.CallToolResult]:
        async with gw.client(task, elicitation_callback=person) as client:
            await _warm(client)
        async with gw.client(task, elicitation_callback=person) as client:
            # a session's first call takes the SDK's path; the next, the hot path
            return [await client.call_tool("sse.note", {"text": text}) for _ in range(2)]

    async def again(gw: Gateway, task: TaskHandleBase) -> types.CallToolResult:
        async with gw.client(task) as client:
            return await client.call_tool("sse.note", {"text": text})

    tools = ["sse.echo", "sse.note"]
    with _served(home, upstreams, tools, APPROVAL_POLICIES, elicit=True) as (gw, task):
        pending = anyio.run(run, gw, task)
        assert hot.count("sse.note") == 1 and not asked
        for result in pending:
            meta = result.meta or {}
            approval_id = meta["tether/decision"]["approval_id"]
            said = cast(types.TextContent, result.content[0]).text
            assert result.is_error and "approval required" in said and approval_id in said
        gw.guard.approve(approval_id, approver="bob")
        made = anyio.run(again, gw, task)
    assert not made.is_error and cast(types.TextContent, made.content[0]).text == text


class _Asking:
    """An eliciting agent by hand, over one async HTTP client: a hot call to `sse.elicits`
    whose answer stream is read event by event, and replies posted as the client chooses."""

    def __init__(self, http: httpx2.AsyncClient, url: str, task: Any, session: str) -> None:
        self.http, self.url, self.task, self.session = http, url, task, session

    def headers(self, task: Any = None, proof: str | None = None) -> dict[str, str]:
        task = task or self.task
        return {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"DPoP {task.token}",
            "DPoP": proof or task.proof("POST", self.url, task.token),
            "Mcp-Session-Id": self.session,
            "MCP-Protocol-Version": VERSION,
        }

    async def reply(
        self, request_id: str, name: str, *, task: Any = None, proof: str | None = None
    ) -> httpx2.Response:
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"action": "accept", "content": {"name": name}},
        }
        return await self.http.post(self.url, json=body, headers=self.headers(task, proof))

    async def cancel(self, request_id: int, *, proof: str | None = None) -> httpx2.Response:
        body = {"jsonrpc": "2.0", "method": "notifications/cancelled"}
        body["params"] = {"requestId": request_id, "reason": "the agent gave up"}
        return await self.http.post(self.url, json=body, headers=self.headers(proof=proof))

    @asynccontextmanager
    async def call(
        self, tool: str = "sse.elicits", args: dict[str, Any] | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The call's answer, message by message."""
        body = {"jsonrpc": "2.0", "id": 77, "method": "tools/call"}
        body["params"] = {"name": tool, "arguments": args or {}}
        async with self.http.stream("POST", self.url, json=body, headers=self.headers()) as r:
            assert r.headers["content-type"].startswith("text/event-stream")

            async def messages() -> AsyncIterator[dict[str, Any]]:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line[5:])

            yield messages()


def test_a_reply_reaches_only_the_call_that_asked_on_its_own_session_and_proof(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """What a hot call asks its client is answered only by a reply on that session, from its
    task, with a proof not used before: one on another session of the same task, one with
    another task's token, and one with a spent proof are not taken; the call goes on waiting
    and takes the right reply."""

    async def run(gw: Gateway, task: TaskHandleBase, other: TaskHandleBase) -> list[Any]:
        mine = _Raw(gw.url, task, {"elicitation": {}})
        mine.warm("sse.echo", {"text": "warm"})
        elsewhere = _Raw(gw.url, task, {"elicitation": {}})
        elsewhere.warm("sse.echo", {"text": "warm"})
        assert mine.session is not None and elsewhere.session is not None
        async with httpx2.AsyncClient(timeout=20) as http:
            agent = _Asking(http, gw.url, task, mine.session)
            other_session = _Asking(http, gw.url, task, elsewhere.session)
            async with agent.call() as messages:
                asked = await anext(messages)
                assert asked["method"] == "elicitation/create" and asked["jsonrpc"] == "2.0"
                request_id = asked["id"]
                spent = task.proof("POST", gw.url, task.token)
                statuses = [
                    (await other_session.reply(request_id, "Eve")).status_code,
                    (await agent.reply(request_id, "Eve", task=other)).status_code,
                    (await agent.reply("tether-ask-0", "Eve", proof=spent)).status_code,
                    (await agent.reply(request_id, "Eve", proof=spent)).status_code,
                    (await agent.reply(request_id, "Ada")).status_code,
                ]
                answer = await anext(messages)
        return [statuses, answer]

    with _served(home, upstreams, ["sse.echo", "sse.elicits"]) as (gw, task):
        other = coder_task(gw.guard, ["sse.echo", "sse.elicits"])
        statuses, answer = anyio.run(run, gw, task, other)
        other.end()
    # Another session's reply goes to the SDK, which knows no such request; another task's
    # token is refused the session (404); an unknown id goes to the SDK and spends the proof,
    # so the right id with that proof is a replay (401); the right reply is taken (202).
    assert statuses == [202, 404, 202, 401, 202]
    assert _text(answer) == "accept: Ada"


def test_a_client_that_goes_away_while_asked_fails_only_its_own_call(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that closes its call's connection while the call waits for a person's answer
    (an approval: no upstream's deadline bounds that wait): the call stops waiting, the call
    is not made, and the session goes on serving."""
    hot_paths = _hot_paths(monkeypatch)

    async def run(gw: Gateway, task: TaskHandleBase) -> tuple[str, int, str]:
        agent = _Raw(gw.url, task, {"elicitation": {}})
        agent.warm("sse.echo", {"text": "warm"})
        assert agent.session is not None
        asking = _Asking(httpx2.AsyncClient(timeout=20), gw.url, task, agent.session)
        async with asking.http, asking.call("sse.note", {"text": "risky"}) as messages:
            asked = (await anext(messages))["method"]
            in_flight = len(hot_paths[0]._asked)
        deadline = time.monotonic() + 10
        while hot_paths[0]._asked:
            assert time.monotonic() < deadline, "the call still waits for a client gone away"
            await anyio.sleep(0.05)
        _kind, [answer] = agent.call("sse.echo", {"text": "still here"})
        return asked, in_flight, _text(answer)

    tools = ["sse.echo", "sse.note"]
    with _served(home, upstreams, tools, APPROVAL_POLICIES, elicit=True) as (gw, task):
        asked, in_flight, text = anyio.run(run, gw, task)
        notes = [c for c in gw.server_guard.task_state(task.id).history if c.tool == "sse.note"]
    assert (asked, in_flight, text) == ("elicitation/create", 1, "still here")
    assert [c.effect for c in notes] == [Effect.APPROVAL_REQUIRED]  # decided, never made


def test_a_hot_call_its_client_cancels_is_stopped_and_never_answered(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`notifications/cancelled` for a hot call, on its session, stops it and it is not
    answered (as the SDK treats a request its client cancels); the same notice on another
    session of the task, or with a proof used before, is not taken. The session goes on
    serving."""
    hot_paths = _hot_paths(monkeypatch)

    async def run(gw: Gateway, task: TaskHandleBase) -> tuple[list[int], list[Any], str]:
        agent, elsewhere = _Raw(gw.url, task), _Raw(gw.url, task)
        for raw in (agent, elsewhere):
            raw.warm("sse.echo", {"text": "warm"})
        assert agent.session is not None and elsewhere.session is not None
        answered: list[Any] = []
        async with httpx2.AsyncClient(timeout=20) as http:
            mine = _Asking(http, gw.url, task, agent.session)

            async def hanging() -> None:
                async with mine.call("sse.hangs") as messages:
                    answered.extend([m async for m in messages])

            async with anyio.create_task_group() as group:
                group.start_soon(hanging)
                while not hot_paths[0]._calls:  # the gateway is making the call
                    await anyio.sleep(0.01)
                spent = task.proof("POST", gw.url, task.token)
                other = _Asking(http, gw.url, task, elsewhere.session)
                statuses = [
                    (await other.cancel(77, proof=spent)).status_code,
                    (await mine.cancel(77, proof=spent)).status_code,  # a replayed proof
                ]
                await anyio.sleep(0.2)  # time enough for a call cancelled by either to end
                statuses += [len(hot_paths[0]._calls), len(STOPPED)]
                statuses.append((await mine.cancel(77)).status_code)
        _kind, [answer] = agent.call("sse.echo", {"text": "still here"})
        return statuses, answered, _text(answer)

    with _served(home, upstreams, ["sse.echo", "sse.hangs"]) as (gw, task):
        statuses, answered, text = anyio.run(run, gw, task)
        _told_to_stop(1)
        state = gw.server_guard.task_state(task.id)
        hangs = [c for c in state.history if c.tool == "sse.hangs"]
    # Neither the other session's notice nor one with a spent proof stopped the call, here or
    # upstream; the right one stopped it in both.
    assert statuses == [202, 401, 1, 0, 202]
    assert answered == [] and text == "still here"
    assert [c.effect for c in hangs] == [Effect.ALLOW]  # decided and made, then cancelled


def test_a_call_the_official_client_abandons_is_abandoned_upstream_on_either_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official client cancels a call it stops waiting for (`notifications/cancelled`),
    and the gateway tells the upstream in turn, as the SDK's client would: for a session's
    first call, which the SDK's path serves, and for the next, on the hot path. The notices
    carry the gateway's credentials for the upstream, never the agent's token."""
    hot = _hot_calls(monkeypatch)

    async def run(gw: Gateway, task: TaskHandleBase) -> None:
        async with gw.client(task) as client:
            await _warm(client)
        async with gw.client(task) as client:  # its first call goes through the SDK
            for calls in (1, 2):
                with anyio.move_on_after(1):
                    await client.call_tool("sse.hangs", {})
                await anyio.to_thread.run_sync(_told_to_stop, calls)

    with _served(home, upstreams, ["sse.echo", "sse.hangs"]) as (gw, task):
        anyio.run(run, gw, task)
        token = task.token
    assert hot[-1:] == ["sse.hangs"] and hot.count("sse.hangs") == 1
    seen = upstreams["sse"][1].seen
    assert all(h.get(b"authorization") == b"Bearer upstream-secret" for h in seen)
    assert not any(b"dpop" in h or token.encode() in b" ".join(h.values()) for h in seen)


def test_an_upstream_deaf_to_the_notice_that_a_call_was_abandoned_holds_nothing_up(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice goes on the side: while the upstream sits on it, the session's next call is
    made and answered; the gateway gives the notice up after CANCEL_SECONDS (5 s), and drops
    its connection."""
    hot = _hot_calls(monkeypatch)
    door = upstreams["sse"][1]

    async def run(gw: Gateway, task: TaskHandleBase) -> tuple[str, list[str]]:
        async with gw.client(task) as client:
            await _warm(client)
            door.deaf = True
            with anyio.move_on_after(0.5):
                await client.call_tool("sse.hangs", {})
            with anyio.fail_after(10):
                while not door.deafened:
                    await anyio.sleep(0.01)
            meanwhile = await client.call_tool("sse.echo", {"text": "meanwhile"})
            deafened_then = list(door.deafened)
            with anyio.fail_after(forward.CANCEL_SECONDS + 10):
                while len(door.deafened) < 2 or forward._telling:
                    await anyio.sleep(0.01)
        assert isinstance(meanwhile.content[0], types.TextContent)
        return meanwhile.content[0].text, deafened_then

    with _served(home, upstreams, ["sse.echo", "sse.hangs"]) as (gw, task):
        answered, deafened_then = anyio.run(run, gw, task)
    assert hot[-2:] == ["sse.hangs", "sse.echo"]  # both on the hot path, whose notice it is
    assert answered == "meanwhile" and deafened_then == ["held"]
    assert door.deafened == ["held", "given up"]


def test_a_call_asking_for_progress_its_client_abandons_is_abandoned_upstream_by_the_sdk(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """A call asking for progress goes upstream through the SDK's client session, which
    tells the upstream, with an id of its own, when the gateway stops waiting."""

    async def progress(*_: Any) -> None:
        pass

    async def run(gw: Gateway, task: TaskHandleBase) -> None:
        async with gw.client(task) as client:
            await _warm(client)
            with anyio.move_on_after(1):
                await client.call_tool("sse.hangs", {}, progress_callback=progress)

    with _served(home, upstreams, ["sse.echo", "sse.hangs"]) as (gw, task):
        anyio.run(run, gw, task)
        _told_to_stop(1, posted=False)


def test_a_call_to_a_command_upstream_its_client_abandons_is_abandoned_there_too(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """Calls to a command upstream take the SDK's client session, which tells the upstream
    when its caller stops waiting: the official client's cancellation reaches it."""

    async def run(gw: Gateway, task: TaskHandleBase) -> None:
        async with gw.client(task) as client:
            await _warm(client, "odd.echo")
            with anyio.move_on_after(1):
                await client.call_tool("odd.hang", {})

    with _served(home, upstreams, ["odd.echo", "odd.hang"]) as (gw, task):
        anyio.run(run, gw, task)
        stopped = home.parent / "odd-stopped"
        deadline = time.monotonic() + 10
        while not stopped.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(stopped.read_text().split()) == 1


def test_what_an_upstream_asks_on_a_direct_post_goes_to_that_calls_agent_and_no_other(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """Two agents' calls are in flight at once, each on its own session; what the upstream
    asks during each reaches the person behind that call's agent only."""
    asked: dict[str, list[str]] = {"ada": [], "bob": []}

    def person(name: str) -> Any:
        async def answer(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked[name].append(params.message)
            await anyio.sleep(0.2)  # both calls wait on their person at once
            return types.ElicitResult(action="accept", content={"name": name})

        return answer

    async def calls(gw: Gateway, task: TaskHandleBase, name: str, texts: dict[str, str]) -> None:
        async with gw.client(task, elicitation_callback=person(name)) as client:
            deadline = time.monotonic() + 20
            while (await client.call_tool("sse.echo", {"text": "warm"})).is_error:
                assert time.monotonic() < deadline, "the policies never came into force"
                await anyio.sleep(0.05)
            result = await client.call_tool("sse.elicits", {})
            texts[name] = cast(types.TextContent, result.content[0]).text

    async def run(gw: Gateway, tasks: dict[str, TaskHandleBase]) -> dict[str, str]:
        texts: dict[str, str] = {}
        async with anyio.create_task_group() as group:
            for name, task in tasks.items():
                group.start_soon(calls, gw, task, name, texts)
        return texts

    with _served(home, upstreams, ["sse.echo", "sse.elicits"]) as (gw, ada):
        bob = coder_task(gw.guard, ["sse.echo", "sse.elicits"])
        texts = anyio.run(run, gw, {"ada": ada, "bob": bob})
        bob.end()
    assert texts == {"ada": "accept: ada", "bob": "accept: bob"}
    assert asked == {"ada": ["Your name?"], "bob": ["Your name?"]}


def test_another_tasks_token_cannot_use_a_sessions_hot_path(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    with _served(home, upstreams, ["sse.echo"]) as (gw, mine):
        other = coder_task(gw.guard, ["sse.echo"])
        agent = _Raw(gw.url, mine)
        agent.warm("sse.echo", {"text": "warm"})
        params = {"name": "sse.echo", "arguments": {"text": "x"}}
        assert agent.post("tools/call", params, task=other).status_code == 404
        assert agent.post("tools/call", params).status_code == 200
        other.end()


MODERN = "2026-07-28"  # the SDK serves it per request: no handshake, no session, no owner


def _modern_call(url: str, task: Any, session_id: str, text: str) -> httpx2.Response:
    """A `tools/call` of `sse.echo` on the 2026-07-28 wire, naming `session_id`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {"name": "sse.echo", "arguments": {"text": text}, "_meta": meta}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"DPoP {task.token}",
        "DPoP": task.proof("POST", url, task.token),
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "sse.echo",
        "Mcp-Session-Id": session_id,
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    with httpx2.Client(timeout=20) as http:
        return http.post(url, json=body, headers=headers)


def test_a_protocol_version_without_sessions_is_refused_at_the_door(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """The SDK serves 2026-07-28 per request, without its check of a session's owner: there,
    another task could name a session's id and be served on its upstream sessions, or name
    made-up ids whose entries push other agents' upstream sessions out. The door refuses the
    version (400, the SDK's -32022, naming the versions served) before MCP sees it."""
    with _served(home, upstreams, ["sse.echo"]) as (gw, mine):
        agent = _Raw(gw.url, mine)
        agent.warm("sse.echo", {"text": "warm"})
        assert agent.session is not None
        held = dict(gw.app.state.gateway._connected)
        other = coder_task(gw.guard, ["sse.echo"], request="another task")
        door = upstreams["sse"][1]
        seen = len(door.seen)
        answers = [_modern_call(gw.url, other, s, "x") for s in (agent.session, "made-up")]
        for answer in answers:
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["code"] == -32022 and "2025-11-25" in error["message"]
            assert error["data"] == {
                "supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"],
                "requested": MODERN,
            }
        assert len(door.seen) == seen  # nothing reached the upstream
        assert gw.app.state.gateway._connected == held
        kind, [answer] = agent.call("sse.echo", {"text": "still mine"})
        assert kind == "application/json" and _text(answer) == "still mine"
        other.end()


def test_an_agent_session_serves_only_the_task_that_opened_it(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's own check, behind the door's: were a request of a version without
    sessions let in, its session id is not taken as a key (no entry is made for a made-up
    one); and a held agent session refuses another task's request, without re-pointing it
    at that request, even where the protocol version is not the reason."""
    with _served(home, upstreams, ["sse.echo"]) as (gw, mine):
        agent = _Raw(gw.url, mine)
        agent.warm("sse.echo", {"text": "warm"})
        assert agent.session is not None
        proxy_gateway = gw.app.state.gateway
        held = dict(proxy_gateway._connected)
        mine_held = held[agent.session]
        session_object = mine_held.session
        other = coder_task(gw.guard, ["sse.echo"], request="another task")
        door = upstreams["sse"][1]
        seen = len(door.seen)
        monkeypatch.setattr(http, "SERVED_VERSIONS", (*proxy.SERVED_VERSIONS, MODERN))
        refused = []
        for session_id in (agent.session, "made-up-1", "made-up-2"):
            answer = _modern_call(gw.url, other, session_id, "from another task")
            assert answer.status_code == 200, answer.text
            refused.append(answer.json()["result"])
        monkeypatch.setattr(proxy, "SERVED_VERSIONS", (*proxy.SERVED_VERSIONS, MODERN))
        answer = _modern_call(gw.url, other, agent.session, "from another task")
        refused.append(answer.json()["result"])
        texts = [r["content"][0]["text"] for r in refused]
        assert all(
            r["isError"] and "was not made" in t for r, t in zip(refused, texts, strict=True)
        )
        assert all(f"protocol version {MODERN} is not served" in t for t in texts[:3])
        assert "opened by another task" in texts[3]
        assert len(door.seen) == seen  # nothing reached the upstream
        assert proxy_gateway._connected == held  # no entry made, none pushed out
        assert mine_held.session is session_object and mine_held.task == mine.id
        assert not any(u._stop.is_set() for u in mine_held.upstreams.values())
        other.end()


def test_the_official_client_probing_for_a_later_version_falls_back_to_the_handshake(
    home: Path, upstreams: dict[str, tuple[str, _Forgetful]]
) -> None:
    """The official `Client`, in its default mode, first asks for 2026-07-28 (`server/
    discover`); refused at the door with the versions served, it opens a session with
    initialize, and its calls are decided and made in it."""

    async def run(gw: Gateway, task: TaskHandleBase) -> tuple[str | None, str]:
        async with (
            httpx2.AsyncClient(auth=TaskAuth(task), timeout=30) as http,
            Client(streamable_http_client(gw.url, http_client=http)) as client,
        ):
            deadline = time.monotonic() + 20
            while (result := await client.call_tool("sse.echo", {"text": "hi"})).is_error:
                assert time.monotonic() < deadline, result
                await anyio.sleep(0.05)
            return client.protocol_version, cast(types.TextContent, result.content[0]).text

    with _served(home, upstreams, ["sse.echo"]) as (gw, task):
        assert anyio.run(run, gw, task) == (VERSION, "hi")


def test_a_session_on_the_hot_path_is_held_against_idle_expiry_only_while_a_call_runs() -> None:
    """The SDK ends a session idle for its timeout; a hot call holds it like the SDK's own
    requests, and its idle time starts again afterwards (SdkSessions reads the SDK's tables)."""

    async def scenario() -> tuple[bool, bool, bool]:
        manager = StreamableHTTPSessionManager(
            app=Server("idle"), json_response=True, session_idle_timeout=0.3
        )
        app = StreamableHTTPASGIApp(manager)
        async with manager.run():
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
                opened = await http.post(
                    "/mcp",
                    json={
                        "jsonrpc": "2.0",
                        "id": 0,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": VERSION,
                            "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"},
                        },
                    },
                    headers={"Accept": "application/json, text/event-stream"},
                )
            session_id = opened.headers["mcp-session-id"]
            sessions = SdkSessions(manager)
            held = sessions.live(session_id, None)
            assert held is not None and sessions.live("nonsense", None) is None
            with sessions.held(held):
                assert held.idle_scope is not None and held.idle_scope.deadline == math.inf
                await anyio.sleep(0.6)  # past the timeout, mid-call
                during = sessions.live(session_id, None) is not None
            after_call = sessions.live(session_id, None) is not None
            await anyio.sleep(0.6)
            expired = sessions.live(session_id, None) is None
            return during, after_call, expired

    assert anyio.run(scenario) == (True, True, True)


def _call_of(body: bytes) -> tuple[str | int, str, dict[str, Any]] | None:
    """What the hot path reads a POST's body as: a plain `tools/call`, or None."""
    message = _jsonrpc(body)
    return _tools_call(message) if message is not None else None


def test_only_a_plain_tools_call_is_read_as_one() -> None:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "a.b"}}
    assert _call_of(json.dumps(body).encode()) == (7, "a.b", {})
    for changed in (
        {"method": "tools/list"},
        {"id": True},
        {"id": None},
        {"params": {"name": "a.b", "_meta": {"progressToken": 1}}},
        {"params": {"name": "a.b", "arguments": []}},
        {"params": {"name": "a.b", "extra": 1}},
        {"jsonrpc": "1.0"},
        {"extra": 1},
    ):
        assert _call_of(json.dumps(body | changed).encode()) is None, changed
    assert _call_of(b"[" + json.dumps(body).encode() + b"]") is None  # a batch
    assert _call_of(b"{not json") is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    request_id=st.one_of(st.integers(), st.text()),
    name=st.text(),
    arguments=st.dictionaries(st.text(), JSON, max_size=4),
    anything=JSON,
)
def test_the_hot_path_reads_a_call_exactly_or_leaves_it_to_the_sdk(
    request_id: int | str, name: str, arguments: dict[str, Any], anything: Any
) -> None:
    """Whatever the body, reading it never raises: a plain call is read exactly as sent, and
    anything else is not read at all (the SDK answers it)."""
    call = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    assert _call_of(json.dumps(call).encode()) == (request_id, name, arguments)
    read = _call_of(json.dumps(anything).encode())
    assert read is None or (isinstance(anything, dict) and anything.get("method") == "tools/call")


class _Answered:
    """What forward.py reads of an upstream's answer: its body, in the chunks it came in."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


LOGGED = {
    "jsonrpc": "2.0",
    "method": "notifications/message",
    "params": {"level": "info", "data": "step"},
}
ANSWER = {"jsonrpc": "2.0", "id": "tether-1", "result": {"content": []}}
STREAM = (
    b": a comment, then a priming event with no data\r\n\r\nid: 1\r\n\r\n"
    b"event: message\r\ndata: " + json.dumps(LOGGED).encode() + b"\r\n\r\n"
    b'event: other\r\ndata: {"jsonrpc": "2.0", "id": "tether-1", "result": {}}\r\n\r\n'
    b'data: {"jsonrpc": "2.0", "method": "notifications/nothing-known"}\n\n'
    b'data: {"jsonrpc": "2.0", "id": "someone-else", "result": {}}\n\n'
    b'data: {"jsonrpc": "2.0",\ndata: "id": "tether-1", "result": {"content": []}}\n\n'
)


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_an_event_stream_reads_the_same_wherever_its_chunks_are_cut(cuts: list[int]) -> None:
    """Comments, events of another type, unknown notifications and answers to other ids are
    passed over; a known notification is handed on; the answer is found, though its data
    spans two lines; however the bytes arrive."""
    points = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in pairwise(points) if b > a]
    seen: list[Any] = []

    async def notify(notification: types.ServerNotification) -> None:
        seen.append(notification.model_dump(by_alias=True, exclude_none=True))

    async def read() -> dict[str, Any]:
        answered = cast(Any, _Answered(chunks))
        return await forward._from_events(
            cast(Any, None), answered, "tether-1", {}, notify=notify, ask=None
        )

    assert anyio.run(read) == ANSWER
    assert seen == [{"method": LOGGED["method"], "params": LOGGED["params"]}]


def test_an_event_larger_than_the_sdks_limit_fails_the_call() -> None:
    huge = b"data: " + b"x" * forward.MAX_EVENT_BYTES

    async def notify(notification: types.ServerNotification) -> None:
        raise AssertionError(notification)

    async def read() -> dict[str, Any]:
        answered = cast(Any, _Answered([huge[i : i + 65536] for i in range(0, len(huge), 65536)]))
        return await forward._from_events(
            cast(Any, None), answered, "tether-1", {}, notify=notify, ask=None
        )

    with pytest.raises(MCPError, match="over 1,048,576 bytes"):
        anyio.run(read)
