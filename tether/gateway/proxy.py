"""The gateway's MCP server: every request an agent makes is answered under its task's authority.

- `tools/list`: the upstreams' tools (renamed `<upstream>.<tool>`) in the task's scope and not
  flagged (tools.py).
- `tools/call`: a Tether decision. Allow forwards the call and reports its result to the task;
  deny is a tool error carrying the reasons; `approval_required` asks the person at the client
  through elicitation when it can, else is a tool error naming the approval to retry after.
- `resources/*`: listed where the task holds `<upstream>:resources/read`; each read is a
  decision of that tool (the URI its argument), and its content is reported to the task.
- `prompts/*`: the same with `<upstream>:prompts/get` (the prompt's name and arguments).

Whatever goes wrong on the way (no decision, an upstream down or hanging, a result the task
could not take in) is an error answer: nothing is forwarded that was not allowed, and nothing an
upstream returned reaches the agent unless its task has read it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST

from tether.credentials.access_token import AccessClaims
from tether.errors import TetherError
from tether.gateway.config import GatewayConfig
from tether.gateway.tools import Offered, Review, catalogue_name, review
from tether.gateway.upstream import Upstream, UpstreamUnavailable
from tether.model import Decision, Effect, OutputTrust, Tool
from tether.sdk import Guard

log = logging.getLogger("tether.gateway")

READ_RESOURCE = "resources/read"
GET_PROMPT = "prompts/get"
Context = ServerRequestContext[Any, Any]


@dataclass(frozen=True)
class Caller:
    """Whom a request is from: its task token (proven already, or needing `proof`) and the
    token's claims."""

    token: str
    proof: str | None
    claims: AccessClaims


Identify = Callable[[Context], Caller]


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
        self.upstreams = {
            name: Upstream(name, spec, on_list_changed=self._list_changed)
            for name, spec in config.upstreams.items()
        }
        self.reviews: dict[str, Review] = {}
        self._resource_owner: dict[str, str] = {}  # uri -> upstream, from the last listings
        self._clients: set[Any] = set()  # sessions to tell when the tool list changed

    # -- starting ---------------------------------------------------------------------------

    async def start(self, tasks: TaskGroup) -> None:
        """Connect to every upstream and review its tools. One that cannot start is logged and
        offers nothing until it can: the gateway still serves the others."""
        for name, upstream in self.upstreams.items():
            try:
                await upstream.start(tasks)
                await self._review(upstream)
            except Exception as exc:  # that upstream's tools are not offered; the rest are
                log.error("upstream %s is not available: %s", name, exc)

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()

    async def _review(self, upstream: Upstream) -> Review:
        listed = await upstream.list_tools()
        result = await anyio.to_thread.run_sync(
            lambda: review(self.guard, self.workspace, upstream.name, listed)
        )
        self._access_tools(upstream)
        for name, why in result.flagged.items():
            log.warning("upstream tool %s is withheld: %s", name, why)
        self.reviews[upstream.name] = result
        return result

    def _access_tools(self, upstream: Upstream) -> None:
        """Catalogue entries for reading the upstream's resources and getting its prompts, made
        once: their output is the upstream's content, untrusted."""
        have = {t.name for t in self.guard.tools(self.workspace)}
        caps = upstream.capabilities
        wanted = []
        if caps is not None and caps.resources is not None:
            wanted.append((READ_RESOURCE, {"uri": {"type": "string"}}, ["uri"]))
        if caps is not None and caps.prompts is not None:
            wanted.append(
                (
                    GET_PROMPT,
                    {"name": {"type": "string"}, "arguments": {"type": "string"}},
                    ["name"],
                )
            )
        new = [
            Tool(
                workspace=self.workspace,
                name=access_tool(upstream.name, what),
                args_schema={"type": "object", "properties": props, "required": required},
                effects=("read",),
                output=OutputTrust.UNTRUSTED,
                description=f"{what} on upstream MCP server {upstream.name}",
            )
            for what, props, required in wanted
            if access_tool(upstream.name, what) not in have
        ]
        if new:
            self.guard.register_tools(self.workspace, new)

    async def _list_changed(self, upstream: Upstream) -> None:
        """An upstream says its tools changed: review them again (a change is flagged, never
        taken on trust), then tell the agents connected."""
        try:
            await self._review(upstream)
        except Exception:
            log.exception("upstream %s: could not review its changed tool list", upstream.name)
            return
        for session in list(self._clients):
            try:
                await session.send_tool_list_changed()
            except Exception:
                self._clients.discard(session)

    # -- the MCP server ----------------------------------------------------------------------

    def server(self) -> Server[Any]:
        return Server(
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
        )

    @staticmethod
    def initialization_options(server: Server[Any]) -> Any:
        return server.create_initialization_options(NotificationOptions(tools_changed=True))

    def _caller(self, ctx: Context) -> Caller:
        """The request's caller, whose token must still stand (a revoked task sees nothing)."""
        caller = self._identify(ctx)
        self.guard.credentials.authenticate(caller.token)
        self._clients.add(ctx.session)
        return caller

    def _offered(self) -> dict[str, Offered]:
        return {n: o for r in self.reviews.values() for n, o in r.offered.items()}

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        scope = caller.claims.tools
        return types.ListToolsResult(
            tools=[o.definition for name, o in self._offered().items() if name in scope]
        )

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = self._caller(ctx)
        except Exception as exc:
            return _error(f"not authorized: {_message(exc)}")
        name, args = params.name, dict(params.arguments or {})
        offered = self._offered().get(name)
        if offered is None:
            return _error(self._withheld(name, caller))
        try:
            decision = await self._decide(caller, name, args)
            if decision.effect is Effect.APPROVAL_REQUIRED:
                decision = await self._step_up(ctx, caller, decision, name, args)
        except Exception as exc:  # no decision: no call
            log.exception("deciding %s", name)
            return _error(f"Tether could not decide this call, so it was not made: {_message(exc)}")
        if decision.effect is not Effect.ALLOW:
            return _refused(decision)
        upstream = self.upstreams[offered.upstream]
        try:
            result: types.CallToolResult = await upstream.request(
                f"tools/call {offered.original}",
                lambda s: s.call_tool(offered.original, args, progress_callback=_progress(ctx)),
            )
        except (UpstreamUnavailable, MCPError) as exc:
            failure = f"the call was allowed (decision {decision.decision_id}) but failed: {exc}"
            return self._reported(caller, decision, failure, _error(failure))
        return self._reported(caller, decision, _output(result), result)

    def _withheld(self, name: str, caller: Caller) -> str:
        for upstream_review in self.reviews.values():
            why = upstream_review.flagged.get(name)
            if why is not None:
                self.guard.audit.event(
                    "gateway.call_withheld",
                    workspace=self.workspace,
                    actor=caller.claims.agent,
                    subject=name,
                    task=caller.claims.task,
                    why=why,
                )
                return (
                    f"tool {name} is withheld by the gateway: {why}. A person must review and "
                    "accept the upstream's new definition (tether gateway accept)."
                )
        return f"unknown tool {name}"

    async def _decide(self, caller: Caller, tool: str, args: dict[str, Any]) -> Decision:
        return await self.guard.authorize_async(
            tool, args, token=caller.token, proof=caller.proof, workspace=self.workspace
        )

    async def _step_up(
        self, ctx: Context, caller: Caller, decision: Decision, tool: str, args: dict[str, Any]
    ) -> Decision:
        """Ask the person at the client, when the client can be asked and that person (the user
        the agent acts for) may decide this request; then decide the call again. Otherwise, or
        if they close the form, the decision stands: the agent retries once someone decides."""
        approval_id = decision.approval_id
        if approval_id is None or not self.config.approvals.elicit or not _can_elicit(ctx):
            return decision
        person = self.guard.approval(approval_id).user
        if self.guard.approvals.why_not(approval_id, person) is not None:
            return decision
        answer = await ctx.session.elicit_form(
            _question(tool, args, decision),
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
            related_request_id=ctx.request_id,
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
        return await self._decide(caller, tool, args)

    def _reported(
        self, caller: Caller, decision: Decision, output: Any, answer: types.CallToolResult
    ) -> types.CallToolResult:
        """What the call returned goes to its task before the agent sees it: if the task cannot
        take it in, the agent does not get it either."""
        try:
            self.guard.report(caller.claims.task, decision.decision_id, output)
        except Exception as exc:
            log.exception("reporting decision %s", decision.decision_id)
            return _error(
                f"the result of the call could not be recorded in the task, so it is withheld: "
                f"{_message(exc)}"
            )
        return answer

    # -- resources and prompts ---------------------------------------------------------------

    def _readable(self, caller: Caller, what: str) -> list[Upstream]:
        scope = caller.claims.tools
        return [
            u
            for u in self.upstreams.values()
            if access_tool(u.name, what) in scope and u.capabilities is not None
        ]

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        listed: list[types.Resource] = []
        for upstream in self._readable(caller, READ_RESOURCE):
            if upstream.capabilities is None or upstream.capabilities.resources is None:
                continue
            page: types.ListResourcesResult = await _upstream(
                upstream, "resources/list", lambda s: s.list_resources()
            )
            for resource in page.resources:
                self._resource_owner[str(resource.uri)] = upstream.name
            listed.extend(page.resources)
        return types.ListResourcesResult(resources=listed)

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        templates: list[types.ResourceTemplate] = []
        for upstream in self._readable(caller, READ_RESOURCE):
            if upstream.capabilities is None or upstream.capabilities.resources is None:
                continue
            page: types.ListResourceTemplatesResult = await _upstream(
                upstream, "resources/templates/list", lambda s: s.list_resource_templates()
            )
            templates.extend(page.resource_templates)
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        uri = str(params.uri)
        candidates = [
            u
            for u in self._readable(caller, READ_RESOURCE)
            if u.capabilities is not None and u.capabilities.resources is not None
        ]
        owner = self._resource_owner.get(uri)
        if owner is None and len(candidates) == 1:
            owner = candidates[0].name
        if owner is None or owner not in {u.name for u in candidates}:
            raise MCPError(INVALID_PARAMS, f"no upstream of this task offers resource {uri}")
        decision = await self._decided(caller, access_tool(owner, READ_RESOURCE), {"uri": uri})
        result: types.ReadResourceResult = await _upstream(
            self.upstreams[owner], "resources/read", lambda s: s.read_resource(uri)
        )
        self._report_or_refuse(caller, decision, result.model_dump(mode="json", by_alias=True))
        return result

    async def list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        prompts: list[types.Prompt] = []
        for upstream in self._readable(caller, GET_PROMPT):
            if upstream.capabilities is None or upstream.capabilities.prompts is None:
                continue
            page: types.ListPromptsResult = await _upstream(
                upstream, "prompts/list", lambda s: s.list_prompts()
            )
            prompts.extend(
                p.model_copy(update={"name": catalogue_name(upstream.name, p.name)})
                for p in page.prompts
            )
        return types.ListPromptsResult(prompts=prompts)

    async def get_prompt(
        self, ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller = _or_refuse(lambda: self._caller(ctx))
        owner, _, original = params.name.partition(".")
        if owner not in {u.name for u in self._readable(caller, GET_PROMPT)} or not original:
            raise MCPError(INVALID_PARAMS, f"no upstream of this task offers prompt {params.name}")
        arguments = dict(params.arguments or {})
        # The arguments as JSON text: a prompt's are free-form, and a policy reads a string.
        said = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
        decision = await self._decided(
            caller, access_tool(owner, GET_PROMPT), {"name": original, "arguments": said}
        )
        result: types.GetPromptResult = await _upstream(
            self.upstreams[owner],
            "prompts/get",
            lambda s: s.get_prompt(original, arguments or None),
        )
        self._report_or_refuse(caller, decision, result.model_dump(mode="json", by_alias=True))
        return result

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

    def _report_or_refuse(self, caller: Caller, decision: Decision, output: Any) -> None:
        try:
            self.guard.report(caller.claims.task, decision.decision_id, output)
        except Exception as exc:
            raise MCPError(
                INVALID_REQUEST, f"the result could not be recorded in the task: {_message(exc)}"
            ) from None


async def _upstream(upstream: Upstream, what: str, send: Callable[[Any], Awaitable[Any]]) -> Any:
    try:
        return await upstream.request(what, send)
    except UpstreamUnavailable as exc:
        raise MCPError(INVALID_REQUEST, str(exc)) from None


def _or_refuse(identify: Callable[[], Caller]) -> Caller:
    try:
        return identify()
    except Exception as exc:
        raise MCPError(INVALID_REQUEST, f"not authorized: {_message(exc)}") from None


def _can_elicit(ctx: Context) -> bool:
    caps = ctx.session.client_capabilities
    return caps is not None and caps.elicitation is not None


def _progress(ctx: Context) -> Any:
    """Relay the upstream's progress on a call to the agent, if the agent asked for it."""
    token = ctx.meta.get("progress_token") if ctx.meta is not None else None
    if token is None:
        return None
    related = str(ctx.request_id) if ctx.request_id is not None else None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.send_progress_notification(
            token, progress, total, message, related_request_id=related
        )

    return relay


def _output(result: types.CallToolResult) -> Any:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TetherError | MCPError) else type(exc).__name__


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


def _question(tool: str, args: dict[str, Any], decision: Decision) -> str:
    reasons = "; ".join(r.text for r in decision.reasons)
    shown = json.dumps(args, sort_keys=True, ensure_ascii=False)
    if len(shown) > 2000:
        shown = shown[:2000] + "…"
    return (
        f"Your agent asks to call {tool} with {shown}. Tether needs a person's approval: "
        f"{reasons}. Approve this one call? (approval {decision.approval_id})"
    )
