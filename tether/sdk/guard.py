"""The Guard: Tether's Python API for agents and the people who run them.

`Guard.embedded(home)` runs the whole decision point in-process on the home folder's store;
`Guard.remote(url)` (remote.py) offers exactly these methods over the HTTP API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from joserfc.jwk import ECKey

from tether.approvals import Approvals
from tether.audit import AuditLog
from tether.audit.log import durability_from_env
from tether.control import Control, WorkspaceFolder
from tether.credentials import (
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
)
from tether.credentials.signing_keys import load_master_key
from tether.errors import InvalidInput, NotFound
from tether.model import (
    Agent,
    AgentStatus,
    ApprovalRequest,
    Decision,
    DecisionRecord,
    Durability,
    Effect,
    Grant,
    OutputTrust,
    TaskStatus,
    Tool,
    User,
    Workspace,
)
from tether.names import MAX_PERSON
from tether.pdp import PDP, AuthorizeRequest, ProofRule
from tether.policy import Bundle, compile_bundle
from tether.policy.backtest import BacktestReport, backtest
from tether.sdk.decorator import ToolDecorator
from tether.sdk.handle import TaskHandleBase
from tether.sdk.keys import AgentKeys
from tether.session import TaskState, TaskStates, observe, sealing_key
from tether.store import Store
from tether.workspace import Views

if TYPE_CHECKING:
    from tether.sdk.remote import RemoteGuard

log = logging.getLogger("tether.sdk")

DEFAULT_TASK_TTL = 15 * 60.0
MAX_TASK_TTL = 24 * 3600.0
DEFAULT_GRANT_LIFETIME = 30 * 86400.0
MAX_DECISIONS = 1000  # records one query returns


def checked_task(
    workspace: str, agent: str, user: str, request: str, *, tools: Iterable[str], ttl: float
) -> tuple[str, str, tuple[str, ...]]:
    """A task as either kind of Guard checks it before asking for its token; returns the user,
    the request and the tools as plain strings (what policies compare must be exactly what is
    recorded), the tools sorted."""
    tools = tuple(tools)
    if not all(isinstance(v, str) for v in (workspace, agent, user, request, *tools)):
        raise InvalidInput("workspace, agent, user, request and tools must be strings")
    user, request = str.__str__(user), str.__str__(request)
    if not user.strip():
        raise InvalidInput("a task acts for a user; name them")
    if len(user) > MAX_PERSON:
        raise InvalidInput(f"a user's name is at most {MAX_PERSON} characters")
    if not 0 < ttl <= MAX_TASK_TTL:
        raise InvalidInput(f"task ttl must be between 0 and {MAX_TASK_TTL:.0f} seconds")
    return user, request, tuple(sorted({str.__str__(t) for t in tools}))


class Guard(ToolDecorator):
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
        shared_tasks: bool | None = None,
    ) -> None:
        """`durability`: of the decision log (docs/audit.md); default `TETHER_AUDIT_DURABILITY`,
        else `commit`. `proofs`: what DPoP proofs calls must carry (the HTTP service requires
        one, for its URL; in-process none is needed). `shared_tasks`: keep task state in the
        store, so that other processes on it can decide the tasks too (tether/session/shared.py;
        default: on PostgreSQL, where replicas are the point, and not on SQLite)."""
        self.store = store
        self._clock = clock
        self._views = Views(store)
        master_key = master_key if master_key is not None else load_master_key(store.home)
        if shared_tasks is None:
            shared_tasks = store.engine.dialect.name != "sqlite"
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
        self._tasks = TaskStates(
            store, sealing=sealing_key(master_key) if shared_tasks else None, clock=clock
        )
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
        store = Store.at_home(home, db)
        return cls(store, durability=durability)

    @classmethod
    def remote(
        cls,
        url: str,
        *,
        agent: str | None = None,
        key: ECKey | None = None,
        admin_token: str | None = None,
        trust_domain: str = "tether.local",
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> RemoteGuard:
        """A Guard with the same methods, deciding over the HTTP API of `tether serve` at `url`
        (docs/api.md). `agent`, `key`: the agent tasks act as by default, and its private key,
        which never leaves this process; `admin_token`: for the administration methods, and to
        register a new key for an agent that has none here (as an embedded Guard makes one);
        `trust_domain`: of the agents' workspaces, which their SPIFFE ids name."""
        from tether.sdk.remote import RemoteGuard  # noqa: PLC0415 - remote.py builds on this

        return RemoteGuard(
            url,
            agent=agent,
            key=key,
            admin_token=admin_token,
            trust_domain=trust_domain,
            clock=clock,
            timeout=timeout,
        )

    def close(self) -> None:
        """End this Guard's open tasks, then close what it holds; each step is tried even when
        one before failed (the first failure is raised at the end)."""
        # Tasks this process alone holds end with it; shared ones go on elsewhere, but for
        # those this Guard started itself (their handles, and so their keys, are here).
        ending = (
            self._tasks.known()
            if not self._tasks.shared
            else [h.state for h in self._handles.values()]
        )
        steps: list[Callable[[], None]] = [
            *(lambda state=state: self._end(state, TaskStatus.ENDED) for state in ending),
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

    def register_tools(self, workspace: str, tools: Iterable[Tool]) -> None:
        """Add or replace several catalogue entries in one change (checked together against
        the active policies, as `register_tool` checks one)."""
        self._control.register_tools(workspace, list(tools))

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

    def apply_directory(self, path: str | Path | WorkspaceFolder) -> str:
        """Create or update a workspace from workspace.yaml, catalogue.yaml and policies/
        (a folder, or its files as read elsewhere); returns the workspace's name."""
        return self._control.apply_directory(path)

    # -- reading -------------------------------------------------------------------------------

    def workspace(self, name: str) -> Workspace:
        """The workspace as it is now: its revision, active and shadow policy versions."""
        workspace = self.store.workspace(name)
        if workspace is None:
            raise NotFound(f"workspace {name!r} does not exist")
        return workspace

    def tools(self, workspace: str) -> list[Tool]:
        """The workspace's tool catalogue."""
        self.workspace(workspace)
        return self.store.tools(workspace)

    def decisions(
        self,
        workspace: str,
        *,
        agent: str | None = None,
        task_id: str | None = None,
        tool: str | None = None,
        effect: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        """The workspace's decision log, newest first, filtered by what is given; at most
        `limit` records (1 to 1,000)."""
        if effect is not None and effect not in {e.value for e in Effect}:
            raise InvalidInput(f"effect is one of {', '.join(e.value for e in Effect)}")
        return self.store.decisions(
            workspace=workspace,
            agent=agent,
            task_id=task_id,
            tool=tool,
            effect=effect,
            since=since,
            limit=min(max(limit, 1), MAX_DECISIONS),
        )

    def approval(self, approval_id: str) -> ApprovalRequest:
        """One approval request as it is now: pending, or who answered it and how, or which
        decision spent it (a request whose time has passed reads as expired)."""
        return self.approvals.get(approval_id)

    def task_state(self, task_id: str) -> TaskState:
        """The state of a task open here: its calls, labels and counters."""
        state = self._tasks.get(task_id)
        if state is None:
            raise NotFound(f"task {task_id} is not open here")
        return state

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
        user, request, granted = checked_task(workspace, agent, user, request, tools=tools, ttl=ttl)
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
        task it starts is open here from now on. Renewing a task's token leaves its state as
        it is (read from the store when shared; never started afresh, which would forget what
        the task had read)."""
        issued = self.credentials.exchange(request, dpop_jkt=dpop_jkt)
        if request.task_id is None:
            self._tasks.open(issued.task)
        return issued

    def report(self, task_id: str, decision_id: str, output: Any, *, complete: bool = True) -> None:
        """Tell a task what a call it was allowed returned (feeds its state: labels,
        provenance). `complete=False`: `output` is only part of it (an agent elsewhere could
        send no more), so the task is also labelled `unscanned`."""
        state = self._tasks.get(task_id)
        record = self.store.decision(decision_id)
        if state is None:
            raise NotFound(f"task {task_id} is not open here")
        if record is None or record.task_id != task_id:  # another task's reads as no decision:
            # an agent must not learn which ids are real in other tasks (or workspaces)
            raise NotFound(f"no decision {decision_id} of task {task_id} is recorded (yet)")
        if record.effect is not Effect.ALLOW:
            raise InvalidInput(f"decision {decision_id} did not allow the call")
        self._report(state, record.tool, output, complete)

    def report_decided(self, decision: Decision, output: Any) -> None:
        """`report` for a caller holding the Decision this Guard made (the MCP gateway): what
        the decision says need not be read back from the store."""
        state = self._tasks.get(decision.task_id or "")
        if state is None:
            raise NotFound(f"task {decision.task_id} is not open here")
        if decision.effect is not Effect.ALLOW:
            raise InvalidInput(f"decision {decision.decision_id} did not allow the call")
        self._report(state, decision.tool, output, True)

    def _report(self, state: TaskState, tool_name: str, output: Any, complete: bool) -> None:
        try:
            view = self._views.get(state.task.workspace)
            tool = view.catalogue.get(tool_name) if view is not None else None
        except Exception:  # the workspace cannot be read now: the output still counts, untrusted
            log.exception("reporting to task %s without its catalogue", state.id)
            tool = None
        seen = observe(tool.spec if tool is not None else None, output, complete=complete)
        self._tasks.report(state, seen)
        self._tasks.bequeath(state, set(seen.labels))

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
        state = self._tasks.open(issued.task)
        handle = TaskHandle(self, state, key=key, issued=issued, exchange=exchange, parent=parent)
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

    async def authorize_async(
        self,
        tool: str,
        args: Any,
        *,
        token: str,
        proof: str | None,
        workspace: str | None = None,
        once: Sequence[tuple[str, float]] = (),
    ) -> Decision:
        """`authorize` for the service's event loop (a call over HTTP, with its token and
        proof): the calls a worker has in flight are recorded in one commit. `once`: the
        one-time id of a proof checked already but not written (`Credentials.authenticate`
        with a `remember_once` that keeps it), claimed with the decision's record, so a
        replay is denied and the call costs one transaction, not two."""
        request = AuthorizeRequest(
            tool=tool, args=args, workspace=workspace, token=token, proof=proof
        )
        return await self._pdp.decide_async(request, once=once)

    def _forget_expired(self, now: float) -> None:
        """Expired tasks can no longer act (the task gate sees to that); this frees their state."""
        for state in self._tasks.expired(now):
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
        state = self._tasks.drop(task_id)
        if state is not None and state.status is TaskStatus.OPEN:
            state.status = status
        self._handles.pop(task_id, None)


class TaskHandle(TaskHandleBase):
    """An open task of an embedded Guard; TaskHandleBase does what both kinds of handle do."""

    _guard: Guard

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
        super().__init__(
            guard,
            key=key,
            token=issued.response.access_token,
            claims=issued.claims,
            exchange=exchange,
            request=state.task.request,
            parent=parent,
            clock=guard._clock,
        )
        self._state = state

    @property
    def state(self) -> TaskState:
        """The task's state as its Guard knows it now (read back if it had to let it go)."""
        return self._guard._tasks.get(self.id) or self._state

    def report(self, decision: Decision, output: Any) -> None:
        """In process the Decision is this Guard's own, so its record is not read back: at the
        `async` durability level it may not be committed yet."""
        if decision.task_id != self.id:
            raise InvalidInput(f"decision {decision.decision_id} belongs to another task")
        self._guard.report_decided(decision, output)

    def end(self) -> None:
        self._guard._end(self._state, TaskStatus.ENDED)

    @property
    def _token_url(self) -> str:
        return self._guard.credentials.settings.token_url

    @property
    def _proof_rule(self) -> ProofRule:
        return self._guard._proofs

    def _exchanged(self, exchange: ExchangeRequest) -> tuple[str, AccessClaims]:
        task = self._state.task
        issued = self._guard.credentials.exchange(
            self._guard._signed(exchange, self._key, task.workspace, task.agent)
        )
        return issued.response.access_token, issued.claims

    def _start_sub_task(
        self, exchange: ExchangeRequest, agent: str, key: ECKey | None
    ) -> TaskHandle:
        workspace = self._state.task.workspace
        if key is not None:
            self._guard.agent_keys.put(workspace, agent, key)
        return self._guard._start(exchange, workspace, agent, parent=self)

    def _downstream(self, token: str, proof: str, audience: str, decision_id: str) -> str:
        issued = self._guard.credentials.downstream(
            token, proof=proof, audience=audience, decision_id=decision_id
        )
        return issued.response.access_token

    def _await_approval(self, approval_id: str, timeout: float) -> ApprovalRequest:
        return self._guard.approvals.wait(approval_id, timeout)
