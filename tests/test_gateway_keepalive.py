"""The gateway's session with a streamable HTTP upstream keeps its connection across tool calls
(tether/gateway/keepalive.py): the MCP client alone opens one per call, which costs latency on
every call and leaves a socket in TIME-WAIT behind each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from served import serve_in_thread
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tether.gateway import keepalive
from tether.gateway.config import UpstreamSpec
from tether.gateway.upstream import Upstream

CALLS = 10


ECHO = types.Tool(name="echo", input_schema={"type": "object"})


async def _list(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[ECHO])


async def _echo(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    text = str((params.arguments or {}).get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


class _CountingPosts:
    """Records the client address (so the TCP connection) of every POST it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.connections: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.connections.append(tuple(scope["client"]))
        await self.app(scope, receive, send)


@pytest.fixture
def upstream() -> Iterator[tuple[str, _CountingPosts]]:
    server = Server("echo", on_list_tools=_list, on_call_tool=_echo)
    manager = StreamableHTTPSessionManager(app=server)  # answers calls with event streams
    counting = _CountingPosts(StreamableHTTPASGIApp(manager))

    def make_app(_url: str) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with manager.run():
                yield

        return Starlette(
            routes=[Route("/mcp", counting, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
        )

    url, _, stop = serve_in_thread(make_app)
    try:
        yield url + "/mcp", counting
    finally:
        stop()


async def _call_echo(url: str, calls: int) -> list[str]:
    answers = []
    async with anyio.create_task_group() as tasks:
        upstream = Upstream("echo", UpstreamSpec(url=url, timeout=10))
        await upstream.start(tasks)
        for i in range(calls):
            result = await upstream.request(
                "tools/call echo", lambda s, i=i: s.call_tool("echo", {"text": f"call {i}"})
            )
            answers.append(result.content[0].text)
        upstream.stop()
    return answers


def test_tool_calls_to_an_http_upstream_share_one_connection(
    upstream: tuple[str, _CountingPosts],
) -> None:
    url, counting = upstream
    answers = anyio.run(_call_echo, url, CALLS)
    assert answers == [f"call {i}" for i in range(CALLS)]
    posts = counting.connections[-CALLS:]  # the calls', after the handshake's
    assert len(posts) == CALLS
    assert len(set(posts)) <= 2, f"{len(set(posts))} connections for {CALLS} calls"


def test_without_reading_to_the_end_each_call_would_open_a_connection(
    upstream: tuple[str, _CountingPosts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the transport prevents, so the test above can fail: with the plain transport the
    MCP client's early close costs the connection."""
    plain = keepalive.httpx2.AsyncHTTPTransport.handle_async_request
    monkeypatch.setattr(keepalive.KeepAliveTransport, "handle_async_request", plain)
    url, counting = upstream
    anyio.run(_call_echo, url, CALLS)
    assert len(set(counting.connections[-CALLS:])) == CALLS
