"""A reverse proxy that signs in for the conformance CLI: it forwards every request to the
gateway with the agent's task token and a fresh DPoP proof, and streams the answer back as it
comes (SSE included). The CLI cannot send either header itself; everything else (Host, Origin,
the MCP headers) passes through unchanged, so what the CLI tests is the gateway's behaviour.

The gateway's public URL is this proxy's: it is where the agent reaches the gateway, so the
proofs name it and the gateway's Host check expects it.
"""

from __future__ import annotations

import anyio
import httpx2
from starlette.types import Receive, Scope, Send

from tether.sdk.handle import TaskHandleBase

DROPPED = {b"authorization", b"dpop", b"content-length", b"transfer-encoding", b"connection"}


class SigningProxy:
    """Serve it first (its URL is the gateway's public one), then `sign_for` the agent's task
    and the gateway's address; until then it answers nothing."""

    def __init__(self, public: str) -> None:
        self.public = public  # the MCP endpoint agents are given: this proxy's
        self.task: TaskHandleBase | None = None
        self.gateway = ""  # where the gateway listens (its MCP endpoint)
        self.client = httpx2.AsyncClient(timeout=httpx2.Timeout(60.0))

    def sign_for(self, task: TaskHandleBase, gateway: str) -> None:
        self.task, self.gateway = task, gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.task is None:
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        token = self.task.token
        headers: list[tuple[bytes, bytes]] = [
            (k, v) for k, v in scope["headers"] if k.lower() not in DROPPED
        ]
        headers += [
            (b"authorization", f"DPoP {token}".encode()),
            (b"dpop", self.task.proof(scope["method"], self.public, token).encode()),
        ]
        request = self.client.build_request(
            scope["method"], self.gateway, headers=headers, content=body
        )
        response = await self.client.send(request, stream=True)
        try:
            async with anyio.create_task_group() as streaming:
                # A client that goes (the CLI ends a scenario with its event stream open) ends
                # the stream to the gateway too, as a client of the gateway's own would: held
                # open, it would keep the gateway from stopping.
                streaming.start_soon(_cancel_when_gone, receive, streaming.cancel_scope)
                await _relay(response, send)
                streaming.cancel_scope.cancel()
        finally:
            await response.aclose()


async def _relay(response: httpx2.Response, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [
                (k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROPPED
            ],
        }
    )
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _cancel_when_gone(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
