"""Risk signals for a call, and the score and level they add up to (`context.risk`).

Signals are facts a security team would want to weigh, each with a weight; the level is what
policies usually test (`context.risk.level == "high"`), and the signals are named in reasons.

| signal | fires when | weight |
|---|---|---|
| `first_use` | this agent has never been allowed this tool before | 15 |
| `burst` | at least 60 calls in the last minute, and 3x the agent's rate before it | 30 |
| `denials` | calls were denied earlier in this task | 10 each, at most 30 |
| `outside_workspace` | the task tried to act in another workspace | 40 |
| `holds_secret` | the task holds the `secret` label | 20 |
| `holds_pii` | the task holds the `pii` label | 10 |
| `read_untrusted` | the task has read untrusted content | 10 |
| `off_hours` | outside the workspace's configured working hours | 20 |

Level: `high` from 60, `medium` from 30, else `low`. The usual rate and the last minute are
counted per process (each replica sees its own traffic); first use is kept in the store.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether.errors import InvalidInput
from tether.session.detectors import PII, SECRET
from tether.session.task import UNTRUSTED, TaskState

WEIGHTS = {
    "first_use": 15,
    "burst": 30,
    "denials": 10,
    "outside_workspace": 40,
    "holds_secret": 20,
    "holds_pii": 10,
    "read_untrusted": 10,
    "off_hours": 20,
}
MAX_DENIAL_WEIGHT = 30
HIGH, MEDIUM = 60, 30
BURST_WINDOW = 60.0
BURST_FLOOR = 60
BURST_FACTOR = 3


@dataclass(frozen=True)
class Risk:
    score: int
    level: str
    signals: tuple[str, ...]

    def context(self) -> dict[str, Any]:
        return {"score": self.score, "level": self.level, "signals": list(self.signals)}


@dataclass(frozen=True)
class WorkingHours:
    """When agents of a workspace are expected to work: [start, end) hours on `weekdays`."""

    start: int
    end: int
    weekdays: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> WorkingHours | None:
        hours = settings.get("working_hours")
        if hours is None:
            return None
        try:
            start, end = int(hours["start"]), int(hours["end"])
            weekdays = frozenset(int(d) for d in hours.get("weekdays", range(5)))
            zone = ZoneInfo(str(hours.get("timezone", "UTC")))
        except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError) as exc:
            raise InvalidInput(
                "working_hours needs start and end hours (0-24), optional weekdays (0=Monday) "
                f"and an IANA timezone: {exc}"
            ) from exc
        if not (0 <= start < end <= 24 and weekdays <= set(range(7))):
            raise InvalidInput("working_hours: need 0 <= start < end <= 24 and weekdays in 0..6")
        return cls(start, end, weekdays, zone)

    def contains(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, UTC).astimezone(self.zone)
        return local.weekday() in self.weekdays and self.start <= local.hour < self.end


@dataclass
class AgentActivity:
    """What one agent has done, as far as risk needs to know."""

    tools_used: set[str]
    first_seen: float
    total: int = 0
    recent: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, tool: str, allowed: bool, now: float) -> None:
        """Count a call (the pipeline has recorded an allowed first use with its decision)."""
        with self.lock:
            self.total += 1
            self.recent.append(now)
            while self.recent and self.recent[0] < now - BURST_WINDOW:
                self.recent.popleft()
            if allowed:
                self.tools_used.add(tool)

    def bursting(self, now: float) -> bool:
        """More calls in the last window than the floor, and than 3x the agent's rate before
        it (an agent with less than a minute of history is held to the floor alone)."""
        with self.lock:
            while self.recent and self.recent[0] < now - BURST_WINDOW:
                self.recent.popleft()
            before = (now - BURST_WINDOW - self.first_seen) / 60.0
            usual = (self.total - len(self.recent)) / before if before >= 1.0 else 0.0
            return len(self.recent) >= max(BURST_FLOOR, BURST_FACTOR * usual)


class Activity:
    """Every agent's activity in this process; first uses are loaded from the store once."""

    def __init__(self, load_tools_used: Callable[[str, str], set[str]]) -> None:
        self._load = load_tools_used
        self._agents: dict[tuple[str, str], AgentActivity] = {}
        self._lock = threading.Lock()

    def of(self, workspace: str, agent: str, now: float) -> AgentActivity:
        key = (workspace, agent)
        activity = self._agents.get(key)
        if activity is None:
            with self._lock:
                activity = self._agents.get(key)
                if activity is None:
                    activity = AgentActivity(self._load(workspace, agent), first_seen=now)
                    self._agents[key] = activity
        return activity


def assess(
    *,
    task: TaskState,
    activity: AgentActivity,
    tool: str,
    now: float,
    hours: WorkingHours | None,
) -> Risk:
    signals: list[str] = []
    score = 0

    def fire(signal: str, weight: int | None = None) -> None:
        nonlocal score
        signals.append(signal)
        score += WEIGHTS[signal] if weight is None else weight

    if tool not in activity.tools_used:
        fire("first_use")
    if activity.bursting(now):
        fire("burst")
    if task.denied:
        fire("denials", min(MAX_DENIAL_WEIGHT, WEIGHTS["denials"] * task.denied))
    if task.outside_workspace:
        fire("outside_workspace")
    if SECRET in task.labels:
        fire("holds_secret")
    if PII in task.labels:
        fire("holds_pii")
    if UNTRUSTED in task.labels:
        fire("read_untrusted")
    if hours is not None and not hours.contains(now):
        fire("off_hours")
    level = "high" if score >= HIGH else "medium" if score >= MEDIUM else "low"
    return Risk(score, level, tuple(signals))
