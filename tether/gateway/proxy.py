"""The gateway's MCP server: every request an agent makes is answered under its task's authority.

- `tools/list`: the upstreams' tools (renamed `<upstream>.<tool>`) in the task's scope and not
  flagged (tools.py).
- `tools/call`: a Tether decision. Allow forwards the call and reports its result to the task;
  deny is a tool error carrying the reasons; `approval_required` asks the person at the client
  through elicitation when it can, else is a tool error naming the approval to retry after.
- `resources/*`: listed where the task holds `<upstream>:resources/read`; each read is a
  decision of that tool (the URI its argument), and its content is reported to the task.
- `prompts/*`: the same with `<upstream>:prompts/get` (the prompt's name and arguments).

Each agent session gets upstream sessions of its own, serving the task that opened it alone, so
what an upstream sends its client during a request (sampling, elicitation, logs, progress,
resource updates) reaches that agent and no other (relay.py), and what it sends during a tool
call is reported to the task with the call's result; sessions unused for `IDLE_SECONDS` are
closed. The gateway also holds one session per upstream of its own, to review tool lists.

Whatever goes wrong on the way (no decision, an upstream down or hanging, a result the task
could not take in) is an error answer: no call, read or completion is forwarded that was not
allowed, and what it returned reaches the agent only once its task has taken it in. (Listings
of resources and prompts are scope-checked, not decided: they name things; reading them is
decided.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from tether.credentials.access_token import AccessClaims
from tether.credentials.dpop import REPLAYED
from tether.errors import shown
from tether.gateway import http1
from tether.gateway.config import GatewayConfig
from tether.gateway.forward import Notify
from tether.gateway.relay import AskClient, R, Relay, Shown, ask_agent, legacy, offers
from tether.gateway.tools import Offered, Review, review
from tether.gateway.upstream import Upstream, UpstreamUnavailable
from tether.model import Decision, Effect, OutputTrust, Tool
from tether.sdk import Guard

log = logging.getLogger("tether.gateway")

IDLE_SECONDS = 600.0  # an agent session's upstream sessions close after this long unused
MAX_AGENT_SESSIONS = 256  # agent sessions holding upstream sessions at once
HOUSEKEEPING_SECONDS = 30.0
SHOWN = "tether/shown"  # a call's reported output: what its agent was shown as it ran
FORM_ARGUMENTS = 2000  # characters of a call's arguments (JSON) an approval form shows at most
# The protocol versions the gateway serves: those opened with the initialize handshake, whose
# sessions the SDK binds to the task that opened them (and the gateway its upstream sessions).
SERVED_VERSIONS: tuple[str, ...] = HANDSHAKE_PROTOCOL_VERSIONS
READ_RESOURCE = "resources/read"
GET_PROMPT = "prompts/get"
Context = ServerRequestContext[Any, Any]
# What a decision of reading a resource or getting a prompt is given (a prompt's arguments as
# JSON text: they are free-form, and a policy reads a string).
ACCESS_ARGUMENTS: dict[str, dict[str, Any]] = {
    READ_RESOURCE: {
        "type": "object",
        "properties": {"uri": {"type": "string"}},
        "required": ["uri"],
    },
    GET_PROMPT: {
        "type": "object",
        "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        "required": ["name"],
    },
}


@dataclass(frozen=True)
class Caller:
    """Whom a request is from: its task token, checked already (with its proof over HTTP,
    unrevoked), and the token's claims. `once`: the proof's one-time id, checked but not yet
    written: the decision of a call on the hot path claims it (http.py)."""

    token: str
    claims: AccessClaims
    once: tuple[tuple[str, float], ...] = ()


# Who a request is from, its token checked (raises if it no longer stands): the HTTP door's
# caller, or over stdio the gateway's own task.
Identify = Callable[[Context], Caller]
# Ask the person at the agent's client to fill in a form: its message and schema.
ElicitForm = Callable[[str, dict[str, Any]], Awaitable[types.ElicitResult]]


@dataclass
class _Connected:
    """One agent session's own upstream sessions (each with its relay back to the agent: a
    request to an upstream is made one at a time per session, so what the upstream sends
    meanwhile goes to the request it belongs to), and the resources its listings found.
    `task`: the task that opened the agent session, the only one served on it."""

    upstreams: dict[str, Upstream]
    locks: dict[str, anyio.Lock]
    session: Any  # the agent's latest request's session object: for notifications
    task: str
    resource_owner: dict[str, str | None] = field(default_factory=dict)  # uri -> upstream
    used: float = field(default_factory=time.monotonic)
    in_flight: int = 0


def access_tool(upstream: str, what: str) -> str:
    """The catalogue name that stands for reading an upstream's resources or getting its
    prompts: a ':' no MCP tool name can hold, so it never meets a real tool."""
    return f"{upstream}:{what}"


class Gateway:
    def __init__(self, guard: Guard, config: GatewayConfig, identify: Identify) -> None:
        self.guard = guard
        self.config = config
        self.workspace = config.workspace
        self._identify = identify
        self.upstreams = {  # the gateway's own sessions: tool lists and capabilities
            name: Upstream(name, spec, on_list_changed=self._list_changed)
            for name, spec in config.upstreams.items()
        }
        self.reviews: dict[str, Review] = {}
        self._offered_now: dict[str, Offered] | None = None
        self._connected: dict[object, _Connected] = {}  # agent sessions, least recent first
        self._posters: dict[str, http1.Pool] = {}  # HTTP upstreams: forward.py
        self._tasks: TaskGroup | None = None

    # -- starting ---------------------------------------------------------------------------

    async def start(self, tasks: TaskGroup) -> None:
        """Connect to every upstream and review its tools. One that cannot start is logged and
        offers nothing until it can: the gateway still serves the others."""
        self._tasks = tasks
        for name, spec in self.config.upstreams.items():
            poster = http1.pool(spec.url, spec.headers) if spec.url else None
            if poster is not None:
                self._posters[name] = poster
        for name, upstream in self.upstreams.items():
            try:
                await upstream.start(tasks)
                await self._review(upstream)
            except Exception as exc:  # that upstream's tools are not offered; the rest are
                log.error("upstream %s is not available: %s", name, exc)
        tasks.start_soon(self._housekeeping)

    async def close(self) -> None:
        for connected in self._connected.values():
            _close(connected)
        for upstream in self.upstreams.values():
            await upstream.close()
        for poster in self._posters.values():
            await poster.close()

    async def _housekeeping(self) -> None:
        """Now and then: close the upstream sessions of agent sessions gone quiet, and try
        again to reach (and review) the upstreams that could not be reached at start."""
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            now = time.monotonic()
            for key, connected in list(self._connected.items()):
                if now - connected.used > IDLE_SECONDS and not connected.in_flight:
                    _close(self._connected.pop(key))
            for name, upstream in self.upstreams.items():
                if name not in self.reviews:
                    try:
                        await self._review(upstream)
                    except Exception as exc:
                        log.warning("upstream %s is still not available: %s", name, exc)

    def _connection(self, ctx: Context, caller: Caller) -> _Connected:
        """The agent session's own upstream sessions (made on first use; the least recently
        used agent session's are closed past MAX_AGENT_SESSIONS), for the task that opened it
        alone: another task's request is refused, and changes nothing of them.

        Over HTTP the session's id is the request's `Mcp-Session-Id`, which only the SDK's
        handshake-era transport vouches for (a session it opened, of this same caller: it
        checks the owner). A request of a later protocol version carries no session of the
        SDK's, so the header is whatever the client wrote: it is refused rather than taken
        as a key, which would hand it another agent's upstream sessions, or make entries
        that push other agents' out. The door refuses those versions first (http.py)."""
        request = ctx.request
        key: object = "stdio"  # over stdio there is one agent session, of one task
        if request is not None:
            key = request.headers.get("mcp-session-id") or ""
            if not key:  # stateful HTTP always has one; never share another agent's
                raise MCPError(INVALID_REQUEST, "an MCP session is needed (Mcp-Session-Id)")
            if ctx.protocol_version not in SERVED_VERSIONS:
                raise MCPError(INVALID_REQUEST, unserved(ctx.protocol_version))
        held = self._connected.get(key)
        if held is not None and held.task != caller.claims.task:
            raise MCPError(INVALID_REQUEST, "this MCP session was opened by another task")
        connected = self._connected.pop(key, None)
        if connected is None:
            idle = [k for k, c in self._connected.items() if not c.in_flight]
            for old in idle[: max(0, len(self._connected) + 1 - MAX_AGENT_SESSIONS)]:
                _close(self._connected.pop(old))
            connected = _Connected(
                {
                    n: Upstream(
                        n,
                        spec,
                        tasks=self._tasks,
                        relay=Relay(ctx.session),
                        poster=self._posters.get(n),
                        on_list_changed=self._list_changed,
                    )
                    for n, spec in self.config.upstreams.items()
                },
                {n: anyio.Lock() for n in self.config.upstreams},
                ctx.session,
                caller.claims.task,
            )
        self._connected[key] = connected  # now the most recent
        connected.session, connected.used = ctx.session, time.monotonic()
        return connected

    @asynccontextmanager
    async def _using(
        self, ctx: Context, name: str, connected: _Connected, shown: Shown | None = None
    ) -> AsyncIterator[Upstream]:
        """The agent session's upstream `name`, its alone while the block runs, with what it
        sends its client pointed at this request (and kept in `shown`, if given)."""
        upstream = connected.upstreams[name]
        async with connected.locks[name]:
            assert upstream.relay is not None
            upstream.relay.bind(ctx.session, ctx.request_id, shown)
            with _counted(connected):
                yield upstream

    async def _send(
        self,
        ctx: Context,
        caller: Caller,
        name: str,
        what: str,
        send: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        """A request other than a tool call to upstream `name`; what goes wrong is an MCP
        error naming it, without the internals of the gateway or the upstream's answer."""
        async with self._using(ctx, name, self._connection(ctx, caller)) as upstream:
            try:
                return await upstream.request(what, send)
            except MCPError:
                raise
            except UpstreamUnavailable as exc:
                raise MCPError(INVALID_REQUEST, str(exc)) from None
            except Exception as exc:
                log.exception("upstream %s: %s", name, what)
                raise MCPError(INVALID_REQUEST, f"upstream {name}: {_message(exc)}") from None

    async def _review(self, upstream: Upstream) -> Review:
        listed = await upstream.list_tools()
        prefix = upstream.spec.prefix or ""
        result = await anyio.to_thread.run_sync(
            lambda: review(self.guard, self.workspace, upstream.name, prefix, listed)
        )
        self._access_tools(upstream)
        for name, why in result.flagged.items():
            log.warning("upstream tool %s is withheld: %s", name, why)
        self.reviews[upstream.name] = result
        self._offered_now = None
        return result

    def _access_tools(self, upstream: Upstream) -> None:
        """Catalogue entries for reading the upstream's resources and getting its prompts, made
        once: their output is the upstream's content, untrusted."""
        have = {t.name for t in self.guard.tools(self.workspace)}
        new = [
            Tool(
                workspace=self.workspace,
                name=access_tool(upstream.name, what),
                args_schema=schema,
                effects=("read",),
                output=OutputTrust.UNTRUSTED,
                description=f"{what} on upstream MCP server {upstream.name}",
            )
            for what, schema in ACCESS_ARGUMENTS.items()
            if _serves(upstream, what) and access_tool(upstream.name, what) not in have
        ]
        if new:
            self.guard.register_tools(self.workspace, new)

    async def _list_changed(self, upstream: Upstream) -> None:
        """An upstream says its tools changed: review them again (a change is flagged, never
        taken on trust), then tell the agents connected."""
        try:
            await self._review(upstream)
        except Exception:  # its tools are withheld until a review succeeds (housekeeping)
            log.exception("upstream %s: could not review its changed tool list", upstream.name)
            self.reviews.pop(upstream.name, None)
            self._offered_now = None
            return
        for connected in list(self._connected.values()):
            try:
                await connected.session.send_tool_list_changed()
            except Exception:  # that agent has gone: nothing to tell
                log.debug("could not tell an agent session that tools changed", exc_info=True)

    # -- the MCP server ----------------------------------------------------------------------

    def server(self) -> Server[Any]:
        server: Server[Any] = Server(
            "tether-gateway",
            version="1",
            instructions="Tool calls here are authorized by Tether, each in your task.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            on_subscribe_resource=self.subscribe_resource,
            on_unsubscribe_resource=self.unsubscribe_resource,
            on_completion=self.complete,
        )
        # Logging is deprecated from the 2026-07-28 revision; relayed for those that use it.
        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self.log_level)
        return server

    @staticmethod
    def initialization_options(server: Server[Any]) -> Any:
        return server.create_initialization_options(NotificationOptions(tools_changed=True))

    def _offered(self) -> dict[str, Offered]:
        """Every tool offered now (rebuilt when a review changes them)."""
        if self._offered_now is None:
            self._offered_now = {n: o for r in self.reviews.values() for n, o in r.offered.items()}
        return self._offered_now

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        scope = caller.claims.tools
        return types.ListToolsResult(
            tools=[o.definition for name, o in self._offered().items() if name in scope]
        )

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = self._identify(ctx)
        except Exception as exc:
            return _error(f"not authorized: {_message(exc)}")
        name, args = params.name, dict(params.arguments or {})
        elicit = (
            _elicit_form(ctx) if offers(ctx.session.client_capabilities, "elicitation") else None
        )

        async def ask(decision: Decision) -> Decision:
            return await self._step_up(elicit, caller, decision, name, args)

        shown: Shown = []

        async def send(connected: _Connected, offered: Offered) -> types.CallToolResult:
            async with self._using(ctx, offered.upstream, connected, shown) as upstream:
                return await upstream.call_tool(offered.original, args, _progress(ctx, shown))

        return await self._call(
            caller,
            name,
            args,
            lambda: self._connection(ctx, caller),
            ask=ask,
            send=send,
            shown=shown,
        )

    def hot_connection(self, key: str, caller: Caller) -> _Connected | None:
        """The agent session's upstream sessions, if its tool calls may take the hot path
        (hot_path.py): the session has been served here before, so what its client offers
        (sampling, elicitation) is known, and it was opened by the caller's task (another
        task's request goes to the SDK, which refuses it, untouched here)."""
        connected = self._connected.get(key)
        if connected is None or connected.task != caller.claims.task:
            return None
        del self._connected[key]
        self._connected[key] = connected  # now the most recent
        return connected if connected.session.client_capabilities is not None else None

    def hot_tool(self, name: str) -> bool:
        """Whether a call of tool `name` may take the hot path: its upstream is a URL (a call
        to a command goes through the SDK's session and its relay), or it is not offered (the
        refusal is the same on either path)."""
        offered = self._offered().get(name)
        return offered is None or bool(self.config.upstreams[offered.upstream].url)

    async def hot_call(
        self,
        connected: _Connected,
        caller: Caller,
        name: str,
        args: dict[str, Any],
        *,
        notify: Notify,
        ask_client: AskClient,
    ) -> types.CallToolResult:
        """A tool call on the hot path: decided, made and reported as `call_tool` does. What
        the upstream sends meanwhile goes to `notify` (and is kept, to be reported with the
        result), and what the call asks the client (an approval, or what the upstream asks it)
        to `ask_client`: both on the answer's own stream, where the client offers it."""
        capabilities = connected.session.client_capabilities
        shown: Shown = []  # filled only by a call that has notifications or asks

        async def showing(notification: types.ServerNotification) -> None:
            shown.append(notification)
            await notify(notification)

        async def showing_asks(request: types.ServerRequest, result: type[R]) -> R:
            shown.append(request)
            return await ask_client(request, result)

        async def upstream_asks(request: dict[str, Any]) -> dict[str, Any] | None:
            return await ask_agent(request, capabilities, showing_asks)

        async def send(connected: _Connected, offered: Offered) -> types.CallToolResult:
            with _counted(connected):
                upstream = connected.upstreams[offered.upstream]
                return await upstream.call_tool(
                    offered.original, args, None, showing, ask=upstream_asks
                )

        elicit = _asking(ask_client) if offers(capabilities, "elicitation") else None

        async def step_up(decision: Decision) -> Decision:
            return await self._step_up(elicit, caller, decision, name, args)

        return await self._call(
            caller, name, args, lambda: connected, ask=step_up, send=send, shown=shown
        )

    async def _call(
        self,
        caller: Caller,
        name: str,
        args: dict[str, Any],
        connect: Callable[[], _Connected],
        *,
        ask: Callable[[Decision], Awaitable[Decision]] | None,
        send: Callable[[_Connected, Offered], Awaitable[types.CallToolResult]],
        shown: Shown,
    ) -> types.CallToolResult:
        """Decide the call (asking the person through `ask` if it can), make it if allowed
        (`send`), and report what it returned, or how it failed, to its task before the agent
        sees it, with what the agent was shown while it ran (`shown`, which `send` fills: the
        upstream's notifications, passed on as they came)."""
        offered = self._offered().get(name)
        if offered is None:
            return self._not_offered(caller, name)
        try:
            connected = connect()  # before deciding: an allow is spent once made
            decision = await self._decide(caller, name, args)
            if decision.effect is Effect.APPROVAL_REQUIRED and ask is not None:
                decision = await ask(decision)
        except Exception as exc:  # no decision: no call
            log.exception("deciding %s", name)
            return _error(f"Tether could not decide this call, so it was not made: {_message(exc)}")
        if decision.effect is not Effect.ALLOW:
            return _refused(decision)
        if self._offered().get(name) is not offered:  # withheld while a person decided
            return _error(self._withheld(name, caller))
        try:
            result = await send(connected, offered)
        except Exception as exc:  # down, hung, its error, or an answer that does not parse
            why = str(exc) if isinstance(exc, UpstreamUnavailable | MCPError) else _message(exc)
            failure = f"the call was allowed (decision {decision.decision_id}) but failed: {why}"
            return self._reported(decision, _with_shown(failure, shown), _error(failure))
        return self._reported(decision, _with_shown(_output(result), shown), result)

    def _not_offered(self, caller: Caller, name: str) -> types.CallToolResult:
        """A call of a tool not offered: the proof's one-time id is written first (no decision
        claims it), so a replay is refused here too."""
        if caller.once and not self.guard.credentials.claim_once(caller.once):
            return _error(f"not authorized: {REPLAYED}")
        return _error(self._withheld(name, caller))

    def _withheld(self, name: str, caller: Caller) -> str:
        for upstream_review in self.reviews.values():
            why = upstream_review.flagged.get(name)
            if why is not None:
                try:
                    self.guard.audit.event(
                        "gateway.call_withheld",
                        workspace=self.workspace,
                        actor=caller.claims.agent,
                        subject=name,
                        task=caller.claims.task,
                        why=why,
                    )
                except Exception:  # the call is refused all the same
                    log.exception("recording a withheld call of %s", name)
                return (
                    f"tool {name} is withheld by the gateway: {why}. A person must review and "
                    "accept the upstream's new definition (tether gateway accept)."
                )
        return f"unknown tool {name}"

    async def _decide(self, caller: Caller, tool: str, args: dict[str, Any]) -> Decision:
        return await self.guard.authorize_async(
            tool, args, token=caller.token, proof=None, workspace=self.workspace, once=caller.once
        )

    async def _step_up(
        self,
        elicit: ElicitForm | None,
        caller: Caller,
        decision: Decision,
        tool: str,
        args: dict[str, Any],
    ) -> Decision:
        """Ask the person at the client (`elicit`, where the client can be asked), when that
        person (the user the agent acts for) may decide this request; then decide the call
        again, its proof spent already by the first decision. Otherwise, or if they close the
        form, or if the call is too long for a form to show whole (`_question`), the decision
        stands: the agent retries once someone decides."""
        approval_id = decision.approval_id
        if approval_id is None or not self.config.approvals.elicit or elicit is None:
            return decision
        question = _question(tool, args, decision)
        if question is None:
            return decision
        person = self.guard.approval(approval_id).user
        if self.guard.approvals.why_not(approval_id, person) is not None:
            return decision
        answer = await elicit(
            question,
            {
                "type": "object",
                "properties": {
                    "decision": {
                        "type": "string",
                        "enum": ["approve", "deny"],
                        "title": "Your decision",
                    },
                    "comment": {"type": "string", "title": "Comment (optional)"},
                },
                "required": ["decision"],
            },
        )
        if answer.action == "cancel":
            return decision
        content = answer.content or {}
        comment = str(content.get("comment") or "answered through MCP elicitation")
        if answer.action == "accept" and content.get("decision") == "approve":
            await anyio.to_thread.run_sync(
                lambda: self.guard.approve(approval_id, approver=person, comment=comment)
            )
        else:
            await anyio.to_thread.run_sync(
                lambda: self.guard.deny(approval_id, approver=person, comment=comment)
            )
        return await self._decide(replace(caller, once=()), tool, args)

    def _reported(
        self, decision: Decision, output: Any, answer: types.CallToolResult
    ) -> types.CallToolResult:
        """What the call returned goes to its task before the agent sees it: if the task cannot
        take it in, the agent does not get it either."""
        try:
            self.guard.report_decided(decision, output)
        except Exception as exc:
            log.exception("reporting decision %s", decision.decision_id)
            return _error(
                f"the result of the call could not be recorded in the task, so it is withheld: "
                f"{_message(exc)}"
            )
        return answer

    # -- resources and prompts ---------------------------------------------------------------

    def _readable(self, caller: Caller, what: str) -> list[Upstream]:
        """The upstreams that serve `what` (resources or prompts) and whose access tool for it
        the task holds."""
        scope = caller.claims.tools
        return [
            u
            for u in self.upstreams.values()
            if access_tool(u.name, what) in scope and _serves(u, what)
        ]

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        connected = self._connection(ctx, caller)
        listed: list[types.Resource] = []
        for upstream in self._readable(caller, READ_RESOURCE):
            page: types.ListResourcesResult = await self._send(
                ctx, caller, upstream.name, "resources/list", lambda s: s.list_resources()
            )
            for resource in page.resources:
                uri, owners = str(resource.uri), connected.resource_owner
                # A URI two upstreams list (in this listing or an earlier one) is neither's,
                # for good: reading it is refused, whichever lists it again.
                owner = owners.get(uri, upstream.name)
                owners[uri] = upstream.name if owner == upstream.name else None
            listed.extend(page.resources)
        return types.ListResourcesResult(resources=listed)

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        templates: list[types.ResourceTemplate] = []
        for upstream in self._readable(caller, READ_RESOURCE):
            page: types.ListResourceTemplatesResult = await self._send(
                ctx,
                caller,
                upstream.name,
                "resources/templates/list",
                lambda s: s.list_resource_templates(),
            )
            templates.extend(page.resource_templates)
        return types.ListResourceTemplatesResult(resource_templates=templates)

    def _resource_owner_of(self, ctx: Context, caller: Caller, uri: str) -> str:
        """The upstream a resource comes from: the one whose listing in this agent session
        named it, or the task's only upstream with resources. A URI two upstreams listed is
        refused: either could be the one that serves it."""
        candidates = {u.name for u in self._readable(caller, READ_RESOURCE)}
        owners = self._connection(ctx, caller).resource_owner
        owner = owners.get(uri) if uri in owners else None
        if uri in owners and owner is None:
            raise MCPError(
                INVALID_PARAMS,
                f"resource {uri} is listed by more than one upstream, so which one would serve "
                "it cannot be told: it is not read",
            )
        if uri not in owners and len(candidates) == 1:
            owner = next(iter(candidates))
        if owner is None or owner not in candidates:
            raise MCPError(INVALID_PARAMS, f"no one upstream of this task offers resource {uri}")
        return owner

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        uri = str(params.uri)
        owner = self._resource_owner_of(ctx, caller, uri)
        decision = await self._decided(caller, access_tool(owner, READ_RESOURCE), {"uri": uri})
        result: types.ReadResourceResult = await self._reporting(
            caller,
            decision,
            self._send(ctx, caller, owner, "resources/read", lambda s: s.read_resource(uri)),
        )
        return result

    async def subscribe_resource(
        self, ctx: Context, params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        """Updates of a resource the task may read go to the agent (relay.py)."""
        uri = str(params.uri)
        return await self._subscription(ctx, uri, "subscribe", lambda s: s.subscribe_resource(uri))

    async def unsubscribe_resource(
        self, ctx: Context, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        uri = str(params.uri)
        return await self._subscription(
            ctx, uri, "unsubscribe", lambda s: s.unsubscribe_resource(uri)
        )

    async def _subscription(
        self, ctx: Context, uri: str, verb: str, send: Callable[[Any], Awaitable[Any]]
    ) -> types.EmptyResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        owner = self._resource_owner_of(ctx, caller, uri)
        with legacy():  # removed from 2026-07-28; relayed for older clients
            result: types.EmptyResult = await self._send(
                ctx, caller, owner, f"resources/{verb}", send
            )
        return result

    async def list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        prompts: list[types.Prompt] = []
        for upstream in self._readable(caller, GET_PROMPT):
            page: types.ListPromptsResult = await self._send(
                ctx, caller, upstream.name, "prompts/list", lambda s: s.list_prompts()
            )
            prefix = upstream.spec.prefix or ""
            prompts.extend(p.model_copy(update={"name": prefix + p.name}) for p in page.prompts)
        return types.ListPromptsResult(prompts=prompts)

    def _prompt_owner(self, caller: Caller, name: str) -> tuple[str, str]:
        """The upstream a prompt comes from, by its prefix (no prefix begins another), and its
        name there."""
        for upstream in self._readable(caller, GET_PROMPT):
            prefix = upstream.spec.prefix or ""
            if name.startswith(prefix) and name != prefix:
                return upstream.name, name[len(prefix) :]
        raise MCPError(INVALID_PARAMS, f"no upstream of this task offers prompt {name}")

    async def get_prompt(
        self, ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller = _or_refuse(lambda: self._identify(ctx))
        owner, original = self._prompt_owner(caller, params.name)
        arguments = dict(params.arguments or {})
        said = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
        decision = await self._decided(
            caller, access_tool(owner, GET_PROMPT), {"name": original, "arguments": said}
        )
        result: types.GetPromptResult = await self._reporting(
            caller,
            decision,
            self._send(
                ctx,
                caller,
                owner,
                "prompts/get",
                lambda s: s.get_prompt(original, arguments or None),
            ),
        )
        return result

    async def complete(
        self, ctx: Context, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """Completing a prompt's or a resource template's argument reads the upstream: it is
        decided as getting that prompt (the argument so far as its arguments) or reading that
        template's URI, and what it suggests is reported to the task."""
        caller = _or_refuse(lambda: self._identify(ctx))
        ref = params.ref
        argument = json.dumps({params.argument.name: params.argument.value}, ensure_ascii=False)
        if isinstance(ref, types.PromptReference):
            owner, original = self._prompt_owner(caller, ref.name)
            ref = ref.model_copy(update={"name": original})
            tool, args = GET_PROMPT, {"name": original, "arguments": argument}
        else:
            owner = self._resource_owner_of(ctx, caller, str(ref.uri))
            tool, args = READ_RESOURCE, {"uri": str(ref.uri)}
        decision = await self._decided(caller, access_tool(owner, tool), args)
        forwarded = params.model_copy(update={"ref": ref})
        result: types.CompleteResult = await self._reporting(
            caller,
            decision,
            self._send(
                ctx,
                caller,
                owner,
                "completion/complete",
                lambda s: s.send_request(
                    types.CompleteRequest(params=forwarded), types.CompleteResult
                ),
            ),
        )
        return result

    async def log_level(
        self, ctx: Context, params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """The agent's log level goes to each upstream of its task that logs."""
        caller = _or_refuse(lambda: self._identify(ctx))
        scope = caller.claims.tools
        for upstream in self.upstreams.values():
            caps = upstream.capabilities
            offered = self.reviews.get(upstream.name)
            in_scope = offered is not None and any(name in scope for name in offered.offered)
            if caps is None or caps.logging is None or not in_scope:
                continue
            with legacy():
                await self._send(
                    ctx,
                    caller,
                    upstream.name,
                    "logging/setLevel",
                    lambda s: s.set_logging_level(params.level),
                )
        return types.EmptyResult()

    async def _decided(self, caller: Caller, tool: str, args: dict[str, Any]) -> Decision:
        """A decision that must be `allow`, else the request ends with its reasons as the
        error (resources and prompts have no error result of their own)."""
        try:
            decision = await self._decide(caller, tool, args)
        except Exception as exc:
            log.exception("deciding %s", tool)
            raise MCPError(
                INVALID_REQUEST, f"Tether could not decide it: {_message(exc)}"
            ) from None
        if decision.effect is not Effect.ALLOW:
            raise MCPError(INVALID_REQUEST, _refusal_text(decision))
        return decision

    async def _reporting(self, caller: Caller, decision: Decision, answer: Awaitable[Any]) -> Any:
        """The upstream's answer to an allowed request, once its task has taken it in; a
        failure is reported too (its text is what the agent reads) and then raised."""
        try:
            result = await answer
        except MCPError as exc:
            self._report_or_refuse(decision, f"the request failed: {exc}")
            raise
        self._report_or_refuse(decision, result.model_dump(mode="json", by_alias=True))
        return result

    def _report_or_refuse(self, decision: Decision, output: Any) -> None:
        try:
            self.guard.report_decided(decision, output)
        except Exception as exc:
            raise MCPError(
                INVALID_REQUEST, f"the result could not be recorded in the task: {_message(exc)}"
            ) from None


@contextmanager
def _counted(connected: _Connected) -> Iterator[None]:
    """A request to one of the agent session's upstream sessions is under way: they are not
    closed for being idle meanwhile."""
    connected.in_flight += 1
    try:
        yield
    finally:
        connected.in_flight -= 1
        connected.used = time.monotonic()


def _close(connected: _Connected) -> None:
    for upstream in connected.upstreams.values():
        upstream.stop()


def _serves(upstream: Upstream, what: str) -> bool:
    caps = upstream.capabilities
    if caps is None:
        return False
    return (caps.resources if what == READ_RESOURCE else caps.prompts) is not None


def _or_refuse(identify: Callable[[], Caller]) -> Caller:
    try:
        return identify()
    except Exception as exc:
        raise MCPError(INVALID_REQUEST, f"not authorized: {_message(exc)}") from None


def _elicit_form(ctx: Context) -> ElicitForm:
    """Ask the person through the SDK's session, on the stream of the request being served."""

    async def elicit(message: str, schema: dict[str, Any]) -> types.ElicitResult:
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)

    return elicit


def _asking(ask_client: AskClient) -> ElicitForm:
    """Ask the person the way the SDK's `elicit_form` does, through `ask_client`."""

    async def elicit(message: str, schema: dict[str, Any]) -> types.ElicitResult:
        params = types.ElicitRequestFormParams(message=message, requested_schema=schema)
        answer: types.ElicitResult = await ask_client(
            types.ElicitRequest(params=params), types.ElicitResult
        )
        return answer

    return elicit


def _progress(ctx: Context, shown: Shown) -> Any:
    """Relay the upstream's progress on a call to the agent, if the agent asked for it (and
    keep it in `shown`: its message is text the agent reads)."""
    token = ctx.meta.get("progress_token") if ctx.meta is not None else None
    if token is None:
        return None
    related = str(ctx.request_id) if ctx.request_id is not None else None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        params = types.ProgressNotificationParams(
            progress_token=token, progress=progress, total=total, message=message
        )
        shown.append(types.ProgressNotification(params=params))
        await ctx.session.send_progress_notification(
            token, progress, total, message, related_request_id=related
        )

    return relay


def _output(result: types.CallToolResult) -> Any:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def _with_shown(output: Any, shown: Shown) -> Any:
    """A call's output as reported to its task: with what its agent was shown while it ran
    (notifications, and what the upstream asked its client), under SHOWN (a key no result
    has), so that what the task takes in (labels, secrets, provenance) is all the agent read.
    Unchanged for a call with none."""
    if not shown:
        return output
    notified = [n.model_dump(mode="json", by_alias=True, exclude_none=True) for n in shown]
    return (
        {**output, SHOWN: notified}
        if isinstance(output, dict)
        else {"output": output, SHOWN: notified}
    )


def unserved(version: str) -> str:
    """Why a request of a protocol version without the handshake's sessions is not served:
    the gateway keeps each agent's upstream sessions in the agent's MCP session."""
    return (
        f"protocol version {version} is not served here; this gateway serves "
        f"{', '.join(SERVED_VERSIONS)}, opened with initialize"
    )


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, MCPError) else shown(exc)


def _refusal_text(decision: Decision) -> str:
    reasons = "; ".join(r.text for r in decision.reasons) or "no policy allows it"
    if decision.effect is Effect.APPROVAL_REQUIRED:
        return (
            f"approval required: {reasons}. Approval {decision.approval_id} is waiting for a "
            "person who may decide it; call again with the same arguments once it is approved "
            f"(decision {decision.decision_id})"
        )
    return f"denied by Tether: {reasons} (decision {decision.decision_id})"


def _refused(decision: Decision) -> types.CallToolResult:
    meta = {
        "tether/decision": {
            "effect": decision.effect.value,
            "decision_id": decision.decision_id,
            "approval_id": decision.approval_id,
            "reasons": [r.text for r in decision.reasons],
        }
    }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=_refusal_text(decision))],
        is_error=True,
        _meta=meta,
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _question(tool: str, args: dict[str, Any], decision: Decision) -> str | None:
    """The approval form's text, naming the call whole; None when its arguments are longer
    than a form shows (FORM_ARGUMENTS). Cut short, the form would show part of the call while
    *approve* approved all of it, and an agent could push what matters out of view: such a
    call is left to be approved where the whole of it is shown (`tether approvals`)."""
    reasons = "; ".join(r.text for r in decision.reasons)
    shown = json.dumps(args, sort_keys=True, ensure_ascii=False)
    if len(shown) > FORM_ARGUMENTS:
        return None
    return (
        f"Your agent asks to call {tool} with {shown}. Tether needs a person's approval: "
        f"{reasons}. Approve this one call? (approval {decision.approval_id})"
    )
