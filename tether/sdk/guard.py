"""The Guard: Tether's Python API for agents and the people who run them.

`Guard.embedded(home)` runs the whole decision point in-process on the home folder's store;
the remote mode (the HTTP issue) will offer exactly these methods over the API.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import msgspec
from joserfc.jwk import ECKey

from tether.approvals import Approvals
from tether.audit import AuditLog
from tether.audit.log import durability_from_env
from tether.control import Control
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    AccessClaims,
    Credentials,
    ExchangeRequest,
    Issued,
    Settings,
    add_grant,
    find_grant,
    live_grant,
    make_assertion,
    make_proof,
)
from tether.errors import InvalidInput, NotFound, TetherError
from tether.model import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    Durability,
    Effect,
    Grant,
    OutputTrust,
    TaskStatus,
    Tool,
    User,
    Workspace,
)
from tether.pdp import PDP, AuthorizeRequest, ProofRule
from tether.policy import Bundle, compile_bundle
from tether.policy.backtest import BacktestReport, backtest
from tether.sdk.errors import ApprovalRequired, Denied
from tether.sdk.keys import AgentKeys
from tether.sdk.signature import args_schema_of
from tether.session import TaskState
from tether.store import Store
from tether.workspace import Views

log = logging.getLogger("tether.sdk")

DEFAULT_TASK_TTL = 15 * 60.0
MAX_TASK_TTL = 24 * 3600.0
DEFAULT_GRANT_LIFETIME = 30 * 86400.0

P = ParamSpec("P")
R = TypeVar("R")

_current_task: contextvars.ContextVar[TaskHandle | None] = contextvars.ContextVar(
    "tether_task", default=None
)


def current_task() -> TaskHandle | None:
    """The task the calling code runs in (set by `with guard.task(...)`), if any."""
    return _current_task.get()


class Guard:
    """`master_key`: the key the service's signing keys are sealed with (default: from the
    environment, or `<home>/master.key` for an embedded store)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        master_key: bytes | None = None,
        credential_settings: Settings | None = None,
        durability: Durability | None = None,
        proofs: ProofRule | None = None,
    ) -> None:
        """`durability`: of the decision log (docs/audit.md); default `TETHER_AUDIT_DURABILITY`,
        else `commit`. `proofs`: what DPoP proofs calls must carry (the HTTP service requires
        one, for its URL; in-process none is needed)."""
        self.store = store
        self._clock = clock
        self._views = Views(store)
        self.credentials = Credentials(
            store,
            master_key=master_key,
            home=store.home,
            settings=credential_settings,
            clock=clock,
            events=self._event,
        )
        self._control = Control(
            store,
            self._views,
            clock,
            revoke_grant=lambda grant: self.credentials.revoke_grant(
                grant, reason="removed from the workspace file"
            ),
            granted=self._granted,
        )
        self.agent_keys = AgentKeys(store, clock, events=self._event)
        self._tasks: dict[str, TaskState] = {}
        self._handles: dict[str, TaskHandle] = {}
        self.approvals = Approvals(store, clock, events=self._event)
        self.audit = AuditLog(
            store, self.credentials.keyring, clock, durability or durability_from_env()
        )
        self._pdp = PDP(
            store,
            self._views,
            self._tasks,
            credentials=self.credentials,
            approvals=self.approvals,
            log=self.audit,
            proofs=proofs,
            clock=clock,
        )
        self._proofs = proofs or ProofRule()

    @classmethod
    def embedded(
        cls,
        home: str | Path = ".tether",
        *,
        db: str | None = None,
        durability: Durability | None = None,
    ) -> Guard:
        """A Guard deciding in this process, on `home`'s SQLite store (or the `db` URL)."""
        store = Store(db, home=Path(home)) if db else Store.at_home(home)
        return cls(store, durability=durability)

    def close(self) -> None:
        """End this Guard's open tasks, then close what it holds; each step is tried even when
        one before failed (the first failure is raised at the end)."""
        steps: list[Callable[[], None]] = [
            *(
                lambda state=state: self._end(state, TaskStatus.ENDED)
                for state in self._tasks.values()
            ),
            self.agent_keys.close,
            self.approvals.close,
            self.audit.close,
            self.store.close,
        ]
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _event(
        self,
        kind: str,
        *,
        workspace: str | None,
        actor: str | None,
        subject: str | None,
        **detail: Any,
    ) -> None:
        """What Credentials and Approvals did, into the audit log (made after them: it needs
        the keyring Credentials holds)."""
        self.audit.event(kind, workspace=workspace, actor=actor, subject=subject, **detail)

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- administration ----------------------------------------------------------------------

    def add_workspace(
        self,
        name: str,
        *,
        tenant: str = "default",
        trust_domain: str = "tether.local",
        settings: Mapping[str, Any] | None = None,
    ) -> Workspace:
        """`settings`: what the workspace says of itself, e.g. its `working_hours`."""
        return self._control.add_workspace(
            name, tenant=tenant, trust_domain=trust_domain, settings=settings
        )

    def register_agent(
        self,
        workspace: str,
        name: str,
        *,
        kind: str,
        owner: str,
        ceiling: Iterable[str] | None = None,
    ) -> Agent:
        """`ceiling`: the most tools the agent may ever hold in a credential (default: any)."""
        return self._control.register_agent(
            workspace, name, kind=kind, owner=owner, ceiling=ceiling
        )

    def suspend_agent(self, workspace: str, name: str) -> None:
        """The kill switch: the agent's tokens are revoked and its tasks end; its next call, in
        any process on this store, is denied."""
        self._control.set_agent_status(workspace, name, AgentStatus.SUSPENDED)
        for task_id in self.credentials.revoke_agent(workspace, name):
            self._forget(task_id, TaskStatus.REVOKED)
            tree = self.store.credentials.task_tree(task_id)  # what it delegated ends too
            self.approvals.cancel_tasks(tree, f"agent {name} was suspended")

    def resume_agent(self, workspace: str, name: str) -> None:
        self._control.set_agent_status(workspace, name, AgentStatus.ACTIVE)

    def add_user(self, workspace: str, name: str, roles: Iterable[str] = ()) -> User:
        return self._control.add_user(workspace, name, roles)

    def grant(
        self,
        workspace: str,
        *,
        user: str,
        agent: str,
        tools: Iterable[str],
        max_ttl: float = DEFAULT_TASK_TTL,
        may_act: Iterable[str] = (),
        expires_in: float = DEFAULT_GRANT_LIFETIME,
    ) -> Grant:
        """`user` delegates `tools` to `agent` (and, further down a chain, to `may_act`), for
        tasks of at most `max_ttl` seconds, for `expires_in` seconds."""
        grant = add_grant(
            self.store,
            workspace=workspace,
            user=user,
            agent=agent,
            tools=tools,
            max_ttl=max_ttl,
            may_act=may_act,
            expires_in=expires_in,
            now=self._clock(),
        )
        self._granted(grant)
        return grant

    def _granted(self, grant: Grant) -> None:
        self.audit.event(
            "grant.created",
            workspace=grant.workspace,
            actor=grant.user,
            subject=grant.id,
            agent=grant.agent,
            tools=list(grant.tools),
            may_act=list(grant.may_act),
            max_ttl=grant.max_ttl,
            expires_at=grant.expires_at,
            source=grant.source,
        )

    def approve(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        """`approver` (a user holding every role the request asks for) says yes to that one call."""
        return self.approvals.approve(approval_id, approver=approver, comment=comment)

    def deny(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        return self.approvals.deny(approval_id, approver=approver, comment=comment)

    def revoke_grant(self, grant_id: str) -> None:
        self.credentials.revoke_grant(grant_id)

    def revoke_task(self, task_id: str) -> None:
        """Revoke a task and every task delegated from it, in every process on this store."""
        tree = self.credentials.revoke_task(task_id)
        for revoked in tree:
            self._forget(revoked, TaskStatus.REVOKED)
        self.approvals.cancel_tasks(tree, "the task was revoked")

    def register_tool(
        self,
        workspace: str,
        name: str,
        *,
        effects: Iterable[str],
        args_schema: Mapping[str, Any] | None = None,
        sinks: Iterable[str] = (),
        output: str = "trusted",
        labels: Iterable[str] = (),
        risk_tier: str = "low",
        description: str = "",
    ) -> Tool:
        """Add or replace a catalogue entry. Raises CatalogueError if its schema cannot be typed,
        or PolicyError if the change would break the active policies."""
        try:
            trust = OutputTrust(output)
        except ValueError as exc:
            raise InvalidInput("output must be 'trusted' or 'untrusted'") from exc
        tool = Tool(
            workspace=workspace,
            name=name,
            args_schema=dict(args_schema or {"type": "object", "properties": {}}),
            effects=tuple(effects),
            sinks=tuple(sinks),
            output=trust,
            labels=tuple(labels),
            risk_tier=risk_tier,
            description=description,
        )
        self._control.register_tools(workspace, [tool])
        return tool

    def activate_policies(
        self, workspace: str, policies: str | Path | Mapping[str, str], *, shadow: bool = False
    ) -> str:
        """Validate a folder of .cedar files (or {name: text}) and enforce it; returns its version.
        With `shadow`, evaluate it beside the enforced bundle instead: every decision records
        what it would have said, and it decides nothing. Raises PolicyError, listing each
        problem with file, line and policy id."""
        return self._control.activate_policies(workspace, policies, shadow=shadow).version

    def stop_shadow(self, workspace: str) -> None:
        self._control.stop_shadow(workspace)

    def check_policies(self, workspace: str, policies: str | Path | Mapping[str, str]) -> Bundle:
        return self._control.check_policies(workspace, policies)

    def backtest(self, workspace: str, candidate: Bundle, *, since: float) -> BacktestReport:
        """Replay the workspace's decisions since `since` against `candidate` (see
        tether/policy/backtest.py)."""
        view = self._views.get(workspace)
        if view is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        compiled: dict[str, Bundle | None] = {}

        def recorded(version: str) -> Bundle | None:
            if version not in compiled:
                stored = self.store.bundle(workspace, version)
                compiled[version] = (
                    compile_bundle(stored.files, stored.cedar_schema) if stored else None
                )
            return compiled[version]

        records = self.store.decisions(workspace=workspace, since=since, limit=None)
        return backtest(
            reversed(records), candidate, recorded, entities=view.entities, agents=view.agents
        )

    def apply_directory(self, path: str | Path) -> str:
        """Create or update a workspace from workspace.yaml, catalogue.yaml and policies/."""
        return self._control.apply_directory(path)

    # -- runtime -------------------------------------------------------------------------------

    def task(
        self,
        *,
        workspace: str,
        agent: str,
        user: str,
        request: str,
        tools: Iterable[str],
        ttl: float = DEFAULT_TASK_TTL,
        grant: str | None = None,
        key: ECKey | None = None,
    ) -> TaskHandle:
        """Start a task: `agent` works for `user` on `request`, with just `tools`, for `ttl` s.

        The task's token comes from a token exchange: `grant` (default: the user's live grant to
        the agent that covers `tools`) as the subject, the agent's assertion signed with `key`
        (default: the agent's key in this Guard) as the actor. Raises CredentialRefused if the
        user has not delegated the tools, or the exchange is refused."""
        tools = tuple(tools)
        if not all(isinstance(v, str) for v in (workspace, agent, user, request, *tools)):
            raise InvalidInput("workspace, agent, user, request and tools must be strings")
        # Plain strings: what policies compare must be exactly what is recorded.
        user, request = str.__str__(user), str.__str__(request)
        granted = tuple(sorted({str.__str__(t) for t in tools}))
        view = self._views.get(workspace)
        if view is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        registered = view.agents.get(agent)
        if registered is None:
            raise NotFound(f"agent {agent!r} is not registered in workspace {workspace!r}")
        if registered.status is not AgentStatus.ACTIVE:
            raise InvalidInput(f"agent {agent!r} is {registered.status.value}")
        unknown = [t for t in granted if view.catalogue.get(t) is None]
        if unknown:
            raise NotFound(f"tools {unknown} are not in the catalogue of workspace {workspace!r}")
        if not user.strip():
            raise InvalidInput("a task acts for a user; name them")
        if not 0 < ttl <= MAX_TASK_TTL:
            raise InvalidInput(f"task ttl must be between 0 and {MAX_TASK_TTL:.0f} seconds")
        now = self._clock()
        self._forget_expired(now)
        if grant is None:
            grant = find_grant(
                self.store, workspace=workspace, user=user, agent=agent, tools=granted, now=now
            ).id
        elif live_grant(self.store, grant, now).user != user:
            raise InvalidInput(f"grant {grant} was not made by user {user!r}")
        if key is not None:
            self.agent_keys.put(workspace, agent, key)
        exchange = ExchangeRequest(
            subject_token=grant,
            subject_token_type=GRANT_TOKEN_TYPE,
            actor_token="",
            scope=" ".join(granted),
            request=request,
            task_ttl=ttl,
        )
        return self._start(exchange, workspace, agent, parent=None)

    def exchange(self, request: ExchangeRequest, *, dpop_jkt: str | None = None) -> Issued:
        """A token exchange made by an agent elsewhere (the HTTP service's token endpoint): the
        task it starts is open here from now on."""
        issued = self.credentials.exchange(request, dpop_jkt=dpop_jkt)
        if issued.task.id not in self._tasks:
            self._tasks[issued.task.id] = TaskState(issued.task)
        return issued

    def report(self, task_id: str, decision_id: str, output: Any) -> None:
        """Tell a task what a call it was allowed returned (feeds its state: labels,
        provenance)."""
        state = self._tasks.get(task_id)
        record = self.store.decision(decision_id)
        if state is None:
            raise NotFound(f"task {task_id} is not open here")
        if record is None or record.task_id != task_id:
            raise InvalidInput(f"decision {decision_id} belongs to another task")
        if record.effect is not Effect.ALLOW:
            raise InvalidInput(f"decision {decision_id} did not allow the call")
        try:
            view = self._views.get(state.task.workspace)
            tool = view.catalogue.get(record.tool) if view is not None else None
        except Exception:  # the workspace cannot be read now: the output still counts, untrusted
            log.exception("reporting to task %s without its catalogue", task_id)
            tool = None
        state.note_result(tool.spec if tool is not None else None, output)

    def end_task(self, task_id: str) -> None:
        """The task is done: its tokens, and its sub-tasks', are refused from now on."""
        state = self._tasks.get(task_id)
        if state is None:
            raise NotFound(f"task {task_id} is not open here")
        self._end(state, TaskStatus.ENDED)

    def _start(
        self, exchange: ExchangeRequest, workspace: str, agent: str, parent: TaskHandle | None
    ) -> TaskHandle:
        key = self.agent_keys.get(workspace, agent)
        issued = self.credentials.exchange(self._signed(exchange, key, workspace, agent))
        state = TaskState(issued.task)
        handle = TaskHandle(self, state, key=key, issued=issued, exchange=exchange, parent=parent)
        self._tasks[state.id] = state
        self._handles[state.id] = handle
        return handle

    def _signed(
        self, exchange: ExchangeRequest, key: ECKey, workspace: str, agent: str
    ) -> ExchangeRequest:
        """The exchange with a fresh assertion of the agent's identity as its actor token."""
        view = self._views.get(workspace)
        spiffe_id = (
            view.agents[agent].spiffe_id if view is not None and agent in view.agents else ""
        )
        assertion = make_assertion(
            key, agent_id=spiffe_id, audience=self.credentials.settings.issuer, now=self._clock()
        )
        return msgspec.structs.replace(exchange, actor_token=assertion)

    def authorize(
        self,
        task_id: str | None,
        tool: str,
        args: Any,
        *,
        workspace: str | None = None,
        token: str | None = None,
        proof: str | None = None,
        proven: bool = False,
    ) -> Decision:
        """Decide one call. Never raises for a bad request: that is a recorded deny.

        The credential is `token` if given, else the token of the task this Guard started.
        `proven`: the caller checked a proof of the token's key already (a batch of calls in
        one request)."""
        if token is None and task_id is not None:
            handle = self._handles.get(task_id)
            if handle is not None:
                token, proof = handle.credential()
        return self._pdp.decide(
            AuthorizeRequest(
                tool=tool,
                args=args,
                task_id=task_id,
                workspace=workspace,
                token=token,
                proof=proof,
            ),
            proven=proven,
        )

    def tool(
        self,
        *,
        workspace: str,
        effects: Iterable[str],
        name: str | None = None,
        sinks: Iterable[str] = (),
        output: str = "trusted",
        labels: Iterable[str] = (),
        risk_tier: str = "low",
        args_schema: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a function as a tool and enforce every call of it.

        Inside `with guard.task(...)` a call authorizes itself, runs only when allowed, and
        reports its result to the task; otherwise it raises Denied or ApprovalRequired. Outside
        a task it is denied. The argument schema comes from the type hints unless given.
        """
        effects, sinks, labels = tuple(effects), tuple(sinks), tuple(labels)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            tool_name = name or fn.__name__
            self.register_tool(
                workspace,
                tool_name,
                effects=effects,
                args_schema=args_schema or args_schema_of(fn),
                sinks=sinks,
                output=output,
                labels=labels,
                risk_tier=risk_tier,
                description=description if description is not None else inspect.getdoc(fn) or "",
            )
            signature = inspect.signature(fn)

            def authorize(
                args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[TaskHandle, Decision]:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                handle = current_task()
                task_id = handle.id if handle is not None else None
                decision = self.authorize(
                    task_id, tool_name, dict(bound.arguments), workspace=workspace
                )
                _raise_unless_allowed(decision)
                assert handle is not None  # an allowed call always has a task
                return handle, decision

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    handle, decision = authorize(args, kwargs)
                    try:
                        result = await fn(*args, **kwargs)
                    except Exception as exc:
                        handle.report(decision, _failure(exc))
                        raise
                    handle.report(decision, result)
                    return result

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                handle, decision = authorize(args, kwargs)
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    handle.report(decision, _failure(exc))
                    raise
                handle.report(decision, result)
                return result

            return guarded

        return decorate

    def _forget_expired(self, now: float) -> None:
        """Expired tasks can no longer act (the task gate sees to that); this frees their state."""
        for state in [s for s in self._tasks.values() if s.task.expires_at <= now]:
            self._end(state, TaskStatus.EXPIRED)

    def _end(self, state: TaskState, status: TaskStatus) -> None:
        """Close a task here and, unless it merely expired, its tokens (and its sub-tasks')
        everywhere: a task that has ended can do nothing more, in any process."""
        if state.status is TaskStatus.OPEN:
            state.status = status
            tree = [state.id]
            if status is TaskStatus.EXPIRED:
                self.store.finish_task(state.id, status, self._clock())
            else:
                try:
                    tree = self.credentials.revoke_task(state.id, status=status)
                except NotFound:  # its stored row is gone (its workspace deleted): nothing to end
                    log.warning("task %s ended here, but the store no longer has it", state.id)
            self.approvals.cancel_tasks(tree, f"the task {status.value}")
        self._forget(state.id, status)

    def _forget(self, task_id: str, status: TaskStatus) -> None:
        """Drop a task that has closed (in the store already) from this process."""
        state = self._tasks.pop(task_id, None)
        if state is not None and state.status is TaskStatus.OPEN:
            state.status = status
        self._handles.pop(task_id, None)


def _failure(exc: Exception) -> str:
    """What a failed tool call told the agent: its error text is content the task has read
    (an HTTP error page can carry an attacker's instructions as well as any page)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def _raise_unless_allowed(decision: Decision) -> None:
    if decision.effect is Effect.APPROVAL_REQUIRED:
        raise ApprovalRequired(decision)
    if decision.effect is not Effect.ALLOW:
        raise Denied(decision)


class TaskHandle:
    """An open task. Use it as a context manager so guarded tools find it and it ends on exit.

    It holds the task's token and renews it (a token exchange for the same task) when less
    than a fifth of its life is left, so a task may outlive any one of its tokens."""

    def __init__(
        self,
        guard: Guard,
        state: TaskState,
        *,
        key: ECKey,
        issued: Issued,
        exchange: ExchangeRequest,
        parent: TaskHandle | None,
    ) -> None:
        self._guard = guard
        self._state = state
        self._key = key
        self._issued = issued
        self._exchange = msgspec.structs.replace(exchange, task_id=state.id, task_ttl=None)
        self._parent = parent
        self._renew_lock = threading.Lock()
        self._asked: dict[str, tuple[str, Mapping[str, Any]]] = {}  # approval id -> the call
        self._tokens: list[contextvars.Token[TaskHandle | None]] = []

    @property
    def token(self) -> str:
        """The task's current token, renewed first if it is close to expiring."""
        claims = self._issued.claims
        now = self._guard._clock()
        if now >= claims.exp - (claims.exp - claims.iat) / 5:
            with self._renew_lock:
                if now >= self._issued.claims.exp - (claims.exp - claims.iat) / 5:
                    self._renew()
        return self._issued.response.access_token

    @property
    def claims(self) -> AccessClaims:
        return self._issued.claims

    def token_or_none(self) -> str | None:
        """The token to present; None if it cannot be renewed (the decision then says why)."""
        try:
            return self.token
        except TetherError:
            log.warning("task %s: its token could not be renewed", self.id, exc_info=True)
            return self._issued.response.access_token

    def _renew(self) -> None:
        exchange = self._exchange
        if self._parent is not None:
            parent_token = self._parent.token
            exchange = msgspec.structs.replace(
                exchange,
                subject_token=parent_token,
                subject_proof=self._parent._possession(parent_token),
            )
        task = self._state.task
        self._issued = self._guard.credentials.exchange(
            self._guard._signed(exchange, self._key, task.workspace, task.agent)
        )

    def delegate(
        self,
        agent: str,
        *,
        tools: Iterable[str] | None = None,
        request: str | None = None,
        ttl: float | None = None,
        key: ECKey | None = None,
    ) -> TaskHandle:
        """Hand part of this task to a sub-agent: a new task whose token is exchanged from this
        one, holding at most this task's tools (default: all of them), ending no later."""
        task = self._state.task
        if key is not None:
            self._guard.agent_keys.put(task.workspace, agent, key)
        token = self.token
        exchange = ExchangeRequest(
            subject_token=token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            subject_proof=self._possession(token),
            actor_token="",
            scope=" ".join(sorted(tools)) if tools is not None else None,
            request=task.request if request is None else request,
            task_ttl=ttl,
        )
        return self._guard._start(exchange, task.workspace, agent, parent=self)

    def downstream_token(self, decision: Decision, audience: str) -> str:
        """A token for the API `audience` that the allowed call `decision` goes to: scoped to
        that one tool, living at most 60 s. The task's own token never leaves Tether."""
        if decision.task_id != self.id or decision.effect is not Effect.ALLOW:
            raise InvalidInput(
                f"decision {decision.decision_id} is not an allowed call of this task"
            )
        token = self.token
        issued = self._guard.credentials.downstream(
            token,
            proof=self._possession(token),
            audience=audience,
            decision_id=decision.decision_id,
        )
        return issued.response.access_token

    def _possession(self, token: str) -> str:
        """A DPoP proof, for the token endpoint, that this task holds `token`'s key."""
        return self.proof("POST", self._guard.credentials.settings.token_url, token)

    def proof(self, htm: str, htu: str, token: str) -> str:
        """A DPoP proof of holding `token`'s key, for one request (`htm` to `htu`)."""
        return make_proof(self._key, htm=htm, htu=htu, now=self._guard._clock(), access_token=token)

    def credential(self) -> tuple[str | None, str | None]:
        """This task's token for a call, and the proof the Guard's decision point requires
        with it (none in process, one for the service's URL when it serves HTTP)."""
        token = self.token_or_none()
        rule = self._guard._proofs
        proof = self.proof(rule.htm, rule.htu, token) if token and rule.required else None
        return token, proof

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def state(self) -> TaskState:
        return self._state

    def authorize(
        self, tool: str, args: Mapping[str, Any] | None = None, *, wait: float | None = None
    ) -> Decision:
        """Decide one call of `tool` with `args` in this task. With `wait`, a call that needs
        approval blocks up to that many seconds for a person's answer, then is decided again:
        allowed (spending the approval) if they said yes, denied if they said no."""
        args = {} if args is None else args
        token, proof = self.credential()
        decision = self._guard.authorize(self.id, tool, args, token=token, proof=proof)
        if decision.effect is Effect.APPROVAL_REQUIRED and decision.approval_id is not None:
            self._asked[decision.approval_id] = (tool, args)
            if wait is not None:
                return self.wait(decision, timeout=wait)
        return decision

    def wait(self, decision: Decision, *, timeout: float) -> Decision:
        """Wait up to `timeout` seconds for the approval `decision` asked for, then decide the
        call again. Still pending by then: the same `approval_required` decision."""
        asked = self._asked.get(decision.approval_id or "")
        if decision.effect is not Effect.APPROVAL_REQUIRED or asked is None:
            raise InvalidInput(f"decision {decision.decision_id} is not waiting for approval here")
        request = self._guard.approvals.wait(decision.approval_id or "", timeout)
        if request.status is ApprovalStatus.PENDING:
            return decision
        del self._asked[request.id]
        tool, args = asked
        return self.authorize(tool, args)

    def report(self, decision: Decision, output: Any) -> None:
        """Tell the task what an allowed call returned (feeds its state: labels, provenance)."""
        if decision.task_id != self.id:
            raise InvalidInput(f"decision {decision.decision_id} belongs to another task")
        self._guard.report(self.id, decision.decision_id, output)

    def end(self) -> None:
        self._guard._end(self._state, TaskStatus.ENDED)

    def __enter__(self) -> TaskHandle:
        self._tokens.append(_current_task.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current_task.reset(self._tokens.pop())
        self.end()
