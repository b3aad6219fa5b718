"""Every endpoint of the API: who may call it, what it takes and gives, and what it does.

A handler gets a `Call` whose caller is already established (app.py) and calls the Guard, the
one place decisions and administration happen in this process; it answers with a Struct. Adding
an endpoint means adding a row to `ENDPOINTS`, which is also what the OpenAPI document and the
tests that try every endpoint without the right credential are made from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request

from tether.audit import verify
from tether.audit.review import review
from tether.catalogue import Catalogue, compile_tool
from tether.control import WorkspaceFolder
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    AccessClaims,
    ExchangeRequest,
    ExchangeResponse,
)
from tether.credentials.grants import MAX_GRANT_LIFETIME, MAX_TASK_LIFETIME
from tether.errors import CredentialRefused, Forbidden, InvalidInput, NotFound, problem_type
from tether.identity import register_key
from tether.identity.jwk import PRIVATE_MEMBERS
from tether.identity.spiffe import TRUST_DOMAIN_PATTERN
from tether.model import (
    MAX_RISK_TIER,
    Agent,
    AgentKey,
    ApprovalRequest,
    Decision,
    DecisionRecord,
    Effect,
    Grant,
    Stage,
    TaskSummary,
    Tool,
    User,
    Workspace,
)
from tether.names import Identifier, Named, Segment, ToolName
from tether.policy.backtest import BacktestReport
from tether.policy.testing import run_test_text
from tether.sdk import Guard
from tether.sdk.guard import DEFAULT_GRANT_LIFETIME, DEFAULT_TASK_TTL
from tether.server import admin_tokens
from tether.server.bodies import form_body, json_body
from tether.server.limits import OverBurst
from tether.server.problems import Problem
from tether.session import TaskState
from tether.store.admin_tokens import AdminTokenRecord

Auth = Literal["none", "agent", "token", "admin"]
Scope = Literal["path", "global", "resource"]


@dataclass
class Call:
    request: Request
    guard: Guard
    url: str  # the URL this request was sent to, as agents name it in their proofs
    params: dict[str, str]
    query: dict[str, str]
    raw: bytes | None
    admin: AdminTokenRecord | None = None
    token: str | None = None  # an agent's task token
    proof: str | None = None  # its DPoP proof for this request
    charge: Callable[[int], None] = lambda count: None  # more calls against the agent's rate

    def body(self, kind: type[Any]) -> Any:
        if not self.raw:
            raise InvalidInput("send a JSON body")
        return json_body(self.raw, kind)

    def require(self, workspace: str, role: str, missing: str) -> None:
        """For endpoints whose workspace is the resource's (an approval, a decision). A
        caller with no role in that workspace is told what a caller asking for an id that
        does not exist is told (`missing`, a 404): they cannot learn which ids exist there."""
        assert self.admin is not None
        if not admin_tokens.holds_any(self.admin, workspace):
            raise NotFound(missing)
        admin_tokens.require(self.admin, workspace, role)

    def require_everywhere(self, role: str) -> None:
        """For what reaches beyond one workspace (making one)."""
        assert self.admin is not None
        admin_tokens.require(self.admin, None, role)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Call], Any]
    auth: Auth
    role: str | None = None
    scope: Scope = "path"  # where an admin's role must hold: the path's workspace, every one,
    # or the resource's (the handler checks, once it has read the resource)
    body: Any = None
    response: Any = None
    status: int = 200
    summary: str = ""
    query: tuple[str, ...] = field(default_factory=tuple)  # their schemas: QUERY
    media_type: str = "application/json"  # of the answer
    # Run on the event loop rather than a worker thread: for the few endpoints that are the hot
    # path and whose work is bounded (app.py says why, and what it costs).
    inline: bool = False


# -- bodies and answers ---------------------------------------------------------------------------


class AuthorizeBody(msgspec.Struct, forbid_unknown_fields=True):
    tool: str
    args: Any = None
    workspace: str | None = None


MAX_BATCH = 100


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    calls: Annotated[
        list[AuthorizeBody], msgspec.Meta(extra_json_schema={"minItems": 1, "maxItems": MAX_BATCH})
    ]


class BatchAnswer(msgspec.Struct):
    decisions: list[Decision]


class ReportBody(msgspec.Struct, forbid_unknown_fields=True):
    """`unread`: the agent read only part of the output (too large, or some of it unreadable),
    so the task is labelled `unscanned`, as it would be in process."""

    decision_id: str
    output: Any = None
    unread: bool = False


class Health(msgspec.Struct):
    status: str
    detail: str = ""


class ListedWorkspace(msgspec.Struct, frozen=True):
    """A workspace as `GET /v1/workspaces` lists it: the whole record (a `Workspace`, field for
    field) where the token may read it, else only its name, the rest null (its settings hold
    secrets, such as webhook URLs)."""

    name: str
    tenant: str | None = None
    trust_domain: str | None = None
    created_at: float | None = None
    revision: int | None = None
    active_policy_version: str | None = None
    settings: dict[str, Any] | None = None
    shadow_policy_version: str | None = None


class Ended(msgspec.Struct):
    task_id: str
    status: str


class AgentStatusChange(msgspec.Struct):
    workspace: str
    agent: str
    status: str


class ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    """`approver`: who answers, if said: it must be the token's owner (an answer is theirs)."""

    comment: str = ""
    approver: str | None = None


class PoliciesBody(msgspec.Struct, forbid_unknown_fields=True):
    files: dict[str, str]  # file name -> Cedar text
    shadow: bool = False


class Activated(msgspec.Struct):
    workspace: str
    version: str
    shadow: bool


class Validated(msgspec.Struct):
    """`cedar_schema`: the schema the bundle was validated against (the workspace's catalogue),
    so a client can compile the very bundle itself."""

    version: str
    policies: int
    cedar_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class BacktestBody(msgspec.Struct, forbid_unknown_fields=True):
    files: dict[str, str]  # the candidate bundle: file name -> Cedar text
    since: float  # replay the decisions made since then (seconds since the epoch)


class Changed(msgspec.Struct):
    id: str
    status: str


# What a workspace's settings may say; their values' own rules (hours in
# order, a time zone that exists, webhook URLs) are the service's to check.
SETTINGS_SCHEMA = {
    "description": "working_hours (docs/policy-guide.md), approvals (docs/approvals.md), audit "
    "(docs/audit.md)",
    "properties": {
        "working_hours": {
            "type": "object",
            "properties": {
                "start": {"type": "integer", "minimum": 0, "maximum": 23},
                "end": {"type": "integer", "minimum": 1, "maximum": 24},
                "weekdays": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 6},
                },
                "timezone": {"type": "string", "description": "an IANA time zone"},
            },
            "required": ["start", "end"],
        },
        "approvals": {"type": "object"},
        "audit": {"type": "object"},
    },
    "additionalProperties": False,
}


class WorkspaceBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Segment
    tenant: Segment = "default"
    trust_domain: Annotated[
        str, msgspec.Meta(extra_json_schema={"pattern": TRUST_DOMAIN_PATTERN})
    ] = "tether.local"
    settings: Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=SETTINGS_SCHEMA)] = (
        msgspec.field(default_factory=dict)
    )


class AgentBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Segment
    kind: Segment
    owner: Named
    ceiling: list[ToolName] | None = None


# An EC P-256 public key; that its x and y are a point of the curve is the service's to check.
PUBLIC_JWK = {
    "properties": {
        "kty": {"const": "EC"},
        "crv": {"const": "P-256"},
        "x": {"type": "string"},
        "y": {"type": "string"},
    },
    "required": ["kty", "crv", "x", "y"],
    "not": {"anyOf": [{"required": [member]} for member in PRIVATE_MEMBERS]},
}


class KeyBody(msgspec.Struct, forbid_unknown_fields=True):
    # the public half only: an agent's private key never leaves it
    jwk: Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=PUBLIC_JWK)]


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Named
    roles: list[Identifier] = msgspec.field(default_factory=list)


class ToolBody(msgspec.Struct, forbid_unknown_fields=True):
    """A catalogue entry (docs/catalogue.md); the tool's name is the path's."""

    effects: Annotated[list[Identifier], msgspec.Meta(extra_json_schema={"minItems": 1})]
    args_schema: dict[str, Any] | None = None
    sinks: list[str] = msgspec.field(default_factory=list)
    output: Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["trusted", "untrusted"]})] = (
        "trusted"
    )
    labels: list[str] = msgspec.field(default_factory=list)
    risk_tier: Annotated[str, msgspec.Meta(max_length=MAX_RISK_TIER)] = "low"
    description: str = ""


class GrantBody(msgspec.Struct, forbid_unknown_fields=True):
    user: Named
    agent: Segment
    tools: Annotated[list[ToolName], msgspec.Meta(extra_json_schema={"minItems": 1})]
    max_ttl: Annotated[
        float,
        msgspec.Meta(extra_json_schema={"exclusiveMinimum": 0, "maximum": MAX_TASK_LIFETIME}),
    ] = DEFAULT_TASK_TTL
    may_act: list[Segment] = msgspec.field(default_factory=list)
    expires_in: Annotated[
        float,
        msgspec.Meta(extra_json_schema={"exclusiveMinimum": 0, "maximum": MAX_GRANT_LIFETIME}),
    ] = DEFAULT_GRANT_LIFETIME


class CheckBody(msgspec.Struct, forbid_unknown_fields=True):
    """A call to decide as `agent` would make it for `user`, in a one-off task granting `tool`."""

    agent: Segment
    user: Named
    tool: ToolName
    args: Any = None
    request: str = ""


class VerifyReport(msgspec.Struct):
    intact: bool
    records: int
    chains: int
    checkpoints: int
    problems: list[str]


class ReviewReport(msgspec.Struct):
    workspace: str
    since: float
    until: float
    findings: list[str]
    agents: list[dict[str, Any]]


# -- health and keys ---------------------------------------------------------------------------


def healthz(call: Call) -> Health:
    return Health("ok")


def readyz(call: Call) -> Health:
    """Ready when the store answers."""
    try:
        call.guard.store.revisions()
    except Exception as exc:
        raise Problem(503, f"the store does not answer: {type(exc).__name__}") from exc
    return Health("ready")


def jwks(call: Call) -> dict[str, object]:
    return call.guard.credentials.jwks()


# -- agents: tokens and decisions ------------------------------------------------------------------


def token(call: Call) -> ExchangeResponse:
    """RFC 8693 token exchange: the body is form-encoded (or JSON); the DPoP header proves the
    key the token will be bound to."""
    kind = call.request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        request = call.body(ExchangeRequest)
    else:
        request = msgspec.convert(form_body(call.raw or b""), ExchangeRequest, strict=False)
    proof = call.request.headers.get("dpop")
    if request.decision_id is not None:
        return _downstream(call, request, proof)
    jkt = call.guard.credentials.proven_key(proof)
    return call.guard.exchange(request, dpop_jkt=jkt).response


def _downstream(call: Call, request: ExchangeRequest, proof: str | None) -> ExchangeResponse:
    """A downstream token (RFC 8693 with an `audience`): the subject is the task token, the
    DPoP proof proves its key, `decision_id` names the one allowed call it is for."""
    if request.subject_token_type != ACCESS_TOKEN_TYPE:
        raise CredentialRefused(
            f"a downstream token is exchanged from a task token ({ACCESS_TOKEN_TYPE})",
            "invalid_request",
        )
    issued = call.guard.credentials.downstream(
        request.subject_token,
        proof=proof,
        audience=request.audience or "",
        decision_id=request.decision_id or "",
    )
    return issued.response


async def authorize(call: Call) -> Decision:
    """One decision. A call whose credential is refused is recorded, and answered 401."""
    body = call.body(AuthorizeBody)
    decision = await call.guard.authorize_async(
        body.tool, body.args, workspace=body.workspace, token=call.token or "", proof=call.proof
    )
    _counted(call, decision)
    if decision.reasons and decision.reasons[0].stage is Stage.AUTHENTICATE:
        refused = CredentialRefused(f"{decision.reason} (decision {decision.decision_id})")
        raise Problem(
            401,
            str(refused),
            kind=problem_type(refused),
            error=refused.error,
            decision=msgspec.to_builtins(decision),  # as recorded: a client reads it back
        )
    return decision


def authorize_batch(call: Call) -> BatchAnswer:
    """Several calls of the caller's task, decided in order, under one proof: the request's."""
    body = call.body(BatchBody)
    if not 1 <= len(body.calls) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} calls")
    try:
        call.charge(len(body.calls) - 1)  # the request itself was counted as one
    except OverBurst as exc:  # more than the rate's burst: no wait would let it through
        raise Problem(
            413,
            f"a batch of {len(body.calls)} calls is over this service's burst: waiting does "
            f"not help; send at most {exc.largest} calls a batch",
        ) from exc
    _proven(call)
    return BatchAnswer(
        [
            _counted(
                call,
                call.guard.authorize(
                    None, c.tool, c.args, workspace=c.workspace, token=call.token, proven=True
                ),
            )
            for c in body.calls
        ]
    )


def _counted(call: Call, decision: Decision) -> Decision:
    """A decision answered over HTTP, counted in the service's metrics."""
    call.request.app.state.metrics.decided(decision)
    return decision


def check(call: Call) -> Decision:
    """What a call would be answered, decided for real in a one-off task of the agent and
    recorded like any other decision, its task's request naming the person who asked (the
    service acts as the agent here, so this is an admin's)."""
    body = call.body(CheckBody)
    assert call.admin is not None
    with call.guard.task(
        workspace=call.params["workspace"],
        agent=body.agent,
        user=body.user,
        request=f"[check by {call.admin.name}] {body.request}".strip(),
        tools=[body.tool],
    ) as task:
        decision: Decision = task.authorize(body.tool, body.args)
    return decision


def _proven(call: Call) -> AccessClaims:
    """The caller's token, proven by its proof for this very request (raises if not)."""
    return call.guard.credentials.authenticate(
        call.token or "",
        proof=call.proof,
        htm=call.request.method,
        htu=call.url,
        require_proof=True,
    )


def _agent_task(call: Call) -> str:
    """The task of the caller's token (proven for this request), which must be the path's."""
    claims = _proven(call)
    if claims.task != call.params["task_id"]:
        raise CredentialRefused(
            f"the token is for task {claims.task}, not {call.params['task_id']}"
        )
    return claims.task


def report(call: Call) -> Ended:
    task_id = _agent_task(call)
    body = call.body(ReportBody)
    call.guard.report(task_id, body.decision_id, body.output, complete=not body.unread)
    return Ended(task_id, "reported")


def end_task(call: Call) -> Ended:
    task_id = _agent_task(call)
    call.guard.end_task(task_id)
    return Ended(task_id, "ended")


def task_summary(call: Call) -> TaskSummary:
    """What the caller's task has done so far."""
    return _summary(call.guard.task_state(_agent_task(call)))


def _summary(state: TaskState) -> TaskSummary:
    with state.lock:
        return TaskSummary(
            task=state.task,
            status=state.status,
            calls=state.calls,
            allowed=state.allowed,
            denied=state.denied,
            executed=state.executed,
            outside_workspace=state.outside_workspace,
            labels=frozenset(state.labels),
            calls_by_tool=dict(state.calls_by_tool),
            calls_by_effect=dict(state.calls_by_effect),
        )


MAX_WAIT = 5.0  # seconds an agent's request for an approval's status may wait (long poll)


def approval_status(call: Call) -> ApprovalRequest:
    """An approval the caller's task asked for, once decided or after `wait` seconds (at most
    MAX_WAIT; none by default): an agent waits for a person by asking again."""
    task_id = _agent_task(call)
    wait = min(max(_seconds(call, "wait") or 0.0, 0.0), MAX_WAIT)
    request = call.guard.approvals.get(call.params["approval_id"])
    if request.task_id != task_id:  # another task's: as unknown as one that does not exist
        raise NotFound(f"no approval request {call.params['approval_id']!r} of task {task_id}")
    return call.guard.approvals.wait(request.id, wait) if wait else request


# -- administration ----------------------------------------------------------------------------


def add_workspace(call: Call) -> Workspace:
    body = call.body(WorkspaceBody)
    return call.guard.add_workspace(
        body.name, tenant=body.tenant, trust_domain=body.trust_domain, settings=body.settings
    )


def workspace(call: Call) -> Workspace:
    return call.guard.workspace(call.params["workspace"])


def apply_folder(call: Call) -> Changed:
    """A workspace folder's files (`WorkspaceFolder`), applied as `tether apply` would; making
    a workspace takes an admin of every workspace, as `POST /v1/workspaces` does."""
    folder = call.body(WorkspaceFolder)
    name = call.params["workspace"]
    if folder.name != name:
        raise InvalidInput(f"workspace.yaml names workspace {folder.name!r}, not {name!r}")
    if call.guard.store.workspace(name) is None:
        call.require_everywhere("admin")
    return Changed(call.guard.apply_directory(folder), "applied")


def workspaces(call: Call) -> list[ListedWorkspace]:
    """The workspaces the token holds a role in: in full where it may read the workspace
    (`auditor`, as `GET /v1/workspaces/{workspace}` asks), else only the name."""
    assert call.admin is not None
    held = call.admin.roles
    return [
        ListedWorkspace(**msgspec.structs.asdict(w))
        if admin_tokens.holds(held, w.name, "auditor")
        else ListedWorkspace(w.name)
        for w in call.guard.store.workspaces()
        if admin_tokens.holds_any(call.admin, w.name)
    ]


def agents(call: Call) -> list[Agent]:
    return call.guard.store.agents(call.params["workspace"])


def register_agent(call: Call) -> Agent:
    body = call.body(AgentBody)
    return call.guard.register_agent(
        call.params["workspace"], body.name, kind=body.kind, owner=body.owner, ceiling=body.ceiling
    )


def _agent(call: Call) -> Agent:
    workspace, name = call.params["workspace"], call.params["agent"]
    call.guard.workspace(workspace)
    agent = call.guard.store.agent(workspace, name)
    if agent is None:
        raise NotFound(f"agent {name!r} is not registered in workspace {workspace!r}")
    return agent


def agent_keys(call: Call) -> list[AgentKey]:
    agent = _agent(call)
    return call.guard.store.credentials.agent_keys(agent.workspace, agent.name)


def add_agent_key(call: Call) -> AgentKey:
    """An agent's public key (its private half stays with the agent)."""
    agent = _agent(call)
    return register_key(
        call.guard.store,
        workspace=agent.workspace,
        agent=agent.name,
        jwk=call.body(KeyBody).jwk,
        now=time.time(),
    )


def revoke_agent_key(call: Call) -> Changed:
    """The key proves nothing from now on, and every token bound to it is refused."""
    agent = _agent(call)
    call.guard.credentials.revoke_agent_key(agent.workspace, agent.name, call.params["kid"])
    return Changed(call.params["kid"], "revoked")


def add_user(call: Call) -> User:
    body = call.body(UserBody)
    return call.guard.add_user(call.params["workspace"], body.name, body.roles)


def tools(call: Call) -> list[Tool]:
    return call.guard.tools(call.params["workspace"])


def put_tool(call: Call) -> Tool:
    body = call.body(ToolBody)
    return call.guard.register_tool(
        call.params["workspace"],
        call.params["tool"],
        effects=body.effects,
        args_schema=body.args_schema,
        sinks=body.sinks,
        output=body.output,
        labels=body.labels,
        risk_tier=body.risk_tier,
        description=body.description,
    )


def suspend(call: Call) -> AgentStatusChange:
    workspace, name = call.params["workspace"], call.params["agent"]
    call.guard.suspend_agent(workspace, name)
    return AgentStatusChange(workspace, name, "suspended")


def resume(call: Call) -> AgentStatusChange:
    workspace, name = call.params["workspace"], call.params["agent"]
    call.guard.resume_agent(workspace, name)
    return AgentStatusChange(workspace, name, "active")


def grants(call: Call) -> list[Grant]:
    return call.guard.store.credentials.grants(call.params["workspace"])


def revoke_grant(call: Call) -> Changed:
    missing = f"no grant {call.params['grant_id']!r}"
    grant = call.guard.store.credentials.grant(call.params["grant_id"])
    if grant is None:
        raise NotFound(missing)
    call.require(grant.workspace, "admin", missing)
    call.guard.revoke_grant(grant.id)
    return Changed(grant.id, "revoked")


def revoke_task(call: Call) -> Changed:
    """Revoke a task and every task delegated from it."""
    missing = f"no task {call.params['task_id']!r}"
    task = call.guard.store.task(call.params["task_id"])
    if task is None:
        raise NotFound(missing)
    call.require(task.workspace, "admin", missing)
    call.guard.revoke_task(task.id)
    return Changed(task.id, "revoked")


def add_grant(call: Call) -> Grant:
    body = call.body(GrantBody)
    return call.guard.grant(
        call.params["workspace"],
        user=body.user,
        agent=body.agent,
        tools=body.tools,
        max_ttl=body.max_ttl,
        may_act=body.may_act,
        expires_in=body.expires_in,
    )


def validate_policies(call: Call) -> Validated:
    bundle = call.guard.check_policies(call.params["workspace"], call.body(PoliciesBody).files)
    return Validated(bundle.version, len(bundle.files), dict(bundle.cedar_schema))


def activate_policies(call: Call) -> Activated:
    body = call.body(PoliciesBody)
    workspace = call.params["workspace"]
    version = call.guard.activate_policies(workspace, body.files, shadow=body.shadow)
    return Activated(workspace, version, body.shadow)


class PolicyTestBody(msgspec.Struct, forbid_unknown_fields=True):
    """A candidate bundle and its test cases (a tests.yaml's text, docs/policy-guide.md)."""

    files: dict[str, str]
    tests: str


class CaseOutcome(msgspec.Struct):
    name: str
    passed: bool
    expected: str
    got: str
    determining: list[str]
    detail: str


class PolicyTestReport(msgspec.Struct):
    passed: int
    failed: int
    cases: list[CaseOutcome]


def test_policies(call: Call) -> PolicyTestReport:
    """Run the cases against the candidate, typed by the workspace's catalogue, among its
    agents (or the cases' own `agents:`), as `tether policy test` does."""
    body = call.body(PolicyTestBody)
    workspace = call.params["workspace"]
    tools = call.guard.tools(workspace)
    catalogue = Catalogue({tool.name: compile_tool(tool) for tool in tools})
    agents = call.guard.store.agents(workspace)
    results = run_test_text(body.tests, body.files, catalogue, agents, workspace)
    cases = [
        CaseOutcome(
            name=r.case.name,
            passed=r.passed,
            expected=r.case.expect.value,
            got=r.effect.value,
            determining=list(r.determining),
            detail=r.detail,
        )
        for r in results
    ]
    failed = sum(not c.passed for c in cases)
    return PolicyTestReport(len(cases) - failed, failed, cases)


def stop_shadow(call: Call) -> Changed:
    call.guard.stop_shadow(call.params["workspace"])
    return Changed(call.params["workspace"], "no shadow policies")


def backtest(call: Call) -> BacktestReport:
    """Replay the workspace's decisions since `since` against a candidate bundle."""
    body = call.body(BacktestBody)
    workspace = call.params["workspace"]
    candidate = call.guard.check_policies(workspace, body.files)
    return call.guard.backtest(workspace, candidate, since=body.since)


def pending_approvals(call: Call) -> list[ApprovalRequest]:
    return call.guard.approvals.pending(call.params["workspace"])


def approval(call: Call) -> ApprovalRequest:
    request = call.guard.approval(call.params["approval_id"])
    call.require(request.workspace, "approver", _missing_approval(call))
    return request


def _missing_approval(call: Call) -> str:
    return f"no approval request {call.params['approval_id']!r}"  # as Approvals.get says


def _answer_approval(call: Call, approve: bool) -> ApprovalRequest:
    request = call.guard.approvals.get(call.params["approval_id"])
    call.require(request.workspace, "approver", _missing_approval(call))
    assert call.admin is not None
    body = call.body(ApproveBody) if call.raw else ApproveBody()
    if body.approver is not None and body.approver != call.admin.name:
        raise Forbidden(
            f"this token is {call.admin.name}'s: it answers as {call.admin.name}, "
            f"not as {body.approver}"
        )
    answer = call.guard.approve if approve else call.guard.deny
    return answer(request.id, approver=call.admin.name, comment=body.comment)


def approve(call: Call) -> ApprovalRequest:
    return _answer_approval(call, approve=True)


def deny(call: Call) -> ApprovalRequest:
    return _answer_approval(call, approve=False)


def decisions(call: Call) -> list[DecisionRecord]:
    query = call.query
    try:
        limit = int(query.get("limit", "100"))
    except ValueError as exc:
        raise InvalidInput(f"limit is a whole number: {exc}") from exc
    since = _seconds(call, "since")
    return call.guard.decisions(
        call.params["workspace"],
        agent=query.get("agent"),
        task_id=query.get("task"),
        tool=query.get("tool"),
        effect=query.get("effect"),
        since=since,
        limit=limit,
    )


def explain(call: Call) -> DecisionRecord:
    missing = f"no decision {call.params['decision_id']!r}"
    record = call.guard.store.decision(call.params["decision_id"])
    if record is None or record.workspace is None:
        raise NotFound(missing)
    call.require(record.workspace, "auditor", missing)
    return record


def verify_log(call: Call) -> VerifyReport:
    report = verify(call.guard.store, call.guard.credentials.keyring)
    return VerifyReport(
        report.intact, report.records, report.chains, report.checkpoints, report.problems
    )


def access_review(call: Call) -> ReviewReport:
    window = _seconds(call, "window")
    if window is None:
        window = 30 * 86400.0
    now = time.time()
    result = review(call.guard.store, call.params["workspace"], since=now - window, until=now)
    return ReviewReport(
        result.workspace,
        result.since,
        result.until,
        result.findings,
        [msgspec.to_builtins(a.__dict__) for a in result.agents],
    )


def _seconds(call: Call, name: str) -> float | None:
    """A query parameter that is a number of seconds, if given: a finite one (Python reads
    "nan" and "inf" as floats, and a review over an infinite window answered `since: null`)."""
    if name not in call.query:
        return None
    try:
        value = float(call.query[name])
    except ValueError as exc:
        raise InvalidInput(f"{name} is seconds: {exc}") from exc
    if not math.isfinite(value):
        raise InvalidInput(f"{name} is a finite number of seconds, not {call.query[name]!r}")
    return value


def metrics(call: Call) -> Any:
    return call.request.app.state.metrics.response()


# What each query parameter holds, as the OpenAPI document says (the handlers parse them).
QUERY: dict[str, dict[str, Any]] = {
    "wait": {"type": "number", "description": f"seconds, at most {MAX_WAIT:.0f}"},
    "agent": {"type": "string"},
    "task": {"type": "string"},
    "tool": {"type": "string"},
    "effect": {"type": "string", "enum": [e.value for e in Effect]},
    "since": {"type": "number", "description": "seconds since the epoch"},
    "limit": {"type": "integer", "description": "1 to 1,000 (nearer is taken)"},
    "window": {"type": "number", "description": "seconds back from now"},
}

WS = "/v1/workspaces/{workspace}"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET", "/healthz", healthz, auth="none", response=Health, summary="Alive", inline=True
    ),
    Endpoint("GET", "/readyz", readyz, auth="none", response=Health, summary="Store answers"),
    Endpoint(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        auth="none",
        response=dict[str, Any],
        summary="The keys task tokens and checkpoints are signed with",
        inline=True,
    ),
    Endpoint(
        "POST",
        "/v1/token",
        token,
        auth="token",
        body=ExchangeRequest,
        response=ExchangeResponse,
        summary="RFC 8693 token exchange (DPoP-bound task tokens)",
    ),
    Endpoint(
        "POST",
        "/v1/authorize",
        authorize,
        auth="agent",
        body=AuthorizeBody,
        response=Decision,
        summary="Decide one call of the caller's task",
        inline=True,
    ),
    Endpoint(
        "POST",
        "/v1/authorize/batch",
        authorize_batch,
        auth="agent",
        body=BatchBody,
        response=BatchAnswer,
        summary="Decide several calls of the caller's task, in order",
        inline=True,
    ),
    Endpoint(
        "POST",
        "/v1/tasks/{task_id}/report",
        report,
        auth="agent",
        body=ReportBody,
        response=Ended,
        summary="What an allowed call returned",
    ),
    Endpoint(
        "POST",
        "/v1/tasks/{task_id}/end",
        end_task,
        auth="agent",
        response=Ended,
        summary="The task is done",
    ),
    Endpoint(
        "GET",
        "/v1/tasks/{task_id}",
        task_summary,
        auth="agent",
        response=TaskSummary,
        summary="What the caller's task has done so far",
    ),
    Endpoint(
        "GET",
        "/v1/tasks/{task_id}/approvals/{approval_id}",
        approval_status,
        auth="agent",
        response=ApprovalRequest,
        summary="An approval the caller's task asked for (waits up to `wait` s for an answer)",
        query=("wait",),
    ),
    Endpoint(
        "POST",
        "/v1/tasks/{task_id}/revoke",
        revoke_task,
        auth="admin",
        role="admin",
        scope="resource",
        response=Changed,
        summary="Revoke a task and every task delegated from it",
    ),
    Endpoint(
        "GET",
        "/v1/workspaces",
        workspaces,
        auth="admin",
        role="auditor",
        scope="resource",
        response=list[ListedWorkspace],
        summary="The workspaces the token covers (in full where it may read them; else names)",
    ),
    Endpoint(
        "POST",
        "/v1/workspaces",
        add_workspace,
        auth="admin",
        role="admin",
        scope="global",
        body=WorkspaceBody,
        response=Workspace,
        status=201,
        summary="Make a workspace",
    ),
    Endpoint(
        "GET",
        WS,
        workspace,
        auth="admin",
        role="auditor",
        response=Workspace,
        summary="A workspace: its revision and policy versions",
    ),
    Endpoint(
        "POST",
        f"{WS}/apply",
        apply_folder,
        auth="admin",
        role="admin",
        body=WorkspaceFolder,
        response=Changed,
        summary="Apply a workspace folder (workspace.yaml, catalogue.yaml, policies/)",
    ),
    Endpoint(
        "GET",
        f"{WS}/agents",
        agents,
        auth="admin",
        role="auditor",
        response=list[Agent],
        summary="Agents",
    ),
    Endpoint(
        "POST",
        f"{WS}/agents",
        register_agent,
        auth="admin",
        role="admin",
        body=AgentBody,
        response=Agent,
        status=201,
        summary="Register an agent (or change one)",
    ),
    Endpoint(
        "GET",
        f"{WS}/agents/{{agent}}/keys",
        agent_keys,
        auth="admin",
        role="auditor",
        response=list[AgentKey],
        summary="An agent's public keys",
    ),
    Endpoint(
        "POST",
        f"{WS}/agents/{{agent}}/keys",
        add_agent_key,
        auth="admin",
        role="admin",
        body=KeyBody,
        response=AgentKey,
        status=201,
        summary="Register a public key of an agent",
    ),
    Endpoint(
        "POST",
        f"{WS}/agents/{{agent}}/keys/{{kid}}/revoke",
        revoke_agent_key,
        auth="admin",
        role="admin",
        response=Changed,
        summary="Revoke an agent's key, and every token bound to it",
    ),
    Endpoint(
        "POST",
        f"{WS}/users",
        add_user,
        auth="admin",
        role="admin",
        body=UserBody,
        response=User,
        status=201,
        summary="Add a user (or change their roles)",
    ),
    Endpoint(
        "GET",
        f"{WS}/tools",
        tools,
        auth="admin",
        role="auditor",
        response=list[Tool],
        summary="The tool catalogue",
    ),
    Endpoint(
        "PUT",
        f"{WS}/tools/{{tool}}",
        put_tool,
        auth="admin",
        role="admin",
        body=ToolBody,
        response=Tool,
        summary="Register or replace a tool (active policies are checked against it)",
    ),
    Endpoint(
        "POST",
        f"{WS}/agents/{{agent}}/suspend",
        suspend,
        auth="admin",
        role="admin",
        response=AgentStatusChange,
        summary="The kill switch",
    ),
    Endpoint(
        "POST",
        f"{WS}/agents/{{agent}}/resume",
        resume,
        auth="admin",
        role="admin",
        response=AgentStatusChange,
        summary="Resume a suspended agent",
    ),
    Endpoint(
        "GET",
        f"{WS}/grants",
        grants,
        auth="admin",
        role="auditor",
        response=list[Grant],
        summary="Delegations",
    ),
    Endpoint(
        "POST",
        f"{WS}/grants",
        add_grant,
        auth="admin",
        role="admin",
        body=GrantBody,
        response=Grant,
        status=201,
        summary="A user delegates tools to an agent",
    ),
    Endpoint(
        "POST",
        "/v1/grants/{grant_id}/revoke",
        revoke_grant,
        auth="admin",
        role="admin",
        scope="resource",
        response=Changed,
        summary="Revoke a grant, and every token issued under it",
    ),
    Endpoint(
        "POST",
        f"{WS}/check",
        check,
        auth="admin",
        role="admin",
        body=CheckBody,
        response=Decision,
        summary="Decide one call of an agent, in a one-off task",
    ),
    Endpoint(
        "POST",
        f"{WS}/policies/validate",
        validate_policies,
        auth="admin",
        role="policy-author",
        body=PoliciesBody,
        response=Validated,
        summary="Validate a candidate bundle",
    ),
    Endpoint(
        "POST",
        f"{WS}/policies",
        activate_policies,
        auth="admin",
        role="policy-author",
        body=PoliciesBody,
        response=Activated,
        summary="Activate a bundle (or as shadow)",
    ),
    Endpoint(
        "DELETE",
        f"{WS}/policies/shadow",
        stop_shadow,
        auth="admin",
        role="policy-author",
        response=Changed,
        summary="Stop evaluating shadow policies",
    ),
    Endpoint(
        "POST",
        f"{WS}/policies/test",
        test_policies,
        auth="admin",
        role="policy-author",
        body=PolicyTestBody,
        response=PolicyTestReport,
        summary="Run test cases against a candidate bundle",
    ),
    Endpoint(
        "POST",
        f"{WS}/policies/backtest",
        backtest,
        auth="admin",
        role="policy-author",
        body=BacktestBody,
        response=BacktestReport,
        summary="Replay recorded decisions against a candidate bundle",
    ),
    Endpoint(
        "GET",
        f"{WS}/approvals",
        pending_approvals,
        auth="admin",
        role="approver",
        response=list[ApprovalRequest],
        summary="Requests waiting for a person",
    ),
    Endpoint(
        "GET",
        "/v1/approvals/{approval_id}",
        approval,
        auth="admin",
        role="approver",
        scope="resource",
        response=ApprovalRequest,
        summary="One approval request, as it is now",
    ),
    Endpoint(
        "POST",
        "/v1/approvals/{approval_id}/approve",
        approve,
        auth="admin",
        role="approver",
        scope="resource",
        body=ApproveBody,
        response=ApprovalRequest,
        summary="Approve a call",
    ),
    Endpoint(
        "POST",
        "/v1/approvals/{approval_id}/deny",
        deny,
        auth="admin",
        role="approver",
        scope="resource",
        body=ApproveBody,
        response=ApprovalRequest,
        summary="Refuse a call",
    ),
    Endpoint(
        "GET",
        f"{WS}/decisions",
        decisions,
        auth="admin",
        role="auditor",
        response=list[DecisionRecord],
        summary="The decision log, newest first",
        query=("agent", "task", "tool", "effect", "since", "limit"),
    ),
    Endpoint(
        "GET",
        "/v1/decisions/{decision_id}",
        explain,
        auth="admin",
        role="auditor",
        scope="resource",
        response=DecisionRecord,
        summary="One decision and what decided it",
    ),
    Endpoint(
        "POST",
        "/v1/audit/verify",
        verify_log,
        auth="admin",
        role="auditor",
        scope="global",
        response=VerifyReport,
        summary="Check every chain and checkpoint",
    ),
    Endpoint(
        "GET",
        f"{WS}/review",
        access_review,
        auth="admin",
        role="auditor",
        response=ReviewReport,
        summary="Access review",
        query=("window",),
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        auth="admin",
        role="auditor",
        scope="global",
        summary="Prometheus metrics",
        media_type="text/plain",
    ),
]
