"""The live state of one task, as the decision pipeline reads and updates it.

Every update is O(1) in the task's length (counters, sets, a bounded history), never a rescan of
history, so a task's thousandth call costs what its first did. Labels only ever grow.

The state changes by three kinds of event only, `Decided` (a call was decided), `Observed` (an
allowed call's output was read) and `Bequeathed` (a task delegated from it read something), each
a plain record: so the same state can be rebuilt anywhere from its events in order
(tether/session/shared.py keeps them in the store for replicas).
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
from tether.session.provenance import USER, Provenance, first_indexed

_decode = msgspec.json.Decoder().decode

HISTORY = 1000  # decisions kept per task for inspection; counters cover the rest
MAX_PENDING = 4_000_000  # bytes of arguments queued before they are indexed
UNTRUSTED = "untrusted"  # the label of a task that has read third-party content
UNSCANNED = "unscanned"  # the label of a task whose outputs were too large to read whole


class Decided(msgspec.Struct, frozen=True, tag=True):
    """A call was decided in the task. `args`: its arguments (JSON) once the decision read
    them, which the agent has then said; `outside`: it was aimed at another workspace;
    `inherited`: labels its parent tasks held then that it did not (the decision saw them)."""

    decision_id: str
    tool: str
    effects: tuple[str, ...]
    effect: Effect
    at: float
    args: bytes | None = None
    outside: bool = False
    inherited: frozenset[str] = frozenset()  # labels of the tasks it was delegated from


class Observed(msgspec.Struct, frozen=True, tag=True):
    """An allowed call's output was read: the labels it gives the task and the text whose
    values the task remembers (the part provenance indexes), so replaying it reads nothing."""

    trusted: bool
    labels: frozenset[str]
    pieces: tuple[str, ...]


class Bequeathed(msgspec.Struct, frozen=True, tag=True):
    """Labels an output gave a task delegated from this one, directly or further down (`task`,
    the one that read it): what a sub-agent read, it can hand back to the agent that delegated
    to it, which then acts on it. Not a call of this task: only its labels change."""

    task: str
    labels: frozenset[str]


Event = Decided | Observed | Bequeathed


def observe(tool: Tool | None, output: Any, *, complete: bool = True) -> Observed:
    """Read an output of `tool` (`complete`: all of it, else what it left out is unknown: the
    `unscanned` label). Never raises. A tool the catalogue no longer has (None) is taken at
    its worst: its output is untrusted.

    The catalogue's labels and the trust of the output come first: whatever goes wrong reading
    the output (it is someone else's data) cannot take them away, and is itself recorded, as
    the `unscanned` label."""
    trusted = tool is not None and tool.output is OutputTrust.TRUSTED
    found = set(tool.labels) if tool is not None else set()
    if not trusted:
        found.add(UNTRUSTED)
    if not complete:
        found.add(UNSCANNED)
    pieces: tuple[str, ...] = ()
    try:
        text = text_of(output)
        found |= set(detect(text.pieces).values())
        if text.truncated:
            found.add(UNSCANNED)
        pieces = tuple(first_indexed(text.pieces))
    except Exception:  # a value that will not read: what it hid is unknown
        found.add(UNSCANNED)
    return Observed(trusted, frozenset(found), pieces)


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
    seq: int = 0  # events applied (the number of the last one)

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

    def context(
        self, tool: str, effects: list[str], inherited: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """`context.task` as policies see it, for a call of `tool`; `effects` are every effect
        of the workspace's catalogue (each gets a count, zero if unused); `inherited`: labels
        its parent tasks hold that it does not yet."""
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
            "labels": sorted(self.labels | inherited if inherited else self.labels),
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

    def apply(self, event: Event) -> set[str]:
        """Apply the task's next event; returns the labels it added."""
        with self.lock:
            self.seq += 1
            if isinstance(event, Decided):
                self._decided(event)
                return set()
            if isinstance(event, Bequeathed):
                added = event.labels - self.labels
                self.labels |= added
                return set(added)
            return self._observed(event)

    def _decided(self, event: Decided) -> None:
        self.labels |= event.inherited
        if event.outside:
            self.outside_workspace += 1
        if event.args is not None:
            self.note_arguments(event.args)
        self.calls += 1
        self.history.append(Step(event.decision_id, event.tool, event.effect, event.at))
        if event.effect is Effect.ALLOW:
            self.allowed += 1
            self.calls_by_tool[event.tool] += 1
            self.calls_by_effect.update(event.effects)
        elif event.effect is Effect.DENY:
            self.denied += 1

    def _observed(self, event: Observed) -> set[str]:
        self.executed += 1
        before = set(self.labels)
        self.labels |= event.labels
        try:
            if event.trusted:
                self._index_said()
            self.provenance.saw(event.pieces, trusted=event.trusted)
        except Exception:  # never expected; what was not indexed is unknown, and says so
            self.labels.add(UNSCANNED)
        return self.labels - before

    def note_result(self, tool: Tool | None, output: Any) -> set[str]:
        """An allowed call of `tool` returned `output` (see `observe`); never raises."""
        return self.apply(observe(tool, output))


__all__ = [
    "UNSCANNED",
    "UNTRUSTED",
    "USER",
    "Bequeathed",
    "Decided",
    "Event",
    "Observed",
    "Step",
    "TaskState",
    "observe",
]
