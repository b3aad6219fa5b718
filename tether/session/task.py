"""The live state of one task, as the decision pipeline reads and updates it.

Updates are O(1) per call (counters, never a rescan of history), so a task's thousandth call
costs what its first did.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tether.model import Task, TaskStatus


@dataclass
class TaskState:
    task: Task
    status: TaskStatus = TaskStatus.OPEN
    calls: int = 0  # decisions made in this task so far
    calls_by_tool: Counter[str] = field(default_factory=Counter)
    executed: int = 0  # allowed calls whose result was reported

    def __post_init__(self) -> None:
        self.granted = frozenset(self.task.tools)
        self._granted_list = sorted(self.granted)
        # Held by the decision pipeline from the gates to the count, so that decisions in one
        # task happen one at a time; re-entrant, since the counting below takes it too.
        self.lock = threading.RLock()

    @property
    def id(self) -> str:
        return self.task.id

    def context(self) -> dict[str, Any]:
        """`context.task` as policies see it (shape: catalogue.CONTEXT_FIELDS["task"])."""
        return {
            "id": self.task.id,
            "user": self.task.user,
            "request": self.task.request,
            "tools": self._granted_list,
            "calls": self.calls,
        }

    def note_decision(self, tool: str) -> None:
        """Count a recorded decision (called once it is committed)."""
        with self.lock:
            self.calls += 1
            self.calls_by_tool[tool] += 1

    def note_result(self, tool: str, output: Any) -> None:
        """A call this task was allowed to make has run; `output` is what it returned.

        The chained-actions issue feeds labels and provenance from here.
        """
        with self.lock:
            self.executed += 1
