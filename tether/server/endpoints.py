"""Every endpoint of the API: who may call it, what it takes and gives, and what it does.

A handler gets a `Call` whose caller is already established (app.py) and calls the Guard, the
one place decisions and administration happen in this process; it answers with a Struct. Adding
an endpoint means adding a row to `ENDPOINTS`, which is also what the OpenAPI document and the
tests that try every endpoint without the right credential are made from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request

from tether.audit import verify
from tether.audit.review import review
from tether.credentials import AccessClaims, ExchangeRequest, ExchangeResponse
from tether.errors import CredentialRefused, InvalidInput, NotFound
from tether.model import (
    Agent,
    ApprovalRequest,
    Decision,
    DecisionRecord,
    Effect,
    Grant,
    Stage,
    Workspace,
)
from tether.sdk import Guard
from tether.sdk.guard import DEFAULT_GRANT_LIFETIME, DEFAULT_TASK_TTL
from tether.server import admin_tokens
from tether.server.problems import Problem
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
        return msgspec.json.decode(self.raw, type=kind)

    def require(self, workspace: str, role: str) -> None:
        """For endpoints whose workspace is the resource's (an approval, a decision)."""
        assert self.admin is not None
        admin_tokens.require(self.admin, workspace, role)


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
    query: tuple[str, ...] = field(default_factory=tuple)


# -- bodies and answers ---------------------------------------------------------------------------


class AuthorizeBody(msgspec.Struct, forbid_unknown_fields=True):
    tool: str
    args: Any = None
    workspace: str | None = None


MAX_BATCH = 100


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    calls: list[AuthorizeBody]


class BatchAnswer(msgspec.Struct):
    decisions: list[Decision]


class ReportBody(msgspec.Struct, forbid_unknown_fields=True):
    decision_id: str
    output: Any = None


class Health(msgspec.Struct):
    status: str
    detail: str = ""


class Ended(msgspec.Struct):
    task_id: str
    status: str


class AgentStatusChange(msgspec.Struct):
    workspace: str
    agent: str
    status: str


class ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    comment: str = ""


class PoliciesBody(msgspec.Struct, forbid_unknown_fields=True):
    files: dict[str, str]  # file name -> Cedar text
    shadow: bool = False


class Activated(msgspec.Struct):
    workspace: str
    version: str
    shadow: bool


class Validated(msgspec.Struct):
    version: str
    policies: int


class GrantBody(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    agent: str
    tools: list[str]
    max_ttl: float = DEFAULT_TASK_TTL
    may_act: list[str] = msgspec.field(default_factory=list)
    expires_in: float = DEFAULT_GRANT_LIFETIME


class CheckBody(msgspec.Struct, forbid_unknown_fields=True):
    """A call to decide as `agent` would make it for `user`, in a one-off task granting `tool`."""

    agent: str
    user: str
    tool: str
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
        try:
            fields = dict(parse_qsl((call.raw or b"").decode("utf-8", "strict")))
        except UnicodeDecodeError as exc:
            raise InvalidInput("the form body is not UTF-8") from exc
        request = msgspec.convert(fields, ExchangeRequest, strict=False)
    jkt = call.guard.credentials.proven_key(call.request.headers.get("dpop"))
    return call.guard.exchange(request, dpop_jkt=jkt).response


def authorize(call: Call) -> Decision:
    """One decision. A call whose credential is refused is recorded, and answered 401."""
    body = call.body(AuthorizeBody)
    decision = call.guard.authorize(
        None, body.tool, body.args, workspace=body.workspace, token=call.token, proof=call.proof
    )
    if decision.reasons and decision.reasons[0].stage is Stage.AUTHENTICATE:
        raise CredentialRefused(f"{decision.reason} (decision {decision.decision_id})")
    return decision


def authorize_batch(call: Call) -> BatchAnswer:
    """Several calls of the caller's task, decided in order, under one proof: the request's."""
    body = call.body(BatchBody)
    if not 1 <= len(body.calls) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} calls")
    call.charge(len(body.calls) - 1)  # the request itself was counted as one
    _proven(call)
    return BatchAnswer(
        [
            call.guard.authorize(
                None, c.tool, c.args, workspace=c.workspace, token=call.token, proven=True
            )
            for c in body.calls
        ]
    )


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
        call.token or "", proof=call.proof, htm="POST", htu=call.url, require_proof=True
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
    call.guard.report(task_id, body.decision_id, body.output)
    return Ended(task_id, "reported")


def end_task(call: Call) -> Ended:
    task_id = _agent_task(call)
    call.guard.end_task(task_id)
    return Ended(task_id, "ended")


# -- administration ----------------------------------------------------------------------------


def workspaces(call: Call) -> list[Workspace]:
    assert call.admin is not None
    held = call.admin.roles
    return [
        w
        for w in call.guard.store.workspaces()
        if admin_tokens.EVERY_WORKSPACE in held or w.name in held
    ]


def agents(call: Call) -> list[Agent]:
    return call.guard.store.agents(call.params["workspace"])


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
    return Validated(bundle.version, len(bundle.files))


def activate_policies(call: Call) -> Activated:
    body = call.body(PoliciesBody)
    workspace = call.params["workspace"]
    version = call.guard.activate_policies(workspace, body.files, shadow=body.shadow)
    return Activated(workspace, version, body.shadow)


def pending_approvals(call: Call) -> list[ApprovalRequest]:
    return call.guard.approvals.pending(call.params["workspace"])


def _answer_approval(call: Call, approve: bool) -> ApprovalRequest:
    request = call.guard.approvals.get(call.params["approval_id"])
    call.require(request.workspace, "approver")
    assert call.admin is not None
    comment = call.body(ApproveBody).comment if call.raw else ""
    answer = call.guard.approve if approve else call.guard.deny
    return answer(request.id, approver=call.admin.name, comment=comment)


def approve(call: Call) -> ApprovalRequest:
    return _answer_approval(call, approve=True)


def deny(call: Call) -> ApprovalRequest:
    return _answer_approval(call, approve=False)


def decisions(call: Call) -> list[DecisionRecord]:
    query = call.query
    try:
        limit = min(int(query.get("limit", "100")), 1000)
        since = float(query["since"]) if "since" in query else None
    except ValueError as exc:
        raise InvalidInput(f"limit and since are numbers: {exc}") from exc
    effect = query.get("effect")
    if effect is not None and effect not in {e.value for e in Effect}:
        raise InvalidInput(f"effect is one of {', '.join(e.value for e in Effect)}")
    return call.guard.store.decisions(
        workspace=call.params["workspace"],
        agent=query.get("agent"),
        task_id=query.get("task"),
        tool=query.get("tool"),
        effect=effect,
        since=since,
        limit=max(limit, 1),
    )


def explain(call: Call) -> DecisionRecord:
    record = call.guard.store.decision(call.params["decision_id"])
    if record is None or record.workspace is None:
        raise NotFound(f"no decision {call.params['decision_id']!r}")
    call.require(record.workspace, "auditor")
    return record


def verify_log(call: Call) -> VerifyReport:
    report = verify(call.guard.store, call.guard.credentials.keyring)
    return VerifyReport(
        report.intact, report.records, report.chains, report.checkpoints, report.problems
    )


def access_review(call: Call) -> ReviewReport:
    try:
        window = float(call.query.get("window", str(30 * 86400)))
    except ValueError as exc:
        raise InvalidInput("window is seconds") from exc
    now = time.time()
    result = review(call.guard.store, call.params["workspace"], since=now - window, until=now)
    return ReviewReport(
        result.workspace,
        result.since,
        result.until,
        result.findings,
        [msgspec.to_builtins(a.__dict__) for a in result.agents],
    )


def metrics(call: Call) -> Any:
    return call.request.app.state.metrics.response()


WS = "/v1/workspaces/{workspace}"

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/healthz", healthz, auth="none", response=Health, summary="Alive"),
    Endpoint("GET", "/readyz", readyz, auth="none", response=Health, summary="Store answers"),
    Endpoint(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        auth="none",
        response=dict[str, Any],
        summary="The keys task tokens and checkpoints are signed with",
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
    ),
    Endpoint(
        "POST",
        "/v1/authorize/batch",
        authorize_batch,
        auth="agent",
        body=BatchBody,
        response=BatchAnswer,
        summary="Decide several calls of the caller's task, in order",
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
        "/v1/workspaces",
        workspaces,
        auth="admin",
        role="auditor",
        scope="resource",
        response=list[Workspace],
        summary="The workspaces the token covers",
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
        "GET",
        f"{WS}/approvals",
        pending_approvals,
        auth="admin",
        role="approver",
        response=list[ApprovalRequest],
        summary="Requests waiting for a person",
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
    ),
]
