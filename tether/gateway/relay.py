"""What an upstream sends its client while serving an agent goes on to that agent.

An upstream may, during a request, ask its client for a model completion (sampling) or for the
person's input (elicitation), write log messages, and report progress; and it may say a resource
it serves changed. Through the gateway the client is the agent's, so each agent session has
upstream sessions of its own (proxy.py), and their requests and notifications are relayed to
that session, on the stream of the agent's request they belong to. The upstream is offered
sampling and elicitation only where the agent's client supports them.

What is relayed during a request is also kept for it (`Shown`), where the request asks: the
agent reads a tool call's notifications as it reads its result, and what an upstream asks its
client mid-call (a sampling request's messages go to the agent's model; an elicitation's to
the person at the client), so they are reported to the task with the result (proxy.py), and a
secret or an instruction an upstream slips into a log message or a question is seen as one in
the result would be.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import mcp_types as types
from mcp.client.context import ClientRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR
from pydantic import BaseModel, ValidationError

R = TypeVar("R", bound=BaseModel)
# What a request being served has passed on to its agent, in order: notifications, and what
# the upstream asked the agent's client.
Shown = list[types.ServerNotification | types.ServerRequest]


class AskClient(Protocol):
    """Send a request to the agent's client and return its answer as `result` (MCPError when
    the client answers with an error): on the SDK's path through its session, on the hot
    path on the call's own answer (hot_path.py)."""

    def __call__(self, request: types.ServerRequest, result: type[R]) -> Awaitable[R]: ...


@contextmanager
def legacy() -> Iterator[None]:
    """Around relaying what the 2026-07-28 revision deprecates or removes (logging, sampling,
    resource subscriptions): older clients and servers still use it, and the gateway passes it
    on without warning about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


class Relay:
    """The agent session's way back. The SDK gives each request a session object of its own
    (request-scoped delivery), so the relay is pointed at the request being served."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session
        self.related: types.RequestId | None = None  # the agent's request being served
        self.shown: Shown | None = None  # where what it relays for that request is kept

    def bind(
        self, session: ServerSession, request_id: types.RequestId | None, shown: Shown | None = None
    ) -> None:
        self.session, self.related, self.shown = session, request_id, shown

    def _showing(self, message: types.ServerNotification | types.ServerRequest) -> None:
        """Kept before it is sent: what may have reached the agent counts as shown."""
        if self.shown is not None:
            self.shown.append(message)

    def callbacks(self) -> dict[str, Any]:
        """The ClientSession callbacks of an upstream session serving this agent."""
        callbacks: dict[str, Any] = {"logging_callback": self.log}
        capabilities = self.session.client_capabilities
        if offers(capabilities, "sampling"):
            callbacks["sampling_callback"] = self.sample
        if offers(capabilities, "elicitation"):
            callbacks["elicitation_callback"] = self.elicit
        return callbacks

    def _metadata(self) -> ServerMessageMetadata | None:
        if self.related is None:
            return None
        return ServerMessageMetadata(related_request_id=self.related)

    async def sample(
        self, context: ClientRequestContext | None, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        return await _asked(
            self._send, types.CreateMessageRequest(params=params), types.CreateMessageResult
        )

    async def elicit(
        self, context: ClientRequestContext | None, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await _asked(self._send, types.ElicitRequest(params=params), types.ElicitResult)

    async def answer(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """What an upstream asks during a call posted directly (forward.py) on the SDK's path,
        asked of the agent on the request being served; see `ask_agent`."""
        return await ask_agent(request, self.session.client_capabilities, self._send)

    async def _send(self, request: types.ServerRequest, result: type[R]) -> R:
        self._showing(request)
        answer: R = await self.session.send_request(request, result, metadata=self._metadata())
        return answer

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        with legacy():
            notification = types.LoggingMessageNotification(params=params)
            self._showing(notification)
            await self.session.send_notification(notification, related_request_id=self.related)

    async def notify(self, notification: types.ServerNotification) -> None:
        """A resource (or the resource or prompt list) changed upstream: tell the agent."""
        if isinstance(
            notification,
            types.ResourceUpdatedNotification
            | types.ResourceListChangedNotification
            | types.PromptListChangedNotification,
        ):
            self._showing(notification)
            await self.session.send_notification(notification)


async def ask_agent(
    request: dict[str, Any], capabilities: types.ClientCapabilities | None, send: AskClient
) -> dict[str, Any] | None:
    """The reply (its `result` or `error`) to what an upstream asks mid-call, asked of the
    agent's client through `send` where that client offers it (sampling, elicitation: what
    the upstream itself was offered, `Relay.callbacks`); None for anything else, which the
    caller refuses as the SDK's client refuses a request it has no callback for."""
    try:
        asked = types.server_request_adapter.validate_python(request)
    except ValidationError:
        return None
    reply: Any
    if isinstance(asked, types.CreateMessageRequest) and offers(capabilities, "sampling"):
        reply = await _asked(send, asked, types.CreateMessageResult)
    elif isinstance(asked, types.ElicitRequest) and offers(capabilities, "elicitation"):
        reply = await _asked(send, asked, types.ElicitResult)
    else:
        return None
    data = reply.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {"error": data} if isinstance(reply, types.ErrorData) else {"result": data}


def offers(capabilities: types.ClientCapabilities | None, what: str) -> bool:
    """Whether the agent's client offers `what` ("sampling", "elicitation")."""
    return capabilities is not None and getattr(capabilities, what) is not None


async def _asked(
    send: AskClient, request: types.ServerRequest, result: type[R]
) -> R | types.ErrorData:
    """The client's answer, or its refusal as the error to pass on (never an exception: the
    upstream that asked gets an answer either way)."""
    try:
        return await send(request, result)
    except MCPError as exc:
        return exc.error
    except Exception as exc:
        return types.ErrorData(code=INTERNAL_ERROR, message=f"the agent's client: {exc}")
