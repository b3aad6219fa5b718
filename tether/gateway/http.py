"""The gateway over streamable HTTP: agents connect to `<public URL>/mcp` with their task token.

Every HTTP request must carry the agent's DPoP-bound task token (`Authorization: DPoP <token>`)
and a fresh proof for it (`DPoP: <proof>`, `htm` POST/GET/DELETE, `htu` the MCP endpoint), as
RFC 9449 asks of a protected resource: a request without both is a 401 before MCP sees it, and
a proof is good once. A session belongs to the task that opened it: another task's token
cannot ride on its id. That holds for the protocol versions opened with the initialize
handshake, whose sessions the SDK binds to their owner; a request naming a later version (the
SDK serves 2026-07-28 per request, with no session and no owner check) is a 400 naming the
versions served, so no client can name another's session id on that wire. What a tool call
then needs of the token was proven here, so the decision takes the token alone (its claims,
revocation and task are checked again there).
`tether.gateway.client_auth.TaskAuth` is the client half, for the official MCP client.

An agent needs nothing else but the URL. The gateway's own credentials for its upstreams are
in its configuration, and never the agent's.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
import msgspec
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.errors import CredentialRefused
from tether.gateway.challenge import refuse, spent
from tether.gateway.config import GatewayConfig, load_config
from tether.gateway.hot_path import HotPath
from tether.gateway.proxy import SERVED_VERSIONS, Caller, Context, Gateway, unserved
from tether.model import Durability
from tether.pdp import ProofRule
from tether.sdk import Guard
from tether.store import Store

MCP_PATH = "/mcp"
CALLER = "tether.caller"


class Serving(msgspec.Struct, frozen=True):
    config: str  # the gateway configuration file
    home: str
    public_url: str
    db: str | None = None
    durability: Durability | None = None


class TaskTokenAuth:
    """ASGI middleware: a request reaches MCP only with a valid task token of the gateway's
    workspace, proven by a fresh DPoP proof for this endpoint and method."""

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        endpoint: str,
        workspace: str,
        hot_path: HotPath | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.endpoint = endpoint
        self.workspace = workspace
        self.hot_path = hot_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "dpop" or not token.strip():
            why = (
                "present the task token as Authorization: DPoP <token>, with a DPoP proof"
                if scheme.lower() != "bearer"
                else "a bearer token is not accepted here: the task token is DPoP-bound"
            )
            await refuse(send, 401, "invalid_token", why)
            return
        once: list[tuple[str, float]] = []  # the proof's one-time id: written in _admit

        def keep(key: str, until: float) -> bool:
            once.append((key, until))
            return True

        try:
            claims = self.guard.credentials.authenticate(
                token.strip(),
                proof=headers.get("dpop"),
                htm=scope["method"],
                htu=self.endpoint,
                require_proof=True,
                remember_once=keep,
            )
        except CredentialRefused as exc:
            await refuse(send, 401, exc.error, str(exc))
            return
        except Exception:  # fail closed, without a trace for the client
            await refuse(send, 503, "temporarily_unavailable", "the token could not be checked")
            return
        if claims.ws != self.workspace:
            await refuse(
                send, 403, "insufficient_scope", f"this gateway serves workspace {self.workspace}"
            )
            return
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in SERVED_VERSIONS:
            await unsupported(send, version)
            return
        # The SDK's session manager binds each MCP session to the principal that opened it:
        # here the task, so another task's token cannot use a session's id (it gets 404).
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token="",  # not kept: the principal is what is compared
                client_id=claims.agent,
                scopes=[],
                subject=claims.task,
                claims={"iss": claims.iss},
            )
        )
        caller = Caller(token.strip(), claims, once=tuple(once))
        await self._admit(scope, headers, receive, send, caller)

    async def _admit(
        self, scope: Scope, headers: Headers, receive: Receive, send: Send, caller: Caller
    ) -> None:
        """A proven request: a call the hot path takes claims the proof with its decision;
        any other has it written first, then goes to the SDK."""
        if self.hot_path is not None:
            rest = await self.hot_path.serve(scope, headers, receive, send, caller)
            if rest is None:
                return
            receive = rest
        if not await spent(self.guard.credentials, caller.once, send):
            return
        scope.setdefault("state", {})[CALLER] = Caller(caller.token, caller.claims)
        await self.app(scope, receive, send)


async def unsupported(send: Send, version: str) -> None:
    """A request of a protocol version the gateway does not serve: the JSON-RPC error the
    SDK answers with for a version it does not serve (-32022, at 400), naming those served.
    A client that probes for a later version (the official client's `server/discover`)
    falls back to the initialize handshake on it."""
    error = {
        "code": UNSUPPORTED_PROTOCOL_VERSION,
        "message": unserved(version),
        "data": {"supported": list(SERVED_VERSIONS), "requested": version},
    }
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _caller(ctx: Context) -> Caller:
    request = ctx.request
    caller = request.scope.get("state", {}).get(CALLER) if request is not None else None
    if not isinstance(caller, Caller):
        raise CredentialRefused("no task token came with this request")
    return caller


def build(
    guard: Guard,
    config: GatewayConfig,
    *,
    public_url: str,
    on_stop: Callable[[], None] = lambda: None,
) -> Starlette:
    """The gateway's application: `/mcp` behind the task-token check, and the upstream sessions
    held for as long as it runs."""
    public = public_url.rstrip("/")
    gateway = Gateway(guard, config, identify=_caller)
    server = gateway.server()
    host = urlsplit(public).netloc
    manager = StreamableHTTPSessionManager(
        app=server,
        security_settings=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=[host], allowed_origins=[public]
        ),
    )
    mcp = TaskTokenAuth(
        StreamableHTTPASGIApp(manager),
        guard,
        endpoint=public + MCP_PATH,
        workspace=config.workspace,
        hot_path=HotPath(gateway, manager),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks, manager.run():
            await gateway.start(tasks)
            try:
                yield
            finally:
                await gateway.close()
                tasks.cancel_scope.cancel()
                on_stop()

    app = Starlette(
        routes=[Route(MCP_PATH, mcp, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
    )
    app.state.gateway = gateway
    return app


def guard_for(serving: Serving) -> Guard:
    """A Guard on the shared store that decides tasks whose tokens Tether issued anywhere:
    task state lives in the store, and proofs are checked by TaskTokenAuth."""
    return Guard(
        Store.at_home(serving.home, serving.db),
        proofs=ProofRule(htm="POST", htu=serving.public_url, required=False),
        durability=serving.durability,
        shared_tasks=True,
    )


def run(serving: Serving, *, host: str, port: int) -> None:
    """Serve until interrupted, in this process: one worker, since the upstream sessions are
    held in it. Served by uvicorn (with httptools), not granian as `tether serve` is: a gateway
    is on the path of each call, and uvicorn parses and answers on the event loop, where
    granian hands every request body and response between its threads and the loop; that took
    about 0.5 ms more per call in benchmarks/gateway.py (docs/gateway.md)."""
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    config = load_config(serving.config)  # a bad file is said before the server starts
    guard = guard_for(serving)
    app = build(guard, config, public_url=serving.public_url, on_stop=guard.close)
    gc.collect()  # what is made by now lives as long as the process: out of the collector's
    gc.freeze()  # sight, as in `tether serve`'s workers (tether/server/serving.py)
    uvicorn.run(
        app,
        host=host,
        port=port,
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


__all__ = ["Serving", "TaskTokenAuth", "build", "run"]
