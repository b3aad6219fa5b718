"""The step-up workflow: requests bound to exact calls, people's decisions on them, and the
single-use grant an approval becomes.

A request's life: `pending` until a person with the asked-for role approves or denies it, it
expires, or its agent is suspended (`cancelled`). An approval is a grant for that one call (tool,
canonical arguments, task) until the request's expiry; the decision that spends it marks it
`used`, so it authorizes exactly one call. Every step is an event in the store.

An agent waiting for a person's answer (`wait`) re-reads its request now and then, and also as
soon as this process changes a request or, on PostgreSQL, another process's change is notified
(store/notify.py): an approval given on any replica lets the call go ahead in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from tether.approvals.settings import (
    ApprovalSettings,
    Webhook,
    is_webhook_secret,
    webhook_variable_prefix,
)
from tether.approvals.webhooks import Notifier, redacted
from tether.errors import Conflict, Forbidden, NotFound
from tether.model import (
    ApprovalEvent,
    ApprovalRequest,
    ApprovalStatus,
    EventSink,
    new_id,
    no_events,
)
from tether.store import Store
from tether.store.notify import APPROVAL

log = logging.getLogger("tether.approvals")

SYSTEM = "tether"  # the actor of events no person caused (expiry, use)
OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
MAX_PENDING_PER_TASK = 20  # an agent cannot bury the real request under its own


class Approvals:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        events: EventSink = no_events,
    ) -> None:
        """`events`: every step of every request also goes to the audit log's chain."""
        self._store = store
        self._clock = clock
        self._events = events
        self._notifier: Notifier | None = None
        self._notifier_lock = threading.Lock()
        self._changes = threading.Condition()  # wakes `wait` when some request changed
        self._generation = 0  # how many changes this process has heard of
        store.listener.subscribe(APPROVAL, self._changed)

    def close(self, timeout: float = 5.0) -> None:
        """Give pending webhook deliveries up to `timeout` seconds."""
        if self._notifier is not None:
            self._notifier.close(timeout)

    # -- the decision point's side -------------------------------------------------------------

    def grant_for(self, task_id: str, call_hash: str) -> ApprovalRequest | None:
        """The approval given for exactly this call in this task, if it is still unspent."""
        request = self._store.approvals.for_call(task_id, call_hash)
        if request is None:
            return None
        request = self._expire_if_due(request)
        return request if request.status is ApprovalStatus.APPROVED else None

    def use(self, request: ApprovalRequest, decision_id: str) -> bool:
        """Spend the grant on one decision; False if it was spent (or expired) meanwhile."""
        now = self._clock()
        if now >= request.expires_at:
            self._expire_if_due(request)
            return False
        event = self._event(request, "used", request.agent, decision_id)
        used = self._store.approvals.transition(
            request.id,
            from_statuses=(ApprovalStatus.APPROVED,),
            event=event,
            status=ApprovalStatus.USED,
            used_by=decision_id,
        )
        if used:
            self._audit(request, event)
        return used

    def ask(
        self,
        *,
        workspace: str,
        task_id: str,
        agent: str,
        user: str,
        tool: str,
        effects: Iterable[str],
        args: str,
        call_hash: str,
        reasons: Iterable[str],
        policies: Iterable[str],
        approver_roles: Iterable[str],
        decision_id: str,
        settings: ApprovalSettings,
    ) -> ApprovalRequest:
        """The request for this call: the one already pending, the denial still standing, or
        a new one (whose approvers are then notified)."""
        latest = self._store.approvals.for_call(task_id, call_hash)
        if latest is not None:
            latest = self._expire_if_due(latest)
            if latest.status is ApprovalStatus.PENDING:
                return latest
            if latest.status is ApprovalStatus.DENIED and self._clock() < latest.expires_at:
                return latest
        waiting = [
            r
            for r in self._store.approvals.open_of_tasks([task_id])
            if r.status is ApprovalStatus.PENDING
        ]
        if len(waiting) >= MAX_PENDING_PER_TASK:
            raise Forbidden(
                f"task {task_id} already has {len(waiting)} requests waiting for a person; "
                "no more until some are answered or expire"
            )
        now = self._clock()
        request = ApprovalRequest(
            id=new_id("apr_"),
            workspace=workspace,
            task_id=task_id,
            agent=agent,
            user=user,
            tool=tool,
            effects=tuple(sorted(set(effects))),
            args=args,
            call_hash=call_hash,
            reasons=tuple(reasons),
            policies=tuple(policies),
            approver_roles=tuple(approver_roles),
            decision_id=decision_id,
            status=ApprovalStatus.PENDING,
            created_at=now,
            expires_at=now + settings.ttl,
        )
        event = self._event(request, "requested", agent, decision_id)
        self._store.approvals.add(request, event)
        self._audit(request, event)
        self._notify(request, settings)
        return request

    # -- the people's side ---------------------------------------------------------------------

    def approve(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        return self._decide(approval_id, approver, comment, ApprovalStatus.APPROVED)

    def deny(self, approval_id: str, *, approver: str, comment: str = "") -> ApprovalRequest:
        return self._decide(approval_id, approver, comment, ApprovalStatus.DENIED)

    def get(self, approval_id: str) -> ApprovalRequest:
        request = self._store.approvals.get(approval_id)
        if request is None:
            raise NotFound(f"no approval request {approval_id!r}")
        return self._expire_if_due(request)

    def pending(self, workspace: str | None = None) -> list[ApprovalRequest]:
        """The requests waiting for a person (expiring the ones whose time has passed)."""
        found = self._store.approvals.find(workspace=workspace, statuses=OPEN, limit=1000)
        return [r for r in map(self._expire_if_due, found) if r.status is ApprovalStatus.PENDING]

    def cancel_tasks(self, task_ids: Iterable[str], why: str) -> list[str]:
        """Cancel every open request (and unspent grant) of these tasks: a task that ended, was
        revoked, or whose agent was suspended can spend nothing."""
        cancelled = []
        for request in self._store.approvals.open_of_tasks(list(task_ids)):
            event = self._event(request, "cancelled", SYSTEM, why)
            if self._store.approvals.transition(
                request.id, from_statuses=OPEN, event=event, status=ApprovalStatus.CANCELLED
            ):
                self._audit(request, event)
                cancelled.append(request.id)
        if cancelled:
            self._changed()
        return cancelled

    def wait(self, approval_id: str, timeout: float, poll: float = 0.1) -> ApprovalRequest:
        """Block until the request is decided (or expires, or is cancelled), at most `timeout`
        seconds; returns it as it then is. It is re-read when a change is heard of, and else
        after `poll` seconds, then less often (up to every second, or every `poll` if longer)."""
        deadline = time.monotonic() + max(0.0, timeout)
        longest = max(poll, 1.0)
        while True:
            with self._changes:
                heard = self._generation
            request = self.get(approval_id)
            if request.status is not ApprovalStatus.PENDING or time.monotonic() >= deadline:
                return request
            with self._changes:
                if self._generation == heard:  # else a change came while reading: read again
                    self._changes.wait(min(poll, max(0.0, deadline - time.monotonic())))
            poll = min(poll * 1.5, longest)

    def _changed(self, _approval_id: str | None = None) -> None:
        """Some request changed here or (notified) elsewhere: every `wait` reads its own again."""
        with self._changes:
            self._generation += 1
            self._changes.notify_all()

    # -- internals -----------------------------------------------------------------------------

    def _decide(
        self, approval_id: str, approver: str, comment: str, outcome: ApprovalStatus
    ) -> ApprovalRequest:
        request = self.get(approval_id)
        if request.status is not ApprovalStatus.PENDING:
            raise Conflict(f"approval {approval_id} is {request.status.value}, not pending")
        self._check_approver(request, approver, outcome)
        event = self._event(request, outcome.value, approver, comment)
        if not self._store.approvals.transition(
            approval_id,
            from_statuses=(ApprovalStatus.PENDING,),
            event=event,
            status=outcome,
            decided_by=approver,
            decided_at=event.at,
            comment=comment or None,
        ):
            now = self.get(approval_id).status.value
            raise Conflict(f"approval {approval_id} was {now} meanwhile; nothing changed")
        self._changed(approval_id)
        self._audit(request, event)
        return self.get(approval_id)

    def why_not(self, approval_id: str, approver: str) -> str | None:
        """Why `approver` may not approve the request (None: they may), asked before asking
        them (the MCP gateway asks the person at the client only when their answer counts)."""
        try:
            self._check_approver(self.get(approval_id), approver, ApprovalStatus.APPROVED)
        except Forbidden as exc:
            return str(exc)
        return None

    def _check_approver(
        self, request: ApprovalRequest, approver: str, outcome: ApprovalStatus
    ) -> None:
        """Only a person of the workspace holding every role the request asks for decides (each
        policy that asked named one, and one approval lifts them all); never an agent; and not
        the user the agent acts for, on effects the workspace keeps from self-approval."""
        if self._store.agent(request.workspace, approver) is not None or approver == request.agent:
            raise Forbidden(f"{approver} is an agent: agents can never decide approvals")
        user = next((u for u in self._store.users(request.workspace) if u.name == approver), None)
        if user is None:
            raise Forbidden(f"{approver} is not a user of workspace {request.workspace}")
        missing = sorted(set(request.approver_roles) - set(user.roles))
        if missing or not request.approver_roles:
            needed = " and ".join(request.approver_roles) or "an approver role"
            raise Forbidden(
                f"deciding this request takes the role {needed} (every policy that asked names "
                f"one); {approver} lacks {', '.join(missing) or 'it'}"
            )
        if outcome is ApprovalStatus.APPROVED and approver == request.user:
            workspace = self._store.workspace(request.workspace)
            settings = ApprovalSettings.from_settings(
                workspace.settings if workspace else {}, request.workspace
            )
            kept = sorted(set(request.effects) & set(settings.self_approval_forbidden))
            if kept:
                raise Forbidden(
                    f"{approver} is the user {request.agent} acts for and cannot approve its "
                    f"{', '.join(kept)} call (settings.approvals.self_approval_forbidden)"
                )

    def _expire_if_due(self, request: ApprovalRequest) -> ApprovalRequest:
        if request.status not in OPEN or self._clock() < request.expires_at:
            return request
        event = self._event(request, "expired", SYSTEM, "")
        if self._store.approvals.transition(
            request.id, from_statuses=OPEN, event=event, status=ApprovalStatus.EXPIRED
        ):
            self._audit(request, event)
        return self._store.approvals.get(request.id) or request

    def _event(
        self, request: ApprovalRequest, event: str, actor: str, detail: str
    ) -> ApprovalEvent:
        return ApprovalEvent(
            approval_id=request.id,
            workspace=request.workspace,
            event=event,
            actor=actor,
            at=self._clock(),
            detail=detail,
        )

    def _notify(self, request: ApprovalRequest, settings: ApprovalSettings) -> None:
        if not settings.webhooks:
            return
        body = json.dumps(notification(request), sort_keys=True).encode()
        for hook in settings.webhooks:
            secret, missing = _secret_of(hook, request.workspace)
            if missing:
                self._record(request.id, "notify_failed", f"{redacted(hook.url)}: {missing}")
                continue
            self._deliveries().send(hook.url, secret, body, request.id)

    def _deliveries(self) -> Notifier:
        with self._notifier_lock:
            if self._notifier is None:
                self._notifier = Notifier(self._record)
            return self._notifier

    def _record(self, approval_id: str, event: str, detail: str) -> None:
        request = self._store.approvals.get(approval_id)
        if request is not None:
            step = self._event(request, event, SYSTEM, detail)
            self._store.approvals.add_event(step)
            self._audit(request, step)

    def _audit(self, request: ApprovalRequest, event: ApprovalEvent) -> None:
        """The step into the chained audit log too, after the approvals table has it (raises if
        it could not be written: on the decision path that makes the decision a deny)."""
        self._events(
            f"approval.{event.event}",
            workspace=event.workspace,
            actor=event.actor,
            subject=event.approval_id,
            task=request.task_id,
            tool=request.tool,
            call_hash=request.call_hash,
            detail=event.detail,
        )


def _secret_of(hook: Webhook, workspace: str) -> tuple[bytes, str]:
    """The hook's secret, or why there is none. A variable not named as the workspace's
    webhook secrets are is never read, even if settings that were not validated name it (fail
    closed), and the answer says nothing of whether it exists: the workspace's writer chose
    both it and the URL."""
    if not is_webhook_secret(hook.secret_env, workspace):
        return (
            b"",
            f"the secret variable must be named {webhook_variable_prefix(workspace)}…; not read",
        )
    secret = os.environ.get(hook.secret_env)
    if not secret:
        return b"", f"the secret variable {hook.secret_env} is not set"
    return secret.encode(), ""


def notification(request: ApprovalRequest) -> dict[str, object]:
    """The webhook body: what an approver needs to decide, and how to answer."""
    return {
        "type": "approval.requested",
        "approval": {
            "id": request.id,
            "workspace": request.workspace,
            "task": request.task_id,
            "agent": request.agent,
            "user": request.user,
            "tool": request.tool,
            "effects": list(request.effects),
            "args": json.loads(request.args),
            "reasons": list(request.reasons),
            "policies": list(request.policies),
            "approver_roles": list(request.approver_roles),
            "expires_at": request.expires_at,
        },
        # The call as ASCII (non-ASCII as \\u escapes), so look-alike characters show.
        "call": f"{request.tool} {shown_args(request.args)}",
        "approve": f"tether approvals approve {request.id} --as <you>",
        "deny": f"tether approvals deny {request.id} --as <you>",
    }


def shown_args(args: str) -> str:
    """Canonical arguments for a person to read: ASCII only, so that a Cyrillic "а" or a
    right-to-left mark cannot pass for what it imitates."""
    return json.dumps(json.loads(args), ensure_ascii=True, sort_keys=True)
