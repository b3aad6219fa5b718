"""What the store keeps of open tasks' histories: one row per event, numbered from 1 per task.

The number is the claim: an event is appended as the task's next one, and if another process
appended that number first the insert fails, and its author catches up and decides again. So a
task whose calls land on several replicas sees every call in one order, as one process would.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tether.model import TaskStatus
from tether.store import tables as t
from tether.store.writes import Claims, HotWrites

# How long after a task closed or expired its events are kept: longer than any token of it
# lives and than a replica takes to hear of the end (its clock may lag too), so no replica
# can rebuild a task from an emptied log, or reuse an event's number, while it can still act.
PURGE_AFTER = 900.0


class TaskEvents:
    """`writes`: the store's hot-path connection (one event per decision, claimed in its
    record's transaction when it is a decision's: writes.py)."""

    def __init__(self, engine: sa.Engine, writes: HotWrites) -> None:
        self.engine = engine
        self._writes = writes

    def append(self, task_id: str, seq: int, body: bytes, now: float) -> bool:
        """Append event `seq` of the task; False if that number is taken (someone else's)."""
        return self._writes.claim(Claims(now, event=(task_id, seq, body))) is None

    def after(self, task_id: str, seq: int) -> list[tuple[int, bytes]]:
        """The task's events numbered above `seq`, in order."""
        query = (
            sa.select(t.task_events.c.seq, t.task_events.c.body)
            .where(t.task_events.c.task_id == task_id, t.task_events.c.seq > seq)
            .order_by(t.task_events.c.seq)
        )
        with self.engine.connect() as db:
            return [(int(row.seq), bytes(row.body)) for row in db.execute(query)]

    def purge(self, now: float) -> int:
        """Forget the events of tasks that can act no more (closed, or expired)."""
        before = now - PURGE_AFTER
        done = sa.select(t.tasks.c.id).where(
            sa.or_(
                sa.and_(t.tasks.c.status != TaskStatus.OPEN.value, t.tasks.c.ended_at <= before),
                t.tasks.c.expires_at <= before,
            )
        )
        with self.engine.begin() as db:
            result: Any = db.execute(
                t.task_events.delete().where(t.task_events.c.task_id.in_(done))
            )
        return int(result.rowcount)
