"""A `tools/call` to a streamable HTTP upstream, posted as one JSON-RPC request on an MCP session
the SDK's client opened: the upstream half of the gateway's hot path (hot_path.py).

Why not the SDK's client session for it: posted with httpx (the SDK client's HTTP library), a
call to benchmarks/mcp_echo.py cost the caller 1.6 ms of CPU; with aiohttp 0.5 to 0.6 ms, and
over http1.py's connections 0.21 to 0.25 ms (one-off scripts, 1,000 calls each;
docs/gateway.md). What stays with the SDK: opening the session (the handshake), everything
that is not a tool call, and any call that asks for progress (upstream.py chooses). What can
arrive here mid-call is a notification, which is handed on, or a request: a ping is
answered, sampling and elicitation are asked of the agent where its client offers them
(relay.py: on the stream of the agent's call, hot or served by the SDK), and anything else
is refused as the SDK's client refuses a request it has no callback for.

The wire is the streamable HTTP transport's: a POST with the session's id and protocol
version, answered by one JSON message or by an event stream that carries the response.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.client.streamable_http import DEFAULT_MAX_SSE_EVENT_SIZE
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from pydantic import ValidationError

from tether.gateway.http1 import Pool, Response

log = logging.getLogger("tether.gateway")

# An event larger than this fails the call, as on the SDK's path (its client's default).
MAX_EVENT_BYTES = DEFAULT_MAX_SSE_EVENT_SIZE
MAX_JSON_BYTES = 64 << 20  # an answer in one JSON message larger than this fails the call
DRAIN_SECONDS = 1.0  # an event stream still sending this long after the answer: closed
_ids = itertools.count(1)  # ours are strings, so never an id the SDK's session has in flight
CANCEL_SECONDS = 5.0  # telling an upstream that a call was abandoned: given up after this
ABANDONED = "the gateway abandoned the call: its agent cancelled it, or it ran past its timeout"
_telling: set[asyncio.Task[None]] = set()  # cancellations being sent upstream

Notify = Callable[[types.ServerNotification], Awaitable[None]]
# What the upstream asks mid-call, asked of the agent: the reply's `result` or `error`, or None
# for a request no one takes (refused).
Ask = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class SessionGone(Exception):
    """The upstream no longer knows the session (404): the call was not made, and the session
    must be opened again."""


async def call_tool(
    http: Pool,
    *,
    session_id: str | None,
    protocol_version: str,
    name: str,
    arguments: dict[str, Any],
    notify: Notify,
    ask: Ask | None = None,
) -> types.CallToolResult:
    """Call `name` upstream and return its result. The upstream's JSON-RPC error is raised as
    MCPError (as the SDK's client raises it); a broken connection as http1.ConnectionFailed.
    What an event stream sends after the answer is dropped as it comes, off the call's path,
    so that its connection carries the next call. `ask`: where requests the upstream makes
    mid-call go (relay.py), besides a ping, which is answered here."""
    request_id = f"tether-{next(_ids)}"
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        MCP_PROTOCOL_VERSION_HEADER: protocol_version,
    }
    if session_id is not None:  # a stateless upstream gives none
        headers[MCP_SESSION_ID_HEADER] = session_id
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    response = await http.send(_encode(body), headers)
    try:
        await response.arrived()
        if response.status == 404:
            raise SessionGone("the upstream no longer knows this session")
        content_type = response.content_type
        if response.status == 202 or response.status >= 300:
            if content_type == "application/json":
                raise _error(await response.read(MAX_JSON_BYTES))
            raise MCPError(INVALID_REQUEST, f"the upstream answered HTTP {response.status}")
        if content_type == "application/json":
            answer = _parse(await response.read(MAX_JSON_BYTES))
        elif content_type == "text/event-stream":
            answer = await _from_events(http, response, request_id, headers, notify=notify, ask=ask)
            response.release(DRAIN_SECONDS)  # its connection is kept: no new one per call
            return _result(answer)
        else:
            raise MCPError(INVALID_REQUEST, f"unexpected content type {content_type!r}")
    except BaseException as exc:
        response.close()
        if isinstance(exc, asyncio.CancelledError):  # its agent cancelled it, or its deadline
            _abandon(http, headers, request_id)  # came: the upstream is told to stop
        raise
    return _result(answer)


def _abandon(http: Pool, headers: dict[str, str], request_id: str) -> None:
    """Tell the upstream that a request it was sent is abandoned, as the SDK's client does
    (and as the protocol's versions up to 2025-11-25 ask: a closed connection is not a
    cancellation there). Sent from a task of its own, so the call's own end waits for nothing;
    that task is kept until it ends."""
    told = asyncio.get_running_loop().create_task(_cancel(http, headers, request_id))
    _telling.add(told)
    told.add_done_callback(_telling.discard)


async def _cancel(http: Pool, headers: dict[str, str], request_id: str) -> None:
    notice = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": request_id, "reason": ABANDONED},
    }
    try:
        async with asyncio.timeout(CANCEL_SECONDS):
            told = await http.post(_encode(notice), headers)
            try:
                await told.read(MAX_JSON_BYTES)
            finally:
                told.close()
    except Exception as exc:  # it was a courtesy: an upstream down or hung is not told
        log.info("could not tell the upstream that %s was abandoned: %r", request_id, exc)


async def _from_events(
    http: Pool,
    response: Response,
    request_id: str,
    headers: dict[str, str],
    *,
    notify: Notify,
    ask: Ask | None,
) -> dict[str, Any]:
    """The response to `request_id` from the event stream, handling what comes before it."""
    pending = bytearray()  # the line being received
    data: list[bytes] = []  # the event's data lines so far
    kind = b"message"  # the event's type: only messages carry JSON-RPC (as the SDK reads them)
    size = 0  # the event's bytes so far
    async for chunk in response.chunks():
        pending += chunk
        size += len(chunk)
        if size > MAX_EVENT_BYTES:
            raise MCPError(
                INVALID_REQUEST, f"an event from the upstream is over {MAX_EVENT_BYTES:,} bytes"
            )
        if b"\n" not in chunk:
            continue
        *lines, rest = pending.split(b"\n")
        pending = rest
        for raw in lines:
            line = bytes(raw).removesuffix(b"\r")
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                kind = line[6:].strip()
            elif not line:  # a blank line ends an event
                size = len(pending)
                message = _parse(b"\n".join(data)) if data and kind == b"message" else None
                data, kind = [], b"message"
                if message is None:
                    continue
                if "method" not in message:
                    if message.get("id") == request_id:
                        return message
                elif "id" in message:
                    await _answer(http, headers, message, ask)
                else:
                    await _notify(notify, message)
    raise MCPError(CONNECTION_CLOSED, "the upstream ended the call's stream without an answer")


async def _notify(notify: Notify, message: dict[str, Any]) -> None:
    try:
        notification = types.server_notification_adapter.validate_python(message)
    except ValidationError:  # not one the protocol knows: dropped, as the SDK's client does
        log.debug("dropped an unknown notification from an upstream: %s", message.get("method"))
        return
    await notify(notification)


async def _answer(
    http: Pool, headers: dict[str, str], request: dict[str, Any], ask: Ask | None
) -> None:
    """What the upstream asks its client mid-call: a ping is answered, what `ask` takes is
    asked of the agent, anything else is refused, as the SDK's client refuses a request it has
    no callback for."""
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
    if request.get("method") == "ping":
        reply["result"] = {}
    elif ask is not None and (asked := await ask(request)) is not None:
        reply |= asked
    else:
        reply["error"] = {"code": METHOD_NOT_FOUND, "message": "Method not found"}
    answered = await http.post(_encode(reply), headers)
    try:
        await answered.read(MAX_JSON_BYTES)
    finally:
        answered.close()


def _result(message: dict[str, Any]) -> types.CallToolResult:
    if "error" in message:
        raise MCPError.from_error_data(types.ErrorData.model_validate(message["error"]))
    return types.CallToolResult.model_validate(message.get("result"))


def _error(body: bytes) -> MCPError:
    message = _parse(body)
    if "error" not in message:
        return MCPError(INVALID_REQUEST, "the upstream refused the call")
    return MCPError.from_error_data(types.ErrorData.model_validate(message["error"]))


def _parse(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise MCPError(PARSE_ERROR, "the upstream's answer is not JSON") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise MCPError(PARSE_ERROR, "the upstream's answer is not a JSON-RPC message")
    return message


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


__all__ = ["SessionGone", "call_tool"]
