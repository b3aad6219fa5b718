"""One upstream MCP server, as the gateway holds it: a client session over stdio (a command it
starts) or streamable HTTP (a URL), with the gateway's own credentials for it.

The session lives in a task of its own (an MCP transport must be entered and left in one task)
and is shared by every agent the gateway serves. Every request has a deadline: an upstream that
hangs fails that request, not the gateway. One that crashes or drops the connection is marked
down and started again by the next request that needs it, at most once per `RETRY_SECONDS`, so a
server that keeps dying is not restarted in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from tether.gateway import forward, http1
from tether.gateway.config import UpstreamSpec
from tether.gateway.keepalive import KeepAliveTransport
from tether.gateway.relay import Relay

log = logging.getLogger("tether.gateway")

RETRY_SECONDS = 1.0  # an upstream that went down is started again at most this often
Streams = tuple[Any, Any]


class UpstreamUnavailable(Exception):
    """The upstream could not be reached, crashed, or did not answer in time: the request that
    met it fails closed with this message."""


class Upstream:
    def __init__(
        self,
        name: str,
        spec: UpstreamSpec,
        *,
        tasks: TaskGroup | None = None,
        relay: Relay | None = None,
        poster: http1.Pool | None = None,
        on_list_changed: Callable[[Upstream], Awaitable[None]] | None = None,
        errlog: TextIO | None = None,
    ) -> None:
        """`tasks`: where the session's task runs (`start` gives it too); `relay`: the agent
        session this upstream session serves (relay.py), or None for the gateway's own;
        `poster`: the connections tool calls are posted on (forward.py), or None to make them
        through the SDK's session."""
        self.name = name
        self.spec = spec
        self.relay = relay
        self.poster = poster
        self.capabilities: types.ServerCapabilities | None = None
        self._on_list_changed = on_list_changed
        self._errlog = errlog
        self._session: ClientSession | None = None
        self._session_ids: list[str] = []  # over HTTP: the id the upstream gave the session
        self.protocol_version: str | None = None
        self._stop = anyio.Event()
        self._lock = anyio.Lock()
        self._tasks = tasks
        self._last_attempt = -RETRY_SECONDS
        self._last_error = ""

    # -- the session's life ----------------------------------------------------------------------

    async def start(self, tasks: TaskGroup) -> None:
        """Connect and initialize, in a task of `tasks`; raises UpstreamUnavailable if that fails
        or takes longer than the upstream's `start_timeout`."""
        self._tasks = tasks
        async with self._lock:
            await self._connect()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """End the session (its task leaves the transport); the next request starts anew."""
        self._stop.set()

    async def session(self) -> ClientSession:
        """The live session, connecting again if it went down (not more often than
        RETRY_SECONDS)."""
        session = self._session
        if session is not None:
            return session
        async with self._lock:
            if self._session is None:
                if time.monotonic() - self._last_attempt < RETRY_SECONDS:
                    raise UpstreamUnavailable(
                        f"upstream {self.name} is down ({self._last_error}); retrying shortly"
                    )
                await self._connect()
            assert self._session is not None
            return self._session

    async def _connect(self) -> None:
        if self._tasks is None:
            raise UpstreamUnavailable(f"upstream {self.name} was never started")
        self._last_attempt = time.monotonic()
        self._stop = anyio.Event()
        try:
            with anyio.fail_after(self.spec.start_timeout):
                await self._tasks.start(self._run)
        except TimeoutError:
            self._down("it did not complete the MCP handshake in time")
            raise UpstreamUnavailable(
                f"upstream {self.name} did not start within {self.spec.start_timeout:g} s"
            ) from None
        except Exception as exc:
            self._down(_describe(exc))
            raise UpstreamUnavailable(f"upstream {self.name} could not be started: {exc}") from exc

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        """Hold the session until closed or broken. Nothing raised here may reach the task
        group: it would end the gateway."""
        started = False
        stop = self._stop  # this run's: a later reconnect makes its own
        session: ClientSession | None = None
        try:
            callbacks = self.relay.callbacks() if self.relay is not None else {}
            async with (
                self._transport() as streams,
                ClientSession(
                    streams[0], streams[1], message_handler=self._message, **callbacks
                ) as session,
            ):
                result = await session.initialize()
                self.capabilities = result.capabilities
                self.protocol_version = result.protocol_version
                self._session = session
                started = True
                task_status.started()
                await stop.wait()
        except Exception as exc:
            if not started:
                raise
            if self._session is session:
                self._down(_describe(exc))
            log.warning("upstream %s: session ended: %s", self.name, _describe(exc))
        finally:
            if session is not None and self._session is session:  # not a newer one's
                self._session = None

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        spec = self.spec
        if spec.command:
            # Its `env` alone, laid by the SDK over the few variables it deems safe (PATH,
            # HOME, USER...): never the gateway's own environment, which holds the other
            # upstreams' secrets and the store's URL, and is no business of a third party's.
            params = StdioServerParameters(
                command=spec.command[0],
                args=list(spec.command[1:]),
                env=dict(spec.env) or None,
                cwd=spec.cwd or None,
            )
            return _pair(stdio_client(params, errlog=self._errlog or _stderr()))
        ids: list[str] = []  # this connection's session id, from the answer that opened it
        self._session_ids = ids

        async def remember(response: httpx2.Response) -> None:
            session_id = response.headers.get(MCP_SESSION_ID_HEADER)
            if session_id and not ids:
                ids.append(session_id)

        client = httpx2.AsyncClient(
            headers=spec.headers,
            timeout=httpx2.Timeout(spec.timeout, read=spec.timeout),
            transport=KeepAliveTransport(),
            event_hooks={"response": [remember]},
        )
        return _http(spec.url, client)

    def _down(self, why: str) -> None:
        self._last_error = why
        self._session = None
        self._stop.set()

    async def _message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            if self._on_list_changed is not None:
                await self._on_list_changed(self)
        elif self.relay is not None and not isinstance(message, Exception):
            await self.relay.notify(message)

    # -- requests --------------------------------------------------------------------------------

    async def request(self, what: str, send: Callable[[ClientSession], Awaitable[Any]]) -> Any:
        """`send` on the live session, failing closed (UpstreamUnavailable) when the upstream
        is down, breaks off, or takes longer than its timeout. An error the upstream answered
        with (MCPError) is its answer, and is raised as it is."""
        session = await self.session()
        try:
            with anyio.fail_after(self.spec.timeout):
                return await send(session)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {self.name} did not answer {what} within {self.spec.timeout:g} s"
            ) from None
        except MCPError as exc:
            if exc.error.code == REQUEST_TIMEOUT:
                raise UpstreamUnavailable(
                    f"upstream {self.name} did not answer {what} within {self.spec.timeout:g} s"
                ) from None
            if exc.error.code == CONNECTION_CLOSED:
                self._down("the connection closed")
                raise UpstreamUnavailable(
                    f"upstream {self.name} closed the connection during {what}"
                ) from None
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._down(_describe(exc))
            raise UpstreamUnavailable(f"upstream {self.name} is down: {self._last_error}") from exc

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: ProgressFnT | None,
        notify: forward.Notify | None = None,
        *,
        ask: forward.Ask | None = None,
    ) -> types.CallToolResult:
        """Call a tool: posted on the session directly (forward.py) when it is over HTTP and
        no progress is asked for; else through the SDK's session. What the upstream sends
        meanwhile goes to `notify`, or else to the relay; what it asks the agent (sampling,
        elicitation, where the agent's client offers them) goes to `ask` (the hot path's: on
        the call's own answer), or else to the relay, which the SDK's path points at the
        agent's request being served (proxy.py, `_using`). Fails closed as `request` does."""
        what = f"tools/call {name}"
        if self.poster is None or not self.spec.url or progress is not None:
            result: types.CallToolResult = await self.request(
                what, lambda s: s.call_tool(name, arguments, progress_callback=progress)
            )
            return result
        await self.session()  # connected (so what it offers is known), or unavailable
        version = self.protocol_version
        assert version is not None
        try:
            # asyncio's own deadline, as http1.py is asyncio's: entering and leaving anyio's
            # cancel scope took 30 µs, asyncio's 9 µs (a loop of 20,000 in one process)
            async with asyncio.timeout(self.spec.timeout):
                return await forward.call_tool(
                    self.poster,
                    session_id=self._session_ids[0] if self._session_ids else None,
                    protocol_version=version,
                    name=name,
                    arguments=arguments,
                    notify=lambda message: self._notified(message, notify),
                    ask=ask or (self.relay.answer if self.relay is not None else None),
                )
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {self.name} did not answer {what} within {self.spec.timeout:g} s"
            ) from None
        except forward.SessionGone:
            self._down("it no longer knows the session")
            raise UpstreamUnavailable(
                f"upstream {self.name} ended the session; the call was not made"
            ) from None
        except http1.ConnectionFailed as exc:
            self._down(_describe(exc))
            raise UpstreamUnavailable(f"upstream {self.name} is down: {self._last_error}") from exc

    async def _notified(
        self, notification: types.ServerNotification, notify: forward.Notify | None
    ) -> None:
        if isinstance(notification, types.ToolListChangedNotification):
            await self._message(notification)
        elif notify is not None:
            await notify(notification)
        elif isinstance(notification, types.LoggingMessageNotification):
            if self.relay is not None:
                await self.relay.log(notification.params)
        else:
            await self._message(notification)

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the upstream offers (all pages)."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page: types.ListToolsResult = await self.request("tools/list", _page(cursor))
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools


def _page(cursor: str | None) -> Callable[[ClientSession], Awaitable[types.ListToolsResult]]:
    params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
    return lambda session: session.list_tools(params=params)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _stderr() -> TextIO:
    """The upstream's stderr goes to ours, where an operator sees it (and, over stdio, never
    into the MCP channel on stdout)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured (tests): a real file is needed
        return open(os.devnull, "w")
    return sys.stderr


@asynccontextmanager
async def _pair(
    transport: AbstractAsyncContextManager[Any],
) -> AsyncIterator[Streams]:
    async with transport as streams:
        yield streams[0], streams[1]


@asynccontextmanager
async def _http(url: str, client: httpx2.AsyncClient) -> AsyncIterator[Streams]:
    async with client, streamable_http_client(url, http_client=client) as streams:
        yield streams[0], streams[1]


__all__ = ["SessionMessage", "Upstream", "UpstreamUnavailable"]
