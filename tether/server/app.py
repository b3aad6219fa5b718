"""The HTTP service: one table of endpoints (`ENDPOINTS`, in endpoints.py) served by Starlette.

Each endpoint says who may call it, and the wrapper here enforces it before the handler runs, so
no handler can forget: `none` (health, JWKS), `agent` (a DPoP-bound task token and a proof for
this request), `token` (the token endpoint: the agent proves itself in the request) or an admin
token holding a role in the workspace the request is about. Handlers are plain functions (the
decision point and the store are synchronous); their answers are msgspec Structs, encoded here;
every error is a problem document (problems.py).

Most handlers run on a worker thread, so a slow one (a backtest, a verify, an approval's
long-poll) never holds up the others, and one still running after REQUEST_SECONDS is answered
503. The decision endpoints run on the event loop itself (`inline`): the hop to a thread and
back, with the GIL passed between them, cost more than a decision (measured with 2 workers:
399 decisions/s through the thread pool, 1,479/s inline). A single decision's handler is a
coroutine: its record waits for its commit without holding up the loop, so the calls a worker
has in flight are recorded in one transaction (`PDP.decide_async`). Their work is bounded
(1 MiB of arguments, 100 calls a batch) and fails closed; the price is that a store that
stalls stalls its worker's loop until its timeouts end the call (PostgreSQL connections give
up after 5 s).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tether.errors import CredentialRefused
from tether.sdk import Guard
from tether.server import admin_tokens, problems
from tether.server.console import console_mount
from tether.server.endpoints import ENDPOINTS, Call, Endpoint
from tether.server.limits import OverBurst, RateLimits
from tether.server.metrics import Metrics
from tether.server.openapi import document

MAX_BODY = 1 << 20  # bytes: a call's arguments beyond this are refused, not truncated
REQUEST_SECONDS = 10.0  # a request still running then is answered 503 (a decision: a deny)
_encode = msgspec.json.Encoder().encode


def create_app(
    guard: Guard,
    *,
    public_url: str,
    limits: RateLimits | None = None,
    close_guard: bool = False,
) -> Starlette:
    """`public_url`: where agents reach this service (what their DPoP proofs name); `limits`:
    each agent's rate (default 100 calls a second, 200 at once); `close_guard`: the app owns
    the Guard, and closes it when the server stops."""
    base = public_url.rstrip("/")
    metrics = Metrics()
    limits = limits or RateLimits(rate=100.0, burst=200.0)
    routes: list[BaseRoute] = [
        Route(e.path, _wrap(e, guard, base, metrics, limits), methods=[e.method]) for e in ENDPOINTS
    ]
    openapi = _encode(document(ENDPOINTS, base))

    def serve_openapi(call: Call) -> Response:
        return Response(openapi, media_type="application/json")

    spec = Endpoint("GET", "/openapi.json", serve_openapi, auth="admin", role=None)
    routes.append(Route(spec.path, _wrap(spec, guard, base, metrics, limits), methods=["GET"]))
    routes.append(console_mount(guard, base))
    handlers = {HTTPException: problems.handle, Exception: problems.handle}  # 404, 405 too

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_guard:
                guard.close()

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.metrics = metrics
    return app


def _wrap(
    endpoint: Endpoint, guard: Guard, base: str, metrics: Metrics, limits: RateLimits
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _body(request) if endpoint.body is not None else None
            call = Call(
                request=request,
                guard=guard,
                url=base + request.url.path,
                params=dict(request.path_params),
                query=dict(request.query_params),
                raw=body,
            )
            if endpoint.inline:
                answer = _handle(endpoint, call, limits)
                if inspect.isawaitable(answer):  # a decision: it waits for its commit
                    answer = await answer
            else:
                with anyio.fail_after(REQUEST_SECONDS):  # one hop to a worker thread
                    answer = await run_in_threadpool(_handle, endpoint, call, limits)
            response = (
                answer
                if isinstance(answer, Response)
                else Response(_encode(answer), endpoint.status, media_type="application/json")
            )
        except TimeoutError:
            detail = f"the request took over {REQUEST_SECONDS:.0f} s; treat it as refused"
            response = problems.problem(503, detail)
        except Exception as exc:
            response = await problems.handle(request, exc)
        metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    return route


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise problems.Problem(413, f"the body is over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise problems.Problem(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _handle(endpoint: Endpoint, call: Call, limits: RateLimits) -> Any:
    """Who is calling, within their rate, then the endpoint (on a worker thread: the decision
    point and the store are synchronous)."""
    _authenticate(endpoint, call)
    if endpoint.auth in ("agent", "token"):  # the token endpoint: limited by address
        _limit(call, limits)
    return endpoint.handler(call)


def _limit(call: Call, limits: RateLimits) -> None:
    """429 past the caller's rate: this request counts one call now, and `call.charge` lets an
    endpoint count the rest once it has read them (a batch: each of its calls). An agent's
    bucket is charged only for a request its key proves; any other is limited by address."""
    key = _proven_agent(call, limits) or (
        f"address/{call.request.client.host if call.request.client else '?'}"
    )

    def charge(count: int, already: int = 0) -> None:
        """`already`: calls of this request counted before (its first). A request over the
        burst in all can never go, however its charges are split: too large, not too soon."""
        if count + already > limits.burst:
            raise OverBurst(count + already, limits.burst)
        wait = limits.take(key, count) if count > 0 else None
        if wait is not None:
            raise problems.Problem(429, f"over {limits.rate:.0f} calls a second", retry_after=wait)

    charge(1)
    call.charge = lambda count: charge(count, already=1)


def _proven_agent(call: Call, limits: RateLimits) -> str | None:
    """`workspace/agent` of a request whose task token verifies and whose DPoP proof, for this
    very request, is signed by the token's key and not counted here before; else None. A
    stolen token alone, or with a captured proof, must not use up its agent's rate. The proof's
    one-time id is not spent here: the endpoint claims it (with the decision, for a decision),
    and refuses a replay there."""
    if call.token is None:
        return None
    try:
        claims = call.guard.credentials.authenticate(
            call.token,
            proof=call.proof,
            htm=call.request.method,
            htu=call.url,
            require_proof=True,
            remember_once=limits.first_sighting,
        )
    except Exception:  # refused, or not checkable now (the store away): the endpoint decides,
        return None  # and fails closed with its reason; meanwhile the caller is limited by address
    return f"{claims.ws}/{claims.agent}"


def _authenticate(endpoint: Endpoint, call: Call) -> None:
    """Who is calling, as the endpoint requires; raises before the handler runs."""
    if endpoint.auth in ("none", "token"):
        return
    header = call.request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if endpoint.auth == "agent":
        if scheme.lower() != "dpop" or not credential:
            raise CredentialRefused("present the task token: Authorization: DPoP <token>")
        call.token, call.proof = credential.strip(), call.request.headers.get("dpop")
        return
    if scheme.lower() != "bearer" or not credential:
        raise CredentialRefused("present an admin token: Authorization: Bearer <token>")
    call.admin = admin_tokens.authenticate(call.guard.store, credential.strip(), time.time())
    if endpoint.role is not None and endpoint.scope != "resource":
        workspace = call.params.get("workspace") if endpoint.scope == "path" else None
        admin_tokens.require(call.admin, workspace, endpoint.role)
