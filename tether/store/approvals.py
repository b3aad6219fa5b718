"""What the approval workflow keeps: requests and their events.

Every change of a request's status is a compare-and-set (`UPDATE ... WHERE status IN (...)`) in
the same transaction as its event, so of two people deciding one request at once (or a decision
racing its expiry, or two calls racing for one grant) exactly one wins, and the trail says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa

from tether.model import ApprovalEvent, ApprovalRequest, ApprovalStatus
from tether.store import tables as t
from tether.store.notify import APPROVAL, notify
from tether.store.rows import row_to


def _event_values(event: ApprovalEvent) -> dict[str, Any]:
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


class ApprovalRecords:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, request: ApprovalRequest, event: ApprovalEvent) -> None:
        with self.engine.begin() as db:
            db.execute(t.approvals.insert().values(**msgspec.to_builtins(request)))
            db.execute(t.approval_events.insert().values(**_event_values(event)))

    def get(self, approval_id: str) -> ApprovalRequest | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(t.approvals).where(t.approvals.c.id == approval_id)).first()
        return row_to(ApprovalRequest, row) if row else None

    def for_call(self, task_id: str, call_hash: str) -> ApprovalRequest | None:
        """The newest request for this exact call in this task."""
        query = (
            sa.select(t.approvals)
            .where(t.approvals.c.task_id == task_id, t.approvals.c.call_hash == call_hash)
            .order_by(t.approvals.c.created_at.desc(), t.approvals.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(ApprovalRequest, row) if row else None

    def find(
        self,
        *,
        workspace: str | None = None,
        statuses: Iterable[ApprovalStatus] = (),
        agent: str | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRequest]:
        """Newest first."""
        query = sa.select(t.approvals)
        if workspace is not None:
            query = query.where(t.approvals.c.workspace == workspace)
        wanted = [s.value for s in statuses]
        if wanted:
            query = query.where(t.approvals.c.status.in_(wanted))
        if agent is not None:
            query = query.where(t.approvals.c.agent == agent)
        query = query.order_by(t.approvals.c.created_at.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as db:
            return [row_to(ApprovalRequest, r) for r in db.execute(query)]

    def open_of_tasks(self, task_ids: list[str]) -> list[ApprovalRequest]:
        """The pending and approved (unspent) requests of these tasks."""
        if not task_ids:
            return []
        query = sa.select(t.approvals).where(
            t.approvals.c.task_id.in_(task_ids),
            t.approvals.c.status.in_([ApprovalStatus.PENDING.value, ApprovalStatus.APPROVED.value]),
        )
        with self.engine.connect() as db:
            return [row_to(ApprovalRequest, r) for r in db.execute(query)]

    def transition(
        self,
        approval_id: str,
        *,
        from_statuses: Iterable[ApprovalStatus],
        event: ApprovalEvent,
        **values: Any,
    ) -> bool:
        """Set `values` (the new `status` among them) if the request is in one of
        `from_statuses`, and record `event`; False if another change got there first."""
        allowed = [s.value for s in from_statuses]
        changes = {k: v.value if isinstance(v, ApprovalStatus) else v for k, v in values.items()}
        with self.engine.begin() as db:
            updated = db.execute(
                t.approvals.update()
                .where(t.approvals.c.id == approval_id, t.approvals.c.status.in_(allowed))
                .values(**changes)
            ).rowcount
            if updated == 1:
                db.execute(t.approval_events.insert().values(**_event_values(event)))
                notify(db, APPROVAL, approval_id)  # sent on commit: wakes whoever waits on it
        return updated == 1

    def add_event(self, event: ApprovalEvent) -> None:
        with self.engine.begin() as db:
            db.execute(t.approval_events.insert().values(**_event_values(event)))

    def events(self, approval_id: str) -> list[ApprovalEvent]:
        query = (
            sa.select(*[c for c in t.approval_events.columns if c.name != "seq"])
            .where(t.approval_events.c.approval_id == approval_id)
            .order_by(t.approval_events.c.seq)
        )
        with self.engine.connect() as db:
            return [row_to(ApprovalEvent, r) for r in db.execute(query)]
