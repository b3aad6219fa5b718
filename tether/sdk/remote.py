"""The remote Guard: the embedded Guard's methods, over the HTTP API of `tether serve`.

An agent's process uses it to have its calls decided by a Tether service elsewhere. It holds the
agent's private key, which never leaves it: it signs the agent's assertion for each token
exchange (`/v1/token`, with a DPoP proof), and a fresh DPoP proof, bound to the task's token, for
every call after. People and services use its administration methods with an admin token. Every
error comes back as a problem document (RFC 9457) whose `type` names the error's class
(tether/errors.py), and is raised as that class, so that code written against one Guard runs
against the other: tests/test_guard.py and tests/test_chains.py run on both.

Where the two cannot be the same, by nature of the network:
- a task's state lives in the service, so `task.state` is a `TaskSummary` read from it (once the
  task has ended, as it was when it ended);
- a call made outside any task has no credential to ask the service with: it is denied here,
  and not recorded;
- a call in one task with the token of another is denied here, and not recorded: the service
  decides every call in its token's task;
- an answer that is not this call's (for another tool or task, or naming no decision record:
  a misrouted replica, a caching proxy) is a deny here, whatever effect it says;
- a call whose arguments hold bytes is denied here, and not recorded: JSON would carry their
  base64 text, which policies would decide on while the tool got the bytes;
- an output reported is read here, as the service reads it (tether/session/content.py), and its
  text is sent, as much as fits in a request (REPORT_BYTES); a rest left unread labels the task
  `unscanned`, as an output too large to read does in process;
- a call whose request is over the service's 1 MiB body limit is refused by the service
  (InvalidInput) and decided by no one; in process it is a recorded deny;
- a refusal by the token endpoint (an agent that is suspended, a tool the user did not
  delegate) is a CredentialRefused: the service checks those once the agent has proven itself,
  and tells nobody else.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from joserfc.jwk import ECKey

from tether.control import WorkspaceFolder
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    USER_TOKEN_TYPE,
    AccessClaims,
    ExchangeRequest,
    ExchangeResponse,
    Settings,
    make_assertion,
    make_proof,
)
from tether.credentials.jws import unverified_payload
from tether.errors import (
    Conflict,
    CredentialRefused,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyError,
    PolicyProblem,
    TetherError,
    Unavailable,
    error_class,
)
from tether.identity import agent_spiffe_id, generate_key, public_jwk
from tether.model import (
    Agent,
    AgentKey,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    DecisionRecord,
    Effect,
    Grant,
    Reason,
    Stage,
    TaskStatus,
    TaskSummary,
    Tool,
    User,
    Workspace,
)
from tether.pdp import ProofRule, unfaithful_argument
from tether.policy import Bundle, compile_bundle, read_policy_dir
from tether.policy.backtest import BacktestReport
from tether.sdk.decorator import ToolDecorator
from tether.sdk.guard import DEFAULT_GRANT_LIFETIME, DEFAULT_TASK_TTL, checked_task
from tether.sdk.handle import TaskHandleBase
from tether.session.content import text_of

T = TypeVar("T")

ISSUER = Settings().issuer  # the audience of agent assertions, as `tether serve` names itself
MAX_WAIT = 5.0  # seconds one request for an approval's status waits (the service's bound)
REPORT_BYTES = 960_000  # of an output's text sent in one report: under the 1 MiB body limit
_encode = msgspec.json.Encoder().encode
_STATUS: dict[int, type[TetherError]] = {
    400: InvalidInput,
    401: CredentialRefused,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    429: Unavailable,
    503: Unavailable,
}


class _Validated(msgspec.Struct):
    version: str
    cedar_schema: dict[str, Any]


class _Activated(msgspec.Struct):
    version: str


class _Changed(msgspec.Struct):
    id: str
    status: str


class RemoteGuard(ToolDecorator):
    """The Guard of `Guard.remote(url, ...)`: see Guard for what each method does."""

    def __init__(
        self,
        url: str,
        *,
        agent: str | None = None,
        key: ECKey | None = None,
        admin_token: str | None = None,
        trust_domain: str = "tether.local",
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._admin = admin_token
        self._agent = agent
        self._agent_key = key
        self._trust_domain = trust_domain
        self._clock = clock
        self._token_url = f"{self.url}/v1/token"
        self._authorize_url = f"{self.url}/v1/authorize"
        self._keys: dict[tuple[str, str], ECKey] = {}
        self._made: list[tuple[str, str, str]] = []  # keys registered here: (ws, agent, kid)
        self._keys_lock = threading.Lock()
        self._handles: dict[str, RemoteTaskHandle] = {}

    def close(self) -> None:
        """End this Guard's open tasks, revoke the keys it made (they lived only in its memory),
        then close its connections; each step is tried even when one before failed."""
        steps: list[Callable[[], None]] = [
            *(handle.end for handle in list(self._handles.values())),
            *(
                lambda made=made: self._revoke_key(*made)
                for made in self._made  # a key only this process held can never be used again
            ),
            self._http.close,
        ]
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:
                failure = failure or exc
        self._made.clear()
        if failure is not None:
            raise failure

    def __enter__(self) -> RemoteGuard:
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
        body = {
            "name": name,
            "tenant": tenant,
            "trust_domain": trust_domain,
            "settings": dict(settings or {}),
        }
        return self._admin_call("POST", "/v1/workspaces", Workspace, body=body)

    def register_agent(
        self,
        workspace: str,
        name: str,
        *,
        kind: str,
        owner: str,
        ceiling: Iterable[str] | None = None,
    ) -> Agent:
        body = {
            "name": name,
            "kind": kind,
            "owner": owner,
            "ceiling": list(ceiling) if ceiling is not None else None,
        }
        return self._admin_call("POST", f"{_ws(workspace)}/agents", Agent, body=body)

    def suspend_agent(self, workspace: str, name: str) -> None:
        self._admin_call("POST", f"{_ws(workspace)}/agents/{_seg(name)}/suspend", object)

    def resume_agent(self, workspace: str, name: str) -> None:
        self._admin_call("POST", f"{_ws(workspace)}/agents/{_seg(name)}/resume", object)

    def add_user(self, workspace: str, name: str, roles: Iterable[str] = ()) -> User:
        body = {"name": name, "roles": list(roles)}
        return self._admin_call("POST", f"{_ws(workspace)}/users", User, body=body)

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
        body = {
            "user": user,
            "agent": agent,
            "tools": list(tools),
            "max_ttl": max_ttl,
            "may_act": list(may_act),
            "expires_in": expires_in,
        }
        return self._admin_call("POST", f"{_ws(workspace)}/grants", Grant, body=body)

    def approve(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        """`approver` must be the admin token's owner: an answer is the person's whose token
        gives it."""
        return self._answer_approval(approval_id, "approve", approver, comment)

    def deny(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        return self._answer_approval(approval_id, "deny", approver, comment)

    def _answer_approval(
        self, approval_id: str, answer: str, approver: str, comment: str
    ) -> ApprovalRequest:
        body = {"comment": comment, "approver": approver}
        path = f"/v1/approvals/{_seg(approval_id)}/{answer}"
        return self._admin_call("POST", path, ApprovalRequest, body=body)

    def revoke_grant(self, grant_id: str) -> None:
        self._admin_call("POST", f"/v1/grants/{_seg(grant_id)}/revoke", object)

    def revoke_task(self, task_id: str) -> None:
        self._admin_call("POST", f"/v1/tasks/{_seg(task_id)}/revoke", object)

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
        body = {
            "effects": list(effects),
            "args_schema": dict(args_schema) if args_schema is not None else None,
            "sinks": list(sinks),
            "output": output,
            "labels": list(labels),
            "risk_tier": risk_tier,
            "description": description,
        }
        return self._admin_call("PUT", f"{_ws(workspace)}/tools/{_seg(name)}", Tool, body=body)

    def activate_policies(
        self, workspace: str, policies: str | Path | Mapping[str, str], *, shadow: bool = False
    ) -> str:
        body = {"files": _policy_files(policies), "shadow": shadow}
        path = f"{_ws(workspace)}/policies"
        return self._admin_call("POST", path, _Activated, body=body).version

    def stop_shadow(self, workspace: str) -> None:
        self._admin_call("DELETE", f"{_ws(workspace)}/policies/shadow", object)

    def check_policies(self, workspace: str, policies: str | Path | Mapping[str, str]) -> Bundle:
        """Validated by the service; compiled here too, on the schema it validated against."""
        files = _policy_files(policies)
        path = f"{_ws(workspace)}/policies/validate"
        checked = self._admin_call("POST", path, _Validated, body={"files": files})
        return compile_bundle(files, checked.cedar_schema)

    def backtest(self, workspace: str, candidate: Bundle, *, since: float) -> BacktestReport:
        body = {"files": dict(candidate.files), "since": since}
        path = f"{_ws(workspace)}/policies/backtest"
        return self._admin_call("POST", path, BacktestReport, body=body)

    def apply_directory(self, path: str | Path | WorkspaceFolder) -> str:
        """The folder is read here and its files sent: the service need not see it."""
        folder = path if isinstance(path, WorkspaceFolder) else WorkspaceFolder.read(path)
        applied = self._admin_call("POST", f"{_ws(folder.name)}/apply", _Changed, body=folder)
        return applied.id

    # -- reading -------------------------------------------------------------------------------

    def workspace(self, name: str) -> Workspace:
        return self._admin_call("GET", _ws(name), Workspace)

    def tools(self, workspace: str) -> list[Tool]:
        return self._admin_call("GET", f"{_ws(workspace)}/tools", list[Tool])

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
        given = {"agent": agent, "task": task_id, "tool": tool, "effect": effect, "since": since}
        params = {name: str(value) for name, value in given.items() if value is not None}
        params["limit"] = str(limit)
        path = f"{_ws(workspace)}/decisions"
        return self._admin_call("GET", path, list[DecisionRecord], params=params)

    def approval(self, approval_id: str) -> ApprovalRequest:
        return self._admin_call("GET", f"/v1/approvals/{_seg(approval_id)}", ApprovalRequest)

    def task_state(self, task_id: str) -> TaskSummary:
        return self._handle(task_id).state

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
    ) -> RemoteTaskHandle:
        """Start a task (see Guard.task). Without `grant`, the service finds the user's live
        grant to the agent that covers `tools`, once the agent has proven itself."""
        user, request, granted = checked_task(workspace, agent, user, request, tools=tools, ttl=ttl)
        if key is not None:
            with self._keys_lock:
                self._keys[(workspace, agent)] = key
        exchange = ExchangeRequest(
            subject_token=grant if grant is not None else user,
            subject_token_type=GRANT_TOKEN_TYPE if grant is not None else USER_TOKEN_TYPE,
            actor_token="",
            scope=" ".join(granted),
            request=request,
            task_ttl=ttl,
        )
        handle = self._start(exchange, workspace, agent, parent=None)
        if handle.claims.sub != user:
            handle.end()
            raise InvalidInput(f"grant {grant} was not made by user {user!r}")
        return handle

    def report(self, task_id: str, decision_id: str, output: Any, *, complete: bool = True) -> None:
        handle = self._handle(task_id)
        pieces, unread = _text(output)
        body = {"decision_id": decision_id, "output": pieces, "unread": unread or not complete}
        self._agent_call(handle, "POST", f"/v1/tasks/{task_id}/report", object, body=body)

    def end_task(self, task_id: str) -> None:
        self._handle(task_id).end()

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
        """Decide one call (see Guard.authorize); `proven` means nothing here: the service
        checks the proof. A credential the service refuses is a recorded deny, as in process."""
        if token is None and task_id is not None:
            handle = self._handles.get(task_id)
            if handle is not None:
                token, proof = handle.credential()
        elif token is not None and task_id is not None:
            named = _token_task(token)  # the service decides in the token's task, whatever is named
            if named is not None and named != task_id:
                why = f"the token is for task {named}, not {task_id}"
                return _denied_here(task_id, tool, workspace, Reason(Stage.AUTHENTICATE, why))
        if token is None:
            return _unasked(task_id, tool, workspace)
        try:
            body = _encode({"tool": tool, "args": args, "workspace": workspace})
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"the arguments of a call go to Tether as JSON: {exc}") from exc
        unfaithful = unfaithful_argument(args)  # after encoding: `args` hold no cycle
        if unfaithful is not None:
            return _denied_here(task_id, tool, workspace, Reason(Stage.CONTEXT, unfaithful))
        headers = {"Authorization": f"DPoP {token}", **({"DPoP": proof} if proof else {})}
        response = self._send("POST", "/v1/authorize", content=body, headers=headers)
        if response.status_code == 401:  # refused, and recorded: the decision comes with it
            recorded = _problem(response).get("decision")
            if recorded is not None:  # a refusal, whatever a proxy or a broken server says
                decision = msgspec.convert(recorded, Decision)
                return msgspec.structs.replace(decision, effect=Effect.DENY)
        answered = _token_task(token) or task_id  # the service decides in the token's task
        return _this_calls(_answer(response, Decision), answered, tool, workspace)

    # -- internals -----------------------------------------------------------------------------

    def _handle(self, task_id: str) -> RemoteTaskHandle:
        handle = self._handles.get(task_id)
        if handle is None:
            raise NotFound(f"task {task_id} is not open here")
        return handle

    def _start(
        self,
        exchange: ExchangeRequest,
        workspace: str,
        agent: str,
        parent: RemoteTaskHandle | None,
    ) -> RemoteTaskHandle:
        key = self._key(workspace, agent)
        token, claims = self._exchange(exchange, key, workspace, agent)
        handle = RemoteTaskHandle(
            self,
            key=key,
            token=token,
            claims=claims,
            exchange=exchange,
            request=exchange.request,
            parent=parent,
        )
        self._handles[handle.id] = handle
        return handle

    def _exchange(
        self, exchange: ExchangeRequest, key: ECKey, workspace: str, agent: str
    ) -> tuple[str, AccessClaims]:
        """A token exchange at the token endpoint, the agent proving itself with `key` (its
        assertion as the actor token, and a DPoP proof that binds the token to the key)."""
        now = self._clock()
        spiffe_id = agent_spiffe_id(self._trust_domain, workspace, agent)
        assertion = make_assertion(key, agent_id=spiffe_id, audience=ISSUER, now=now)
        signed = msgspec.structs.replace(exchange, actor_token=assertion)
        proof = make_proof(key, htm="POST", htu=self._token_url, now=now)
        issued = self._call("POST", "/v1/token", ExchangeResponse, body=signed, dpop=proof)
        return issued.access_token, _claims(issued.access_token)

    def _downstream(self, token: str, proof: str, audience: str, decision_id: str) -> str:
        request = ExchangeRequest(
            subject_token=token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            actor_token="",
            audience=audience,
            decision_id=decision_id,
        )
        issued = self._call("POST", "/v1/token", ExchangeResponse, body=request, dpop=proof)
        return issued.access_token

    def _key(self, workspace: str, agent: str) -> ECKey:
        """The agent's key here: given to this Guard, or made and registered (its public half)
        with the admin token, as an embedded Guard makes one for an agent without a key."""
        with self._keys_lock:
            key = self._keys.get((workspace, agent))
            if key is None and agent == self._agent and self._agent_key is not None:
                key = self._agent_key
            if key is None:
                if self._admin is None:
                    raise InvalidInput(
                        f"no key for agent {agent!r} here: give it (key=), or an admin token "
                        "to register a new one"
                    )
                key = generate_key()
                path = f"{_ws(workspace)}/agents/{_seg(agent)}/keys"
                body = {"jwk": public_jwk(key)}
                record = self._admin_call("POST", path, AgentKey, body=body)
                self._made.append((workspace, agent, record.kid))
            self._keys[(workspace, agent)] = key
            return key

    def _revoke_key(self, workspace: str, agent: str, kid: str) -> None:
        path = f"{_ws(workspace)}/agents/{_seg(agent)}/keys/{_seg(kid)}/revoke"
        self._admin_call("POST", path, object)

    def _admin_call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> T:
        if self._admin is None:
            raise Forbidden(
                "this remote Guard holds no admin token: Guard.remote(url, admin_token=...)"
            )
        headers = {"Authorization": f"Bearer {self._admin}"}
        return self._call(method, path, kind, body=body, params=params, headers=headers)

    def _agent_call(
        self,
        handle: RemoteTaskHandle,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> T:
        """A request of the task's agent: its token, and a proof of its key for this request."""
        token = handle.token
        headers = {"Authorization": f"DPoP {token}"}
        proof = handle.proof(method, self.url + path, token)
        return self._call(method, path, kind, body=body, params=params, headers=headers, dpop=proof)

    def _call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        dpop: str | None = None,
    ) -> T:
        content = _encode(body) if body is not None else None
        sent = {**(headers or {}), **({"DPoP": dpop} if dpop else {})}
        response = self._send(method, path, content=content, params=params, headers=sent)
        return _answer(response, kind)

    def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            return self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Tether at {self.url} did not answer: {exc}") from exc


class RemoteTaskHandle(TaskHandleBase):
    """An open task of a remote Guard; TaskHandleBase does what both kinds of handle do."""

    _guard: RemoteGuard

    def __init__(
        self,
        guard: RemoteGuard,
        *,
        key: ECKey,
        token: str,
        claims: AccessClaims,
        exchange: ExchangeRequest,
        request: str,
        parent: RemoteTaskHandle | None,
    ) -> None:
        super().__init__(
            guard,
            key=key,
            token=token,
            claims=claims,
            exchange=exchange,
            request=request,
            parent=parent,
            clock=guard._clock,
        )
        self._last: TaskSummary | None = None  # the state as last read
        self._ended = False

    @property
    def state(self) -> TaskSummary:
        """What the task has done so far, read from the service; once the task has ended here,
        as it was when it ended."""
        if not self._ended:
            path = f"/v1/tasks/{self.id}"
            self._last = self._guard._agent_call(self, "GET", path, TaskSummary)
        if self._last is None:
            raise NotFound(f"task {self.id} closed before its state was read")
        return self._last

    def end(self) -> None:
        """End the task (its state is read first, for `state` to keep). A task the service
        closed already (revoked, expired) needs no ending."""
        if self._ended:
            return
        with contextlib.suppress(TetherError):  # read now: not to be read once it has ended
            self.state  # noqa: B018
        try:
            self._guard._agent_call(self, "POST", f"/v1/tasks/{self.id}/end", object)
            status = TaskStatus.ENDED
        except CredentialRefused:
            expired = self._last is not None and self._clock() >= self._last.task.expires_at
            status = TaskStatus.EXPIRED if expired else TaskStatus.REVOKED
        self._ended = True
        if self._last is not None:
            self._last = msgspec.structs.replace(self._last, status=status)
        self._guard._handles.pop(self.id, None)

    @property
    def _token_url(self) -> str:
        return self._guard._token_url

    @property
    def _proof_rule(self) -> ProofRule:
        return ProofRule(htm="POST", htu=self._guard._authorize_url, required=True)

    def _exchanged(self, exchange: ExchangeRequest) -> tuple[str, AccessClaims]:
        return self._guard._exchange(exchange, self._key, self.claims.ws, self.claims.agent)

    def _start_sub_task(
        self, exchange: ExchangeRequest, agent: str, key: ECKey | None
    ) -> RemoteTaskHandle:
        workspace = self.claims.ws
        if key is not None:
            with self._guard._keys_lock:
                self._guard._keys[(workspace, agent)] = key
        return self._guard._start(exchange, workspace, agent, parent=self)

    def _downstream(self, token: str, proof: str, audience: str, decision_id: str) -> str:
        return self._guard._downstream(token, proof, audience, decision_id)

    def _await_approval(self, approval_id: str, timeout: float) -> ApprovalRequest:
        """Long polls of at most MAX_WAIT seconds each, until answered or `timeout`."""
        deadline = time.monotonic() + max(timeout, 0.0)
        path = f"/v1/tasks/{self.id}/approvals/{approval_id}"
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), MAX_WAIT)
            params = {"wait": f"{wait:.3f}"}
            request = self._guard._agent_call(self, "GET", path, ApprovalRequest, params=params)
            if request.status is not ApprovalStatus.PENDING or time.monotonic() >= deadline:
                return request


# -- helpers ---------------------------------------------------------------------------------------


def _seg(name: str) -> str:
    """One path segment."""
    return quote(name, safe="")


def _ws(workspace: str) -> str:
    return f"/v1/workspaces/{_seg(workspace)}"


def _policy_files(policies: str | Path | Mapping[str, str]) -> dict[str, str]:
    """A bundle's files: read here from a folder, or as given."""
    return dict(policies) if isinstance(policies, Mapping) else read_policy_dir(policies)


def _claims(token: str) -> AccessClaims:
    """The claims of a token the service just issued (read, not verified: it is the service's
    to verify, on every call)."""
    return msgspec.json.decode(unverified_payload(token), type=AccessClaims)


def _token_task(token: str) -> str | None:
    """The task a token names (read, not verified), or None if it will not read: the service
    refuses such a token."""
    try:
        return _claims(token).task
    except Exception:
        return None


def _this_calls(
    decision: Decision, task_id: str | None, tool: str, workspace: str | None
) -> Decision:
    """`decision`, if it answers this call: a deny otherwise. A misrouted replica or a caching
    proxy can hand back a well-formed allow for another tool or task (or one recorded nowhere),
    and that must never run this call."""
    why = None
    if not decision.decision_id:
        why = "names no decision record"
    elif decision.tool != tool:
        why = f"is for tool {decision.tool!r}, not {tool!r}"
    elif decision.task_id != task_id:
        why = f"is for task {decision.task_id}, not {task_id}"
    if why is None:
        return decision
    reason = Reason(Stage.ANSWER, f"the service's answer {why}: it does not answer this call")
    return _denied_here(task_id, tool, workspace, reason)


def _unasked(task_id: str | None, tool: str, workspace: str | None) -> Decision:
    """The deny of a call with no credential to ask the service with (not recorded: the service
    never hears of it)."""
    why = (
        "no task: tool calls are authorized only inside a task"
        if task_id is None
        else f"no credential for task {task_id}: present its token"
    )
    return _denied_here(task_id, tool, workspace, Reason(Stage.AUTHENTICATE, why))


def _denied_here(task_id: str | None, tool: str, workspace: str | None, why: Reason) -> Decision:
    """The deny of a call this Guard refuses without asking the service (not recorded)."""
    return Decision(
        decision_id="",
        effect=Effect.DENY,
        reasons=(why,),
        policy_version=None,
        workspace=workspace,
        agent=None,
        task_id=task_id,
        tool=tool,
    )


def _text(output: Any) -> tuple[list[str], bool]:
    """The text the service would read in `output` (tether/session/content.py), as much of it
    as one report carries, and whether any was left unread."""
    try:
        text = text_of(output)
    except Exception:  # a value that will not read: what it hid is unknown
        return [], True
    pieces: list[str] = []
    room = REPORT_BYTES
    for found in text.pieces:
        if room <= 0:  # full: what is left goes unread
            return pieces, True
        taken = min(len(found), room)  # a character takes a byte at least
        piece = _sendable(found[:taken])
        if len(_encode(piece)) > room:
            taken = min(len(found), room // 8)  # and at most 8 (an escaped lone surrogate)
            piece = _sendable(found[:taken])
        pieces.append(piece)
        room -= len(_encode(piece)) + 1
        if taken < len(found):
            return pieces, True
    return pieces, text.truncated


def _sendable(text: str) -> str:
    """`text`, with any lone surrogate (which JSON cannot carry) escaped."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _answer(response: httpx.Response, kind: type[T]) -> T:
    """The answer, decoded; or the error the problem document names, raised."""
    if response.is_success:
        return msgspec.json.decode(response.content, type=kind)
    problem = _problem(response)
    detail = str(problem.get("detail") or response.text[:500] or response.reason_phrase)
    error = error_class(str(problem.get("type", ""))) or _STATUS.get(
        response.status_code, TetherError
    )
    if error is PolicyError:
        try:
            found = [PolicyProblem(**p) for p in problem.get("problems", [])]
        except TypeError:
            found = []
        policy_error = PolicyError(found)
        policy_error.args = (detail,)  # the service's words (they may say what caused it)
        raise policy_error
    if error is CredentialRefused:
        raise CredentialRefused(detail, str(problem.get("error", "invalid_token")))
    raise error(detail)
