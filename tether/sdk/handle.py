"""What a task handle does alike in process (guard.py) and over HTTP (remote.py).

A handle holds its task's token and renews it (a token exchange for the same task) when less than
a fifth of its life is left, so a task may outlive any one of its tokens; proves its key; decides
calls, waiting for a person when asked to; reports what allowed calls returned; hands part of the
task to a sub-agent; and, inside `with`, is the task that guarded tools run in. The two kinds of
handle differ only in how they reach the decision point: the hooks at the end of the class.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import msgspec
from joserfc.jwk import ECKey

from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    AccessClaims,
    ExchangeRequest,
    make_proof,
)
from tether.errors import InvalidInput, TetherError
from tether.model import ApprovalRequest, ApprovalStatus, Decision, Effect
from tether.pdp import ProofRule

log = logging.getLogger("tether.sdk")

_current_task: contextvars.ContextVar[TaskHandleBase | None] = contextvars.ContextVar(
    "tether_task", default=None
)


def current_task() -> TaskHandleBase | None:
    """The task the calling code runs in (set by `with guard.task(...)`), if any."""
    return _current_task.get()


class Decides(Protocol):
    """What a handle asks of its Guard: a decision, and to hear what an allowed call returned."""

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
    ) -> Decision: ...

    def report(self, task_id: str, decision_id: str, output: Any) -> None: ...


class TaskHandleBase(ABC):
    """An open task. Use it as a context manager so guarded tools find it and it ends on exit."""

    def __init__(
        self,
        guard: Decides,
        *,
        key: ECKey,
        token: str,
        claims: AccessClaims,
        exchange: ExchangeRequest,
        request: str,
        parent: TaskHandleBase | None,
        clock: Callable[[], float],
    ) -> None:
        """`exchange`: the request the task was started with, kept to renew its token (a task
        started on a grant renews on the grant it was issued under)."""
        self._guard = guard
        self._key = key
        self._token = token
        self._claims = claims
        self._task_id = claims.task
        self._request = request
        self._clock = clock
        renewal = msgspec.structs.replace(exchange, task_id=claims.task, task_ttl=None)
        if renewal.subject_token_type != ACCESS_TOKEN_TYPE:
            renewal = msgspec.structs.replace(
                renewal, subject_token=claims.grant, subject_token_type=GRANT_TOKEN_TYPE
            )
        self._exchange = renewal
        self._parent = parent
        self._renew_lock = threading.Lock()
        self._asked: dict[str, tuple[str, Mapping[str, Any]]] = {}  # approval id -> the call
        self._tokens: list[contextvars.Token[TaskHandleBase | None]] = []

    @property
    def id(self) -> str:
        return self._task_id

    @property
    def token(self) -> str:
        """The task's current token, renewed first if it is close to expiring."""
        claims = self._claims
        now = self._clock()
        if now >= claims.exp - (claims.exp - claims.iat) / 5:
            with self._renew_lock:
                if now >= self._claims.exp - (claims.exp - claims.iat) / 5:
                    self._renew()
        return self._token

    @property
    def claims(self) -> AccessClaims:
        return self._claims

    def token_or_none(self) -> str | None:
        """The token to present; None if it cannot be renewed (the decision then says why)."""
        try:
            return self.token
        except TetherError:
            log.warning("task %s: its token could not be renewed", self.id, exc_info=True)
            return self._token

    def _renew(self) -> None:
        exchange = self._exchange
        if self._parent is not None:
            parent_token = self._parent.token
            exchange = msgspec.structs.replace(
                exchange,
                subject_token=parent_token,
                subject_proof=self._parent._possession(parent_token),
            )
        self._token, self._claims = self._exchanged(exchange)

    def delegate(
        self,
        agent: str,
        *,
        tools: Iterable[str] | None = None,
        request: str | None = None,
        ttl: float | None = None,
        key: ECKey | None = None,
    ) -> TaskHandleBase:
        """Hand part of this task to a sub-agent: a new task whose token is exchanged from this
        one, holding at most this task's tools (default: all of them), ending no later."""
        token = self.token
        exchange = ExchangeRequest(
            subject_token=token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            subject_proof=self._possession(token),
            actor_token="",
            scope=" ".join(sorted(tools)) if tools is not None else None,
            request=self._request if request is None else request,
            task_ttl=ttl,
        )
        return self._start_sub_task(exchange, agent, key)

    def downstream_token(self, decision: Decision, audience: str) -> str:
        """A token for the API `audience` that the allowed call `decision` goes to: scoped to
        that one tool, living at most 60 s. The task's own token never leaves Tether."""
        if decision.task_id != self.id or decision.effect is not Effect.ALLOW:
            raise InvalidInput(
                f"decision {decision.decision_id} is not an allowed call of this task"
            )
        token = self.token
        return self._downstream(token, self._possession(token), audience, decision.decision_id)

    def _possession(self, token: str) -> str:
        """A DPoP proof, for the token endpoint, that this task holds `token`'s key."""
        return self.proof("POST", self._token_url, token)

    def proof(self, htm: str, htu: str, token: str) -> str:
        """A DPoP proof of holding `token`'s key, for one request (`htm` to `htu`)."""
        return make_proof(self._key, htm=htm, htu=htu, now=self._clock(), access_token=token)

    def credential(self) -> tuple[str | None, str | None]:
        """This task's token for a call, and the proof the decision point requires with it
        (none in process, one for the service's URL over HTTP)."""
        token = self.token_or_none()
        rule = self._proof_rule
        proof = self.proof(rule.htm, rule.htu, token) if token and rule.required else None
        return token, proof

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
        request = self._await_approval(decision.approval_id or "", timeout)
        if request.status is ApprovalStatus.PENDING:
            return decision
        self._asked.pop(request.id, None)
        tool, args = asked
        return self.authorize(tool, args)

    def report(self, decision: Decision, output: Any) -> None:
        """Tell the task what an allowed call returned (feeds its state: labels, provenance)."""
        if decision.task_id != self.id:
            raise InvalidInput(f"decision {decision.decision_id} belongs to another task")
        self._guard.report(self.id, decision.decision_id, output)

    def __enter__(self) -> Self:
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

    # -- how this kind of handle reaches the decision point ---------------------------------------

    @property
    @abstractmethod
    def state(self) -> Any:
        """What the task has done so far: its calls, labels and counters."""

    @abstractmethod
    def end(self) -> None:
        """The task is done: its tokens, and its sub-tasks', are refused from now on."""

    @property
    @abstractmethod
    def _token_url(self) -> str:
        """The token endpoint, as proofs sent to it name it."""

    @property
    @abstractmethod
    def _proof_rule(self) -> ProofRule:
        """What proof a call must carry."""

    @abstractmethod
    def _exchanged(self, exchange: ExchangeRequest) -> tuple[str, AccessClaims]:
        """The token (and its claims) the exchange gives this task's agent, proving its key."""

    @abstractmethod
    def _start_sub_task(
        self, exchange: ExchangeRequest, agent: str, key: ECKey | None
    ) -> TaskHandleBase:
        """Start the sub-task `exchange` asks for, as `agent` (with `key`, or its key here)."""

    @abstractmethod
    def _downstream(self, token: str, proof: str, audience: str, decision_id: str) -> str:
        """A downstream token for the decision, asked for by the holder of `token`."""

    @abstractmethod
    def _await_approval(self, approval_id: str, timeout: float) -> ApprovalRequest:
        """The approval request once decided, or as it is after `timeout` seconds."""
