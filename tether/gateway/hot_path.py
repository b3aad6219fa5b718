"""The hot path: a `tools/call` on an established MCP session, answered without the SDK's
server session machinery, and decided with its proof's one-time id claimed in the decision's
own transaction.

Why: the gateway is on the path of every tool call an agent makes. Through the SDK's session
manager a call took about 0.8 ms at the gateway around Tether's own work (the request parsed
into models, a task and memory streams per request, an event stream per answer:
docs/gateway.md). Here a plain `tools/call` is read once, decided, made (forward.py) and
answered with one JSON message, or with an event stream if something goes to the client
first: the upstream's notifications, or a request to the client (an approval asked of the
person, or what the upstream asks mid-call: sampling, elicitation), whose reply the client
posts back and this path takes too, as the SDK would.

Only what needs nothing else of the SDK takes this path; everything else (opening a session,
every other method, a batch, a call asking for progress, a call to an upstream that is a
command) goes to the SDK as it came, so behaviour is the SDK's there. A call, or a reply,
takes the hot path only on a session the SDK still serves, owned by the same task (the check
the SDK itself makes), after the same transport checks (content type, Host and Origin); and
the session is held against idle expiry while the call runs, as the SDK holds it for its
own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from tether.gateway.challenge import spent
from tether.gateway.proxy import Caller, Gateway

log = logging.getLogger("tether.gateway")

MAX_BODY = 1 << 20  # a larger call goes to the SDK, which applies its own limit
CALL_KEYS = {"name", "arguments", "_meta"}
R = TypeVar("R", bound=BaseModel)
_ask_ids = itertools.count(1)


class HotPath:
    """Tried by the task-token check (http.py) on each request it lets in, before the SDK."""

    def __init__(self, gateway: Gateway, manager: StreamableHTTPSessionManager) -> None:
        self.gateway = gateway
        self.sessions = SdkSessions(manager)
        self.security = TransportSecurityMiddleware(manager.security_settings)
        # What hot calls have asked their clients and wait for: (session, request id).
        self._asked: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        # The hot calls being made, by (session, the client's request id): to cancel.
        self._calls: dict[tuple[str, str | int], asyncio.Future[types.CallToolResult]] = {}

    async def serve(
        self, scope: Scope, headers: Headers, receive: Receive, send: Send, caller: Caller
    ) -> Receive | None:
        """Answer the request if it is a call the hot path takes, a reply to what a hot call
        asked, or a client's cancellation of a hot call (None); else give back how to receive
        it as it came, for the SDK."""
        if scope["method"] != "POST" or not _plain(headers):
            return receive
        body = await _body(receive)
        session_id = headers[MCP_SESSION_ID_HEADER]
        transport = self.sessions.live(session_id, scope.get("user"))
        message = _jsonrpc(body)
        call = _tools_call(message) if message is not None else None
        if call is None:
            if (
                message is not None
                and transport is not None
                and await self._taken(scope, message, caller, send, session_id)
            ):
                return None
            return _replay(body, receive)
        connected = (
            self.gateway.hot_connection(session_id, caller) if transport is not None else None
        )
        if (
            transport is None
            or connected is None
            or not self.gateway.hot_tool(call[1])
            or not await self._secure(scope)
        ):
            return _replay(body, receive)
        request_id, name, args = call
        answer = _Answer(send, receive, session_id, self._asked)
        key = (session_id, request_id)
        with self.sessions.held(transport):
            made = asyncio.ensure_future(
                self.gateway.hot_call(
                    connected, caller, name, args, notify=answer.notify, ask_client=answer.ask
                )
            )
            self._calls[key] = made
            try:
                message = await _outcome(made, request_id, name)
            finally:
                if self._calls.get(key) is made:
                    del self._calls[key]
            await (answer.finish(message) if message is not None else answer.end())
        return None

    async def _secure(self, scope: Scope) -> bool:
        """The transport's own checks (content type, Host, Origin), as the SDK makes them."""
        return await self.security.validate_request(Request(scope), is_post=True) is None

    async def _taken(
        self, scope: Scope, message: dict[str, Any], caller: Caller, send: Send, session_id: str
    ) -> bool:
        """Whether the POST was for a hot call, and taken: a reply to what the call asked its
        client, or the client's cancellation of the call, on the call's own session. Neither
        is known to the SDK, which would drop it. Its proof is spent here, as the door spends
        it for a request the SDK serves; the client is answered 202, as the SDK answers."""
        if not self._asked and not self._calls:
            return False
        reply_id, cancelled_id = _reply_id(message), _cancelled_id(message)
        asked = self._asked.get((session_id, reply_id)) if reply_id is not None else None
        running = self._calls.get((session_id, cancelled_id)) if cancelled_id is not None else None
        if (asked is None and running is None) or not await self._secure(scope):
            return False
        if not await spent(self.gateway.guard.credentials, caller.once, send):
            return True
        if asked is not None and not asked.done():
            asked.set_result(message)
        if running is not None:
            running.cancel()  # never answered, as the SDK treats a request its client cancels
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-type", b"application/json"),
                    (MCP_SESSION_ID_HEADER.encode(), session_id.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return True


async def _outcome(
    made: asyncio.Future[types.CallToolResult], request_id: str | int, name: str
) -> dict[str, Any] | None:
    """The answer to the call being `made`; None if its client cancelled it (`_taken`)."""
    try:
        result = await made
    except asyncio.CancelledError:
        running = asyncio.current_task()
        if running is not None and running.cancelling():  # the gateway is stopping
            raise
        return None
    except Exception:  # fail closed, without a trace for the client
        log.exception("the hot path of tools/call %s", name)
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": INTERNAL_ERROR, "message": "the gateway failed the call"},
        }
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": result.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


class SdkSessions:
    """The SDK session manager's sessions, as the hot path needs them.

    The SDK offers no public way to look a session up or to hold it while a request it did
    not serve runs, so this reads its session and owner tables and its in-flight count, the
    same ones its own request handling uses. The SDK's version is pinned (constraints.txt) and
    tests/test_gateway_hot_path.py fails if these change.
    """

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    def live(self, session_id: str, user: object) -> StreamableHTTPServerTransport | None:
        """The session's transport, if the SDK still serves it and `user` opened it."""
        transport = self.manager._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return None
        if transport.idle_scope is not None and transport.idle_scope.cancel_called:
            return None
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if requestor != self.manager._session_owners.get(session_id):
            return None
        return transport

    @contextmanager
    def held(self, transport: StreamableHTTPServerTransport) -> Iterator[None]:
        """The session does not expire for being idle while the call runs; its idle time
        starts again after, as after a request the SDK served."""
        timeout, idle = self.manager.session_idle_timeout, transport.idle_scope
        if timeout is None or idle is None:
            yield
            return
        transport._requests_in_flight += 1
        idle.deadline = math.inf
        try:
            yield
        finally:
            transport._requests_in_flight -= 1
            if not transport._requests_in_flight:
                idle.deadline = anyio.current_time() + timeout


class _Answer:
    """The answer to the agent's POST: one JSON message, unless something goes to the client
    before the result (the upstream's notifications, or what the call asks the client: an
    approval, or what the upstream asks mid-call); then an event stream of those and the
    result, as the SDK answers."""

    def __init__(
        self,
        send: Send,
        receive: Receive,
        session_id: str,
        asked: dict[tuple[str, str], asyncio.Future[dict[str, Any]]],
    ) -> None:
        self._send = send
        self._receive = receive
        self._session_id = session_id
        self._asked = asked
        self._streaming = False

    async def notify(self, notification: types.ServerNotification) -> None:
        await self._message(notification.model_dump(by_alias=True, mode="json", exclude_none=True))

    async def ask(self, request: types.ServerRequest, result: type[R]) -> R:
        """Ask the client on this answer's stream, as the SDK asks on the stream of the
        request being served, and wait for its reply: a POST of its own, which `HotPath`
        hands here (`_taken`). The id is a string, never one of the SDK session's own.
        Raises MCPError for the client's error, and fails if the client goes away first."""
        request_id = f"tether-ask-{next(_ask_ids)}"
        key = (self._session_id, request_id)
        replied = asyncio.get_running_loop().create_future()
        self._asked[key] = replied
        try:
            asking = request.model_dump(by_alias=True, mode="json", exclude_none=True)
            await self._message({"id": request_id, **asking})
            reply = await self._replied(replied)
        finally:
            del self._asked[key]
        if "error" in reply:
            raise MCPError.from_error_data(types.ErrorData.model_validate(reply["error"]))
        return result.model_validate(reply.get("result"))

    async def _replied(self, replied: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """The reply, unless the client closes the call's connection first (its POST had been
        read whole, so all it can still say is that it went away)."""
        gone: asyncio.Future[Any] = asyncio.ensure_future(self._receive())
        waiting: set[asyncio.Future[Any]] = {replied, gone}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not replied.done():
            raise MCPError(CONNECTION_CLOSED, "the agent's client went away before it replied")
        return replied.result()

    async def finish(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        if self._streaming:
            await self._send({"type": "http.response.body", "body": _event(data)})
            return
        await self._start(b"application/json", [(b"content-length", str(len(data)).encode())])
        await self._send({"type": "http.response.body", "body": data})

    async def end(self) -> None:
        """The answer to a call its client cancelled: no message, as the SDK answers none."""
        if not self._streaming:
            await self._start(b"text/event-stream", [(b"cache-control", b"no-cache")])
        await self._send({"type": "http.response.body", "body": b""})

    async def _message(self, message: dict[str, Any]) -> None:
        """A JSON-RPC message (a notification, or a request) on the answer's stream."""
        data = json.dumps({"jsonrpc": "2.0", **message}, separators=(",", ":"), ensure_ascii=False)
        await self._event(data.encode())

    async def _event(self, data: bytes) -> None:
        if not self._streaming:
            self._streaming = True
            await self._start(b"text/event-stream", [(b"cache-control", b"no-cache")])
        await self._send({"type": "http.response.body", "body": _event(data), "more_body": True})

    async def _start(self, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type),
                    (MCP_SESSION_ID_HEADER.encode(), self._session_id.encode()),
                    *extra,
                ],
            }
        )


def _event(data: bytes) -> bytes:
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


def _plain(headers: Headers) -> bool:
    """A POST the hot path may take: on a session of a handshake protocol version, JSON, of a
    size read at once, from a client that accepts either kind of answer."""
    accept = headers.get("accept", "")
    length = headers.get("content-length", "")
    return (
        MCP_SESSION_ID_HEADER in headers
        and headers.get(MCP_PROTOCOL_VERSION_HEADER) in HANDSHAKE_PROTOCOL_VERSIONS
        and headers.get("content-type", "").lower().startswith("application/json")
        and "application/json" in accept
        and "text/event-stream" in accept
        and length.isdigit()
        and int(length) <= MAX_BODY
    )


def _jsonrpc(body: bytes) -> dict[str, Any] | None:
    """The POST's message, if it is one JSON-RPC message (not a batch)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return None
    return message


def _tools_call(message: dict[str, Any]) -> tuple[str | int, str, dict[str, Any]] | None:
    """The request's id, tool and arguments, if it is one plain `tools/call` (no progress
    asked for); None for anything else, which the SDK answers."""
    request_id, params = message.get("id"), message.get("params")
    if (
        message.get("method") != "tools/call"
        or message.keys() - {"jsonrpc", "id", "method", "params"}
        or isinstance(request_id, bool)
        or not isinstance(request_id, str | int)
        or not isinstance(params, dict)
        or params.keys() - CALL_KEYS
        or not isinstance(params.get("name"), str)
        or not isinstance(params.get("arguments", {}), dict)
    ):
        return None
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None
    return request_id, params["name"], params.get("arguments") or {}


def _reply_id(message: dict[str, Any]) -> str | None:
    """The id of a reply (a result or an error) with a string id, the kind the hot path's own
    requests to a client carry."""
    if "method" in message or ("result" in message) == ("error" in message):
        return None
    reply_id = message.get("id")
    return reply_id if isinstance(reply_id, str) else None


def _cancelled_id(message: dict[str, Any]) -> str | int | None:
    """The request a `notifications/cancelled` names."""
    params = message.get("params")
    if message.get("method") != "notifications/cancelled" or "id" in message:
        return None
    request_id = params.get("requestId") if isinstance(params, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    return request_id


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request as it came, for the SDK: its body once, then the connection's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["HotPath", "SdkSessions"]
