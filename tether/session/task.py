"""The live state of one task, as the decision pipeline reads and updates it.

Every update is O(1) in the task's length (counters, sets, a bounded history), never a rescan of
history, so a task's thousandth call costs what its first did. Labels only ever grow.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tether.model import Effect, OutputTrust, Task, TaskStatus, Tool
from tether.session.content import text_of
from tether.session.detectors import detect
from tether.session.provenance import USER, Provenance

_decode = msgspec.json.Decoder().decode

HISTORY = 1000  # decisions kept per task for inspection; counters cover the rest
MAX_PENDING = 4_000_000  # bytes of arguments queued before they are indexed
UNTRUSTED = "untrusted"  # the label of a task that has read third-party content
UNSCANNED = "unscanned"  # the label of a task whose outputs were too large to read whole


@dataclass(frozen=True)
class Step:
    decision_id: str
    tool: str
    effect: Effect
    at: float


@dataclass
class TaskState:
    task: Task
    status: TaskStatus = TaskStatus.OPEN
    calls: int = 0  # decisions made in this task so far
    allowed: int = 0
    denied: int = 0
    outside_workspace: int = 0  # calls aimed at another workspace
    executed: int = 0  # allowed calls whose result was reported
    calls_by_tool: Counter[str] = field(default_factory=Counter)  # allowed calls
    calls_by_effect: Counter[str] = field(default_factory=Counter)  # allowed calls
    labels: set[str] = field(default_factory=set)
    history: deque[Step] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def __post_init__(self) -> None:
        self.granted = frozenset(self.task.tools)
        self._granted_list = sorted(self.granted)
        self.provenance = Provenance(self.task.request)
        self._said: list[bytes] = []  # arguments (as JSON) not yet indexed: done when it matters
        self._said_bytes = 0
        # Held by the decision pipeline from the gates to the count, so that decisions in one
        # task happen one at a time; re-entrant, since the counting below takes it too.
        self.lock = threading.RLock()

    @property
    def id(self) -> str:
        return self.task.id

    def context(self, tool: str, effects: list[str]) -> dict[str, Any]:
        """`context.task` as policies see it, for a call of `tool`; `effects` are every effect
        of the workspace's catalogue (each gets a count, zero if unused)."""
        return {
            "id": self.task.id,
            "user": self.task.user,
            "request": self.task.request,
            "tools": self._granted_list,
            "calls": self.calls,
            "allowed": self.allowed,
            "denied": self.denied,
            "tool_calls": self.calls_by_tool[tool],
            "effect_calls": {effect: self.calls_by_effect[effect] for effect in effects},
            "labels": sorted(self.labels),
        }

    def sources(self, args: dict[str, Any], sinks: tuple[str, ...]) -> dict[str, str]:
        """The provenance of each sink argument present in `args`."""
        return {sink: self.provenance.of(args[sink]) for sink in sinks if sink in args}

    def note_arguments(self, args_json: bytes) -> None:
        """The agent put these values (JSON) in a call: a trusted output that merely repeats
        them will not vouch for them. Only queued here, so that the decision pays nothing for
        it; read when a trusted output is reported, the one time it matters."""
        self._said.append(args_json)
        self._said_bytes += len(args_json)
        if self._said_bytes > MAX_PENDING:
            self._index_said()

    def _index_said(self) -> None:
        said, self._said, self._said_bytes = self._said, [], 0
        for args_json in said:
            self.provenance.said(text_of(_decode(args_json)).pieces)

    def note_decision(
        self, decision_id: str, tool: str, effects: tuple[str, ...], effect: Effect, at: float
    ) -> None:
        """Count a recorded decision (called once it is committed)."""
        with self.lock:
            self.calls += 1
            self.history.append(Step(decision_id, tool, effect, at))
            if effect is Effect.ALLOW:
                self.allowed += 1
                self.calls_by_tool[tool] += 1
                self.calls_by_effect.update(effects)
            elif effect is Effect.DENY:
                self.denied += 1

    def note_outside_workspace(self) -> None:
        with self.lock:
            self.outside_workspace += 1

    def note_result(self, tool: Tool | None, output: Any) -> set[str]:
        """An allowed call of `tool` returned `output`: label the task and remember the values
        it saw. Never raises; returns the labels this output added. A tool the catalogue no
        longer has (None) is taken at its worst: its output is untrusted.

        The catalogue's labels and the trust of the output are applied first: whatever goes
        wrong reading the output (it is someone else's data) cannot take them away, and is
        itself recorded, as the `unscanned` label."""
        trusted = tool is not None and tool.output is OutputTrust.TRUSTED
        found = set(tool.labels) if tool is not None else set()
        if not trusted:
            found.add(UNTRUSTED)
        with self.lock:
            self.executed += 1
            before = set(self.labels)
            self.labels |= found
            try:
                text = text_of(output)
                found |= set(detect(text.pieces).values())
                if text.truncated:
                    found.add(UNSCANNED)
                if trusted:
                    self._index_said()
                self.provenance.saw(text.pieces, trusted=trusted)
            except Exception:  # a value that will not read: what it hid is unknown
                found.add(UNSCANNED)
            self.labels |= found
            return self.labels - before


__all__ = ["UNSCANNED", "UNTRUSTED", "USER", "Step", "TaskState"]
