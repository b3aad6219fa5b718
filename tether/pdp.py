"""The decision pipeline (DESIGN.md section 2), and the only place that orders its stages:

    authenticate -> workspace gate -> task gate -> context -> policy -> approval -> record -> answer

Each stage is a small function that reads the `Call`, may add to it, and returns None to go on or
a `Reason` to deny. The pipeline runs every stage under a guard: an exception, or missing data,
is a deny whose reason names the stage. Every decision, denies included, is recorded and
committed before it is answered; if it cannot be recorded, the answer is a deny.

Stages only read the task's state; the decision changes it once decided, as one event
(tether/session/task.py), written in its record's transaction with its proof's one-time id
(store/writes.py). Where tasks are shared by several processes, writing that event is how a
decision made on a stale state is found out: it is then made again.

The pipeline is written once, as a generator of the steps that wait (take a task's lock, store
a record: `Hold`, `Write`), and carried out by one of two drivers: `decide` does each step
here and now (the embedded Guard, its threads sharing commits), `decide_async` awaits them on
an event loop (the service), so the records of the calls a worker has in flight are committed
together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from tether.approvals import Approvals, ApprovalSettings, call_hash, canonical_json
from tether.audit import AuditLog
from tether.audit.redaction import DIGEST, FULL, Redaction
from tether.catalogue import ArgumentError, CompiledTool, decision_context
from tether.credentials import AccessClaims, Credentials
from tether.credentials.dpop import REPLAYED
from tether.errors import CredentialRefused, shown
from tether.model import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    DecisionRecord,
    Effect,
    Reason,
    Stage,
    TaskStatus,
    new_id,
)
from tether.policy import Bundle, Verdict, evaluate
from tether.session import Decided, TaskState, TaskStates
from tether.session.risk import Activity, AgentActivity, assess
from tether.session.task import Event
from tether.store import Store
from tether.store.writes import Claims, Refusal
from tether.workspace import Views, WorkspaceView

log = logging.getLogger("tether.pdp")

MAX_ARGS_BYTES = 1024 * 1024
MAX_ATTEMPTS = 5  # decisions of one call, when other processes keep changing its task
_encode = msgspec.json.Encoder().encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.Decoder().decode


class AuthorizeRequest(msgspec.Struct, frozen=True):
    """A call an agent wants to make. `token` is its task token, `proof` a DPoP proof of holding
    the token's key (required when the call came over the network). `workspace` is where the
    caller means the call to happen; it defaults to the task's, and anywhere else is denied."""

    tool: str
    args: Any
    task_id: str | None = None
    workspace: str | None = None
    token: str | None = None
    proof: str | None = None


@dataclass(frozen=True)
class ProofRule:
    """What a DPoP proof must be for: the method and URL calls arrive on, and whether one is
    required (over a network, yes; in-process, where no token travels, it is checked if sent)."""

    htm: str = "POST"
    htu: str = "tether:embedded"
    required: bool = False


PROVEN = ProofRule(required=False)  # for calls whose proof their caller checked


@dataclass
class Call:
    """One call on its way through the pipeline; each stage fills in what it establishes."""

    request: AuthorizeRequest
    now: float
    task: TaskState | None = None
    view: WorkspaceView | None = None
    agent: Agent | None = None
    tool: CompiledTool | None = None
    args_json: bytes | None = None
    activity: AgentActivity | None = None
    context: dict[str, Any] | None = None
    verdict: Verdict | None = None
    claims: AccessClaims | None = None
    shadow: dict[str, Any] | None = None  # the shadow bundle's answer, for the record
    approval_id: str | None = None
    outside: bool = False  # aimed at another workspace (the task remembers it: a risk signal)
    spend: ApprovalRequest | None = None  # the approval that allows it, used once it counts
    said: bytes | None = None  # the arguments (JSON) the decision read: the agent said them
    inherited: frozenset[str] = frozenset()  # its parent tasks' labels its task lacked
    # One-time ids (its proof's) checked but not yet written: claimed with its record.
    once: list[tuple[str, float]] = field(default_factory=list)
    decision_id: str = field(default_factory=lambda: new_id("dec_"))

    def again(self, now: float) -> Call:
        """The same call, authenticated, to be decided again on its task's newer state."""
        return Call(
            self.request,
            now,
            task=self.task,
            claims=self.claims,
            once=self.once,
            decision_id=self.decision_id,
        )

    def remember_once(self, key: str, until: float) -> bool:
        """The proof's one-time id, kept to be claimed in the decision's transaction (a
        replay is found there, before the answer)."""
        self.once.append((key, until))
        return True

    def event(self, decision: Decision) -> Decided:
        """What deciding it did to its task."""
        return Decided(
            decision_id=decision.decision_id,
            tool=self.request.tool,
            effects=self.tool.spec.effects if self.tool is not None else (),
            effect=decision.effect,
            at=self.now,
            args=self.said,
            outside=self.outside,
            inherited=self.inherited,
        )


def authenticate(
    call: Call, tasks: TaskStates, credentials: Credentials, proofs: ProofRule
) -> Reason | None:
    """Who is calling, for whom, in which task: a valid, unrevoked task token (and, when sent or
    required, the proof its holder has the key)."""
    request = call.request
    if request.token is None:
        return Reason(
            Stage.AUTHENTICATE,
            "no task: tool calls are authorized only inside a task"
            if request.task_id is None
            else f"no credential for task {request.task_id}: present its token",
        )
    try:
        claims = credentials.authenticate(
            request.token,
            proof=request.proof,
            htm=proofs.htm,
            htu=proofs.htu,
            require_proof=proofs.required,
            remember_once=call.remember_once,
        )
    except CredentialRefused as exc:
        # A genuine token refused (revoked, or an unproven holder): the denial is the task's.
        if isinstance(exc.subject, AccessClaims):
            call.claims, call.task = exc.subject, _task_of(exc.subject, tasks)
        return Reason(Stage.AUTHENTICATE, f"credential refused: {exc}")
    call.claims = claims  # a denial below is still the token's workspace's (its redaction)
    if request.task_id is not None and request.task_id != claims.task:
        return Reason(
            Stage.AUTHENTICATE, f"the token is for task {claims.task}, not {request.task_id}"
        )
    call.task = _task_of(claims, tasks)
    if call.task is None:
        return Reason(Stage.AUTHENTICATE, f"task {claims.task} is not open here")
    return None


def _task_of(claims: AccessClaims, tasks: TaskStates) -> TaskState | None:
    task = tasks.get(claims.task)
    if task is None or (task.task.workspace, task.task.agent) != (claims.ws, claims.agent):
        return None
    return task


def workspace_gate(call: Call, views: Views) -> Reason | None:
    """The coarse boundary: the workspace exists, the agent is registered and active in it, and
    the tool is in its catalogue."""
    assert call.task is not None
    task = call.task.task
    target = call.request.workspace or task.workspace
    if target != task.workspace:
        call.outside = True  # a risk signal for the rest of the task
        return Reason(
            Stage.WORKSPACE,
            f"task {task.id} belongs to workspace {task.workspace} (its token was issued "
            f"there); it cannot act in {target}",
        )
    call.view = views.get(target)
    if call.view is None:
        return Reason(Stage.WORKSPACE, f"workspace {target} does not exist")
    call.agent = call.view.agents.get(task.agent)
    if call.agent is None:
        return Reason(
            Stage.WORKSPACE, f"agent {task.agent} is not registered in workspace {target}"
        )
    if call.agent.status is not AgentStatus.ACTIVE:
        return Reason(Stage.WORKSPACE, f"agent {task.agent} is {call.agent.status.value}")
    call.tool = call.view.catalogue.get(call.request.tool)
    if call.tool is None:
        return Reason(
            Stage.WORKSPACE,
            f"tool {call.request.tool} is not in the catalogue of workspace {target}",
        )
    return None


def task_gate(call: Call) -> Reason | None:
    """The fine boundary: the task is open, unexpired, and was granted this tool."""
    assert call.task is not None
    state = call.task
    if state.status is not TaskStatus.OPEN:
        return Reason(Stage.TASK, f"task {state.id} is {state.status.value}")
    if call.now >= state.task.expires_at:
        return Reason(Stage.TASK, f"task {state.id} expired")
    if call.request.tool not in state.granted:
        granted = ", ".join(sorted(state.granted)) or "none"
        return Reason(
            Stage.TASK,
            f"tool {call.request.tool} is outside this task's scope (granted: {granted})",
        )
    assert call.claims is not None
    if call.request.tool not in call.claims.tools:
        return Reason(
            Stage.TASK,
            f"tool {call.request.tool} is outside the token's scope ({call.claims.scope})",
        )
    return None


def build_context(call: Call, activity: Activity, tasks: TaskStates) -> Reason | None:
    """Everything the policies may look at, typed as the workspace's Cedar schema says: the
    arguments, the task's state (with the labels of the tasks it was delegated from), where
    each sink argument's value came from, and the risk."""
    assert call.task is not None and call.tool is not None and call.view is not None
    if call.task.task.parent is not None:
        call.inherited = tasks.inherited(call.task)
    call.args_json = _encode_sorted(call.request.args)
    if len(call.args_json) > MAX_ARGS_BYTES:
        return Reason(Stage.CONTEXT, f"arguments are larger than {MAX_ARGS_BYTES} bytes")
    unfaithful = unfaithful_argument(call.request.args)
    if unfaithful is not None:
        return Reason(Stage.CONTEXT, unfaithful)
    # Policies see the arguments as JSON, exactly as recorded: no Python subclass (an enum
    # member that is a str, say) can compare differently from the value the tool gets.
    plain = _decode(call.args_json)
    try:
        args = call.tool.cedar_args(plain)
    except ArgumentError as exc:
        return Reason(
            Stage.CONTEXT, f"arguments do not match the schema of {call.tool.name}: {exc}"
        )
    task = call.task
    call.activity = activity.of(task.task.workspace, task.task.agent, call.now)
    risk = assess(
        task=task, activity=call.activity, tool=call.tool.name, now=call.now, hours=call.view.hours
    )
    call.context = decision_context(
        args=args,
        task=task.context(call.tool.name, call.view.catalogue.effects, call.inherited),
        tool=call.tool.context,
        provenance=task.sources(plain, call.tool.spec.sinks),
        risk=risk.context(),
        now=call.now,
        delegation=call.claims.delegation() if call.claims is not None else None,
    )
    call.said = call.args_json  # noted after this call: no value vouches for itself
    return None


def unfaithful_argument(args: Any) -> str | None:
    """Why the policies would not see an argument of `args` (already encoded, so of bounded
    size) as the tool gets it, if one is so: bytes, which JSON carries as base64 text, or a
    float JSON cannot carry (NaN, infinity), which the encoder writes as null, so a policy's
    bound or an approval given for null would let infinity through. Every call pays for the
    first walk; only such a call pays for naming the path."""
    stack = [args]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            return (
                f"argument `{_path_to(args, value)}` is bytes: policies would see its base64 "
                "text, not what the tool gets; pass text"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            return (
                f"argument `{_path_to(args, value)}` is {value!r}, which JSON cannot carry: "
                "policies would see null, not what the tool gets"
            )
    return None


def _path_to(args: Any, target: Any) -> str:
    stack: list[tuple[str, Any]] = [("", args)]
    while stack:
        path, value = stack.pop()
        if value is target:
            return path or "(all)"
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return "?"


def apply_policy(call: Call) -> Reason | None:
    """Cedar on the tool's slice of the workspace's active bundle."""
    assert call.view is not None and call.agent is not None and call.context is not None
    bundle = call.view.bundle
    if bundle is None:
        return Reason(
            Stage.POLICY, f"no policies are active in workspace {call.view.workspace.name}"
        )
    call.verdict = _evaluate(call, call.context)
    if call.view.shadow is not None:
        call.shadow = _shadow(call)
    return None


def _shadow(call: Call) -> dict[str, Any]:
    """The shadow bundle's answer to the same question. Whatever happens here is recorded and
    nothing more: a shadow can never change, delay past an error, or deny a decision."""
    assert call.view is not None and call.view.shadow is not None and call.context is not None
    version = call.view.shadow.version
    try:
        outcome = _evaluate(call, call.context, call.view.shadow).outcome
    except Exception as exc:
        log.warning("shadow bundle %s failed", version, exc_info=True)
        return {"version": version, "error": shown(exc)}
    return {
        "version": version,
        "effect": outcome.effect.value,
        "determining": list(outcome.determining),
        "reasons": [r.text for r in outcome.reasons],
    }


def _evaluate(call: Call, context: dict[str, Any], bundle: Bundle | None = None) -> Verdict:
    assert call.view is not None and call.view.bundle is not None and call.agent is not None
    return evaluate(
        bundle or call.view.bundle,
        call.view.entities,
        workspace=call.view.workspace.name,
        agent=call.agent,
        tool=call.request.tool,
        context=context,
    )


def seek_approval(call: Call, approvals: Approvals) -> Reason | None:
    """Step-up: a call a policy wants a person to approve either spends, once, the approval an
    approver gave for exactly this call (tool, canonical arguments, task), or joins the request
    for it (opening one, which notifies the approvers, if none is pending)."""
    verdict = call.verdict
    if verdict is None or verdict.outcome.effect is not Effect.APPROVAL_REQUIRED:
        return None
    assert call.task is not None and call.view is not None and call.context is not None
    assert call.args_json is not None and call.tool is not None
    args = _decode(call.args_json)
    digest = call_hash(call.task.id, call.request.tool, args)
    outcome = verdict.outcome
    granted = approvals.grant_for(call.task.id, digest)
    # An approval covers the policies (and roles) that asked for it then; if others ask now,
    # it is not theirs to lift: a new request goes to whom they name.
    if granted is not None and (
        set(outcome.determining) <= set(granted.policies)
        and set(outcome.approver_roles) <= set(granted.approver_roles)
    ):
        approved = _evaluate(call, {**call.context, "approved": True})
        if approved.outcome.effect is Effect.ALLOW:
            # Used by the pipeline once the call counts in its task (PDP._spend), not here: a
            # call decided again, on its task's newer state, must still find it.
            call.verdict, call.approval_id, call.spend = approved, granted.id, granted
            return None
    request = approvals.ask(
        workspace=call.view.workspace.name,
        task_id=call.task.id,
        agent=call.task.task.agent,
        user=call.task.task.user,
        tool=call.request.tool,
        effects=call.tool.spec.effects,
        args=canonical_json(args),
        call_hash=digest,
        reasons=[r.text for r in outcome.reasons],
        policies=outcome.determining,
        approver_roles=outcome.approver_roles,
        decision_id=call.decision_id,
        settings=ApprovalSettings.from_settings(
            call.view.workspace.settings, call.view.workspace.name
        ),
    )
    call.approval_id = request.id
    if request.status is ApprovalStatus.DENIED:
        said = f": {request.comment}" if request.comment else ""
        return Reason(
            Stage.APPROVAL, f"{request.decided_by} denied this call{said} (approval {request.id})"
        )
    return None


def record_of(call: Call, decision: Decision, views: Views | None = None) -> Write:
    """The decision's record, with the agent's first use of the tool when it is one. The
    record keeps of the arguments what the workspace's `audit` setting says
    (tether/audit/redaction.py); their digest is always of the real ones."""
    args_json = (
        call.args_json if call.args_json is not None else _args_for_record(call.request.args)
    )
    task = call.task.task if call.task is not None else None
    verdict = call.verdict
    user = task.user if task is not None else call.claims.sub if call.claims else None
    args = args_json.decode() if len(args_json) <= MAX_ARGS_BYTES else '{"truncated":true}'
    context = verdict.context_json.decode() if verdict is not None else None
    reasons, shadow = decision.reasons, _shadow_record(verdict, call.shadow)
    redaction = call.view.redaction if call.view is not None else _redaction(call, decision, views)
    if redaction is not FULL and len(args_json) <= MAX_ARGS_BYTES:  # the default: one check
        cut = redaction.apply(
            _decode(args_json),
            context=verdict.context_json if verdict is not None else None,
            reasons=reasons,
            shadow=shadow,
        )
        if cut is not None:
            args, context, reasons, shadow = cut.args, cut.context, cut.reasons, cut.shadow
    return Write(
        DecisionRecord(
            id=decision.decision_id,
            ts=float(call.now),  # stored as REAL: hash what verification will read back
            tenant=call.view.workspace.tenant if call.view is not None else None,
            workspace=decision.workspace,
            agent=decision.agent,
            user=user,
            task_id=decision.task_id,
            tool=decision.tool,
            args_digest=hashlib.sha256(args_json).hexdigest(),
            args=args,
            effect=decision.effect,
            stage=decision.reasons[0].stage if decision.reasons else Stage.POLICY,
            reasons=_reasons_json(reasons),
            policy_version=decision.policy_version,
            context=context,
            shadow=shadow,
            approval_id=decision.approval_id,
        ),
        first_use=(
            decision.effect is Effect.ALLOW
            and call.activity is not None
            and decision.tool not in call.activity.tools_used
        ),
    )


def _redaction(call: Call, decision: Decision, views: Views | None) -> Redaction:
    """The redaction for a call denied before it reached its workspace's view: the record's
    workspace's, made stricter by the task's when the call aimed outside it (the arguments are
    then the data of both). A call no credential ties to a workspace keeps only the digest:
    whose data it holds, and so what may be kept of it, is unknown. Only denials pay for this
    lookup."""
    if views is None:
        return FULL
    if decision.workspace is None:
        return DIGEST
    names = {decision.workspace, call.request.workspace}  # the first is the task's (`_answer`)
    return Redaction.strictest(views.redaction(name) for name in names if name is not None)


def _shadow_record(verdict: Verdict | None, bundle: dict[str, Any] | None) -> str | None:
    """What shadow evaluation said: `policies` (the @mode("shadow") policies of the enforced
    bundle) and `bundle` (the workspace's shadow bundle), each when it applied."""
    shadow: dict[str, Any] = {}
    if verdict is not None and verdict.shadow is not None:
        shadow["policies"] = msgspec.to_builtins(verdict.shadow)
    if bundle is not None:
        shadow["bundle"] = bundle
    return _encode(shadow).decode() if shadow else None


def _recordable(request: AuthorizeRequest) -> AuthorizeRequest:
    """A request whose names can be recorded: a string that is not valid Unicode (a lone
    surrogate) is written with backslash escapes, so it matches nothing and is still recorded."""
    fields = {
        name: value.encode("utf-8", "backslashreplace").decode()
        for name in ("tool", "workspace", "task_id")
        if isinstance(value := getattr(request, name), str)
        and not value.isascii()  # the usual case, and the cheap test
        and not _encodable(value)
    }
    return msgspec.structs.replace(request, **fields) if fields else request


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _reasons_json(reasons: tuple[Reason, ...]) -> str:
    try:
        return _encode(reasons).decode()
    except (UnicodeEncodeError, msgspec.EncodeError):  # an error message quoting bad input
        safe = [
            msgspec.structs.replace(r, text=r.text.encode("utf-8", "backslashreplace").decode())
            for r in reasons
        ]
        return _encode(safe).decode()


def _args_for_record(args: Any) -> bytes:
    try:
        return _encode_sorted(args)
    except Exception:  # too deep, not JSON, ...: the decision is still recorded
        return _encode({"unencodable": type(args).__name__})


class Write(msgspec.Struct, frozen=True):
    """A step of the pipeline: store this record (and make these claims) before answering."""

    record: DecisionRecord
    first_use: bool
    claims: Claims | None = None


class Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class Hold:
    """A step of the pipeline: take this task's lock (the pipeline releases it)."""

    lock: Lock


Result = TypeVar("Result")
# The pipeline's steps: it yields what its driver must do, is sent what came of a `Write`.
Steps = Generator[Write | Hold, Refusal | None, Result]


async def _acquire(lock: Lock, holding: set[Lock]) -> None:
    """Take a task's lock without holding up the event loop: its holder may be a call on the
    same loop, waiting for its commit (a thread holds it only for moments). The lock is
    re-entrant, so calls on the loop's one thread keep out of each other by `holding`."""
    pause = 0.0001
    while lock in holding or not lock.acquire(blocking=False):
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.005)
    holding.add(lock)


StageTimer = Callable[[Stage, int], None]
TaskClaim = tuple[str, int, bytes] | None  # a task's next event, sealed (TaskStates.claim)


class PDP:
    """Runs the pipeline. `tasks` are the open tasks this decision point serves.

    `stage_timer`, when set, is told how many nanoseconds each stage of each decision took (for
    benchmarks and metrics); unset, the pipeline does not read the clock for it.
    """

    stage_timer: StageTimer | None = None

    def __init__(
        self,
        store: Store,
        views: Views,
        tasks: TaskStates,
        *,
        credentials: Credentials,
        approvals: Approvals,
        log: AuditLog,
        proofs: ProofRule | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._views = views
        self._tasks = tasks
        self._credentials = credentials
        self._approvals = approvals
        self._log = log
        self._proofs = proofs or ProofRule()
        self._clock = clock
        self._activity = Activity(store.tools_used)
        self._holding: set[Lock] = set()  # tasks' locks held by calls on the event loop

    def decide(self, request: AuthorizeRequest, *, proven: bool = False) -> Decision:
        """`proven`: the caller already checked a proof of the token's key for the request
        this call came in (a batch: one request, one proof, several calls)."""
        request = _recordable(request)
        try:
            return self._run(self._decide(request, proven))
        except Exception as exc:  # the last line of defence: never an exception, never an allow
            return self._failed(request, exc)

    async def decide_async(
        self, request: AuthorizeRequest, *, once: Sequence[tuple[str, float]] = ()
    ) -> Decision:
        """`decide` for an event loop: while this call's record waits for its commit, the
        loop decides others, and the records that wait together are committed together
        (`AuditLog.append_async`): one transaction for the calls a worker has in flight.
        `once`: one-time ids the caller checked but did not write (its proof's), claimed in
        the decision's transaction; a replay is denied."""
        request = _recordable(request)
        held: Lock | None = None
        steps = self._decide(request, False, once)
        try:
            step = next(steps)
            while True:
                if isinstance(step, Hold):
                    await _acquire(step.lock, self._holding)
                    held = step.lock
                    step = steps.send(None)
                    continue
                try:
                    refused = await self._log.append_async(
                        step.record, first_use=step.first_use, claims=step.claims
                    )
                except Exception as exc:
                    step = steps.throw(exc)
                    continue
                step = steps.send(refused)
        except StopIteration as done:
            decision: Decision = done.value
            return decision
        except Exception as exc:
            return self._failed(request, exc)
        finally:
            steps.close()  # a call cancelled while waiting: its steps end, releasing its lock
            if held is not None:
                self._holding.discard(held)

    def _run(self, steps: Steps[Result]) -> Result:
        """Drive the pipeline's steps (`_decide`) here and now: locks taken as they come,
        records appended and committed one at a time (or with other threads')."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, Hold):
                    step.lock.acquire()
                    step = steps.send(None)
                    continue
                try:
                    refused = self._log.append(
                        step.record, first_use=step.first_use, claims=step.claims
                    )
                except Exception as exc:
                    step = steps.throw(exc)
                    continue
                step = steps.send(refused)
        except StopIteration as done:
            result: Result = done.value
            return result

    def _failed(self, request: AuthorizeRequest, exc: Exception) -> Decision:
        decision_id = new_id("dec_")
        log.error("decision %s failed", decision_id, exc_info=exc)
        text = f"the decision failed, so the call is denied: {shown(exc)}"
        decision = Decision(
            decision_id=decision_id,
            effect=Effect.DENY,
            reasons=(Reason(Stage.ANSWER, text),),
            policy_version=None,
            workspace=None,  # nothing was proven: the request's own word files it nowhere
            agent=None,
            task_id=request.task_id,
            tool=request.tool,
        )
        try:  # recorded like any other answer; if even that fails, the deny stands
            write = record_of(Call(request, self._clock()), decision, self._views)
            self._log.append(write.record, first_use=write.first_use)
        except Exception:
            log.exception("the denial could not be recorded")
        return decision

    def _decide(
        self, request: AuthorizeRequest, proven: bool, once: Sequence[tuple[str, float]] = ()
    ) -> Steps[Decision]:
        """The pipeline, as steps its driver carries out: `Hold` a task's lock, and `Write`
        a record (the driver sends back what became of its claims, or throws in the error)."""
        call = Call(request, self._clock(), once=list(once))
        stage = self._stage
        denial = stage(
            Stage.AUTHENTICATE,
            authenticate,
            call,
            self._tasks,
            self._credentials,
            PROVEN if proven else self._proofs,
        )
        if call.task is None:
            return (yield from self._conclude(call, denial))
        # One decision at a time per task: each sees the task state the one before it left
        # (its call counts), even when an agent calls from several threads at once; and, where
        # tasks are shared, one decided elsewhere meanwhile makes this one be decided again.
        lock = call.task.lock
        yield Hold(lock)
        try:
            for _ in range(MAX_ATTEMPTS):
                reason = denial or (
                    stage(Stage.WORKSPACE, workspace_gate, call, self._views)
                    or stage(Stage.TASK, task_gate, call)
                    or stage(Stage.CONTEXT, build_context, call, self._activity, self._tasks)
                    or stage(Stage.POLICY, apply_policy, call)
                    or stage(Stage.APPROVAL, seek_approval, call, self._approvals)
                )
                decision = _answer(call, reason)
                event = call.event(decision)
                try:
                    claim = self._tasks.claim(call.task, event)
                except Exception as exc:
                    return (yield from self._conclude(call, _unkept(call, decision, exc)))
                if call.spend is None:
                    decided = yield from self._settle(call, decision, event, claim)
                else:
                    decided = yield from self._settle_spending(call, decision, event, claim)
                if decided is not None:
                    return decided
                try:  # decided on a stale state: again, on the task as it is now
                    self._tasks.catch_up(call.task)
                except Exception as exc:
                    return (yield from self._conclude(call, _unkept(call, decision, exc)))
                call = call.again(self._clock())
            text = "the task kept changing in another process while this call was decided"
            return (yield from self._conclude(call, _denied(decision, Reason(Stage.RECORD, text))))
        finally:
            lock.release()

    def _settle_spending(
        self, call: Call, decision: Decision, event: Event, claim: TaskClaim
    ) -> Steps[Decision | None]:
        """A call an approval allows counts in its task first, so that if it is decided again
        it still finds the approval; then the approval is used (the call is denied if it
        cannot be), then the decision is recorded. None: decide again."""
        assert call.task is not None
        claims = Claims(call.now, tuple(call.once), claim)
        if claims:
            try:
                refused = self._store.writes.claim(claims)
            except Exception as exc:
                return (yield from self._conclude(call, _unkept(call, decision, exc)))
            if refused is Refusal.TASK_MOVED:
                return None
            if refused is Refusal.REPLAYED:
                return (yield from self._replayed(call))
        self._tasks.applied(call.task, event)
        call.once.clear()
        return (yield from self._conclude(call, self._spend(call, decision)))

    def _spend(self, call: Call, decision: Decision) -> Decision:
        """Use the approval that allowed the call, now that it counts; if it cannot be used
        (another call used it, it expired), the call is denied after all."""
        if call.spend is None:
            return decision
        try:
            if self._approvals.use(call.spend, call.decision_id):
                return decision
            why = f"approval {call.spend.id} was already used, or has expired"
        except Exception as exc:
            log.exception("approval %s could not be used", call.spend.id)
            why = f"approval {call.spend.id} could not be used: {shown(exc)}"
        return _denied(decision, Reason(Stage.APPROVAL, why))

    def _stage(
        self, stage: Stage, fn: Callable[..., Reason | None], call: Call, *args: Any
    ) -> Reason | None:
        timer = self.stage_timer
        if timer is None:
            return _guarded(stage, fn, call, *args)
        started = time.perf_counter_ns()
        try:
            return _guarded(stage, fn, call, *args)
        finally:
            timer(stage, time.perf_counter_ns() - started)

    def _conclude(self, call: Call, decided: Reason | Decision | None) -> Steps[Decision]:
        """Record the decision (a deny for `decided` when it is a reason), then answer it."""
        decision = decided if isinstance(decided, Decision) else _answer(call, decided)
        settled = yield from self._settle(call, decision)
        if settled is None:  # only a task's event can be taken, and none was claimed
            return _denied(decision, Reason(Stage.RECORD, "the decision was not recorded"))
        return settled

    def _settle(
        self,
        call: Call,
        decision: Decision,
        event: Event | None = None,
        claim: TaskClaim = None,
    ) -> Steps[Decision | None]:
        """Record the decision with what it claims (its proof's one-time id and, where tasks
        are shared, its task's event: store/writes.py) in one transaction, then answer it.
        None: another process moved the task on first, so it must be decided again."""
        started = time.perf_counter_ns() if self.stage_timer is not None else 0
        claims = Claims(call.now, tuple(call.once), claim)
        try:
            write = record_of(call, decision, self._views)
            refused = yield msgspec.structs.replace(write, claims=claims or None)
        except Exception as exc:
            log.exception("decision %s could not be recorded", decision.decision_id)
            text = f"the decision could not be recorded, so the call is denied: {shown(exc)}"
            return _denied(decision, Reason(Stage.RECORD, text))
        if refused is Refusal.TASK_MOVED:
            return None
        if refused is Refusal.REPLAYED:
            return (yield from self._replayed(call))
        if event is not None and call.task is not None:
            self._tasks.applied(call.task, event, claim)
        if call.activity is not None:
            call.activity.note(call.request.tool, decision.effect is Effect.ALLOW, call.now)
        if self.stage_timer is not None:
            self.stage_timer(Stage.RECORD, time.perf_counter_ns() - started)
        return decision

    def _replayed(self, call: Call) -> Steps[Decision]:
        """The call's proof was used before: refused as a check of the proof would have, with
        nothing of the call counting in its task."""
        reason = Reason(Stage.AUTHENTICATE, f"credential refused: {REPLAYED}")
        fresh = Call(call.request, call.now, decision_id=call.decision_id)
        return (yield from self._conclude(fresh, reason))


def _unkept(call: Call, decision: Decision, exc: Exception) -> Decision:
    """The deny of a call whose task's state could not be kept."""
    assert call.task is not None
    log.error(
        "decision %s: task %s could not be updated", call.decision_id, call.task.id, exc_info=exc
    )
    text = f"the task's state could not be kept, so the call is denied: {shown(exc)}"
    return _denied(decision, Reason(Stage.RECORD, text))


def _denied(decision: Decision, reason: Reason) -> Decision:
    return msgspec.structs.replace(
        decision, effect=Effect.DENY, reasons=(reason,), approver_roles=()
    )


def _guarded(
    stage: Stage, fn: Callable[..., Reason | None], call: Call, *args: Any
) -> Reason | None:
    try:
        return fn(call, *args)
    except Exception as exc:
        log.warning("decision %s: stage %s failed", call.decision_id, stage.value, exc_info=True)
        return Reason(stage, f"{stage.value} stage failed, so the call is denied: {shown(exc)}")


def _answer(call: Call, denial: Reason | None) -> Decision:
    task = call.task.task if call.task is not None else None
    claims = call.claims  # who a refused but genuine token was for, when there is no task
    bundle = call.view.bundle if call.view is not None else None
    effect = Effect.DENY
    reasons: tuple[Reason, ...] = (denial,) if denial else ()
    roles: tuple[str, ...] = ()
    if denial is None:
        if call.verdict is None:
            reasons = (Reason(Stage.POLICY, "no verdict was reached"),)
        else:
            outcome = call.verdict.outcome
            effect, reasons, roles = outcome.effect, outcome.reasons, outcome.approver_roles
    return Decision(
        decision_id=call.decision_id,
        effect=effect,
        reasons=reasons,
        policy_version=bundle.version if bundle is not None else None,
        # The workspace a genuine credential proved, never the one the request names: else a
        # caller could file records (with another workspace's arguments) in any workspace's log.
        workspace=task.workspace if task else claims.ws if claims else None,
        agent=task.agent if task else claims.agent if claims else None,
        task_id=task.id if task else claims.task if claims else None,
        tool=call.request.tool,
        approval_id=call.approval_id,
        approver_roles=roles,
    )
