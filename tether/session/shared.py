"""The open tasks a decision point serves: in this process only, or shared through the store.

An embedded Guard on SQLite is the only process that decides its tasks, so their state lives in
its memory. Several workers or replicas (`tether serve`, PostgreSQL) may each get a task's
calls, so there every event of a task (tether/session/task.py) is appended to the store before
it counts, numbered: a process that finds its number taken was deciding on a stale state, and
catches up and decides again. Each process keeps the states it has seen and reads only the
events it has not applied, so a task served by one replica costs one insert per event.

Events hold the task's arguments and the text of its outputs, so they are sealed (AES-256-GCM,
under a key derived from the master key, bound to their task and number) and kept only while
their task is open.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tether.model import Task, TaskStatus
from tether.session.task import Bequeathed, Decided, Event, TaskState
from tether.store import Store

MAX_CACHED = 10_000  # shared states kept in memory; the rest are read back when used
PURGE_EVERY = 1000  # events added between removals of those of tasks that ended
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Event).decode


def sealing_key(master_key: bytes) -> bytes:
    """The key task events are sealed with: the master key's, for this one use."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"tether task events v1").derive(master_key)


class TaskStates:
    """`sealing`: the key to seal events with; given, the states are shared through `store`."""

    def __init__(self, store: Store, *, sealing: bytes | None, clock: Callable[[], float]) -> None:
        self._store = store
        self._aead = AESGCM(sealing) if sealing is not None else None
        self._clock = clock
        self._states: dict[str, TaskState] = {}
        self._lock = threading.Lock()
        self._added = 0  # events added here, for purging those of tasks that ended

    @property
    def shared(self) -> bool:
        return self._aead is not None

    def open(self, task: Task) -> TaskState:
        """A task that has just started (its row is in the store already)."""
        with self._lock:
            return self._keep(TaskState(task))

    def get(self, task_id: str) -> TaskState | None:
        """The open task's state, read from the store if it is shared and not known here."""
        state = self._states.get(task_id)
        if state is not None or self._aead is None:
            return state
        task = self._store.task(task_id)
        if task is None or task.status is not TaskStatus.OPEN:
            return None
        state = TaskState(task)
        with state.lock:
            self.catch_up(state)
        with self._lock:
            return self._states.get(task_id) or self._keep(state)

    def _keep(self, state: TaskState) -> TaskState:
        if self._aead is not None and len(self._states) >= MAX_CACHED:
            # Shared states can be read back: drop the ones that stopped first, then any.
            now = self._clock()
            stale = [s.id for s in self._states.values() if s.task.expires_at <= now]
            for task_id in stale or list(self._states)[: MAX_CACHED // 10]:
                del self._states[task_id]
        self._states[state.id] = state
        return state

    def add(self, state: TaskState, event: Event) -> bool:
        """Make `event` the task's next (the caller holds `state.lock`). False, changing
        nothing, if another process added one first: catch up and decide again."""
        claim = self.claim(state, event)
        if claim is not None and not self._store.task_events.append(*claim, self._clock()):
            return False
        self.applied(state, event)
        return True

    def claim(self, state: TaskState, event: Event) -> tuple[str, int, bytes] | None:
        """What must be written for `event` to be the task's next, where tasks are shared:
        its task, number and sealed body (store/writes.py `Claims`). Once written, `applied`."""
        if self._aead is None:
            return None
        seq = state.seq + 1
        return state.id, seq, self._seal(state.id, seq, event)

    def applied(
        self, state: TaskState, event: Event, claim: tuple[str, int, bytes] | None = None
    ) -> None:
        """`event` is the task's next: it counts from now on. `claim`: what was written for it,
        if anything; where its number is applied already, it was read back in the meantime.

        That happens on an event loop: a decision that waits there for its commit holds its
        task's lock, which is re-entrant on the loop's thread, so a report of another call of
        the task may run after the commit and before the decision goes on. The report's own
        event, finding the number taken, catches up, applying the decision's event."""
        if claim is not None and state.seq >= claim[1]:
            return
        state.apply(event)
        if self._aead is not None:
            self._added += 1
            if self._added % PURGE_EVERY == 0:
                self._store.task_events.purge(self._clock())

    def report(self, state: TaskState, event: Event, tries: int = 10) -> set[str]:
        """Add an event that does not depend on the state (an output read): catch up until it
        goes in. Returns the labels it added."""
        with state.lock:
            for _ in range(tries):
                before = set(state.labels)
                if self.add(state, event):
                    return state.labels - before
                self.catch_up(state)
        raise RuntimeError(f"task {state.id} kept changing elsewhere; the report was not kept")

    def bequeath(self, state: TaskState, labels: set[str]) -> None:
        """Give the labels of an output `state`'s task read to every task it was delegated
        from (that is open and lacks one of them), as an event of each (`Bequeathed`).

        What a sub-agent read it can hand back to the agent that delegated to it: a planner
        whose coder read a key holds it as surely as the coder does, and the rules keyed on
        `secret` and `untrusted` must hold for the planner's next call too. Each ancestor's
        next decision sees them, here or in any process sharing the store. (Its sub-tasks
        see them through `inherited`.)"""
        parent = state.task.parent
        while labels and parent is not None:
            ancestor = self.get(parent)
            if ancestor is None:  # closed: it, and the tasks above it, act no more
                return
            if labels - ancestor.labels:
                self.report(ancestor, Bequeathed(state.id, frozenset(labels)))
            parent = ancestor.task.parent

    def inherited(self, state: TaskState) -> frozenset[str]:
        """The labels the tasks `state`'s was delegated from hold and it does not yet.

        What a parent task read, its sub-agents act on: a sub-task that started clean would
        let an agent shed the `secret` and `untrusted` labels (and the rules keyed on them) by
        handing the next step to a sub-agent. So each decision in a sub-task sees its parents'
        labels as they are then, and its event makes them the sub-task's own. Raises
        LookupError if a parent is not open (its sub-tasks cannot act then either)."""
        labels: set[str] = set()
        parent = state.task.parent
        while parent is not None:
            ancestor = self.get(parent)
            if ancestor is None:
                raise LookupError(f"task {parent}, which this task was delegated from, is not open")
            labels |= ancestor.labels
            labels |= self._labels_added_elsewhere(ancestor)
            parent = ancestor.task.parent
        return frozenset(labels - state.labels)

    def _labels_added_elsewhere(self, state: TaskState) -> set[str]:
        """Where tasks are shared, the labels of the events other processes added to `state`'s
        task since this one applied its last: read only, since the state is another call's to
        change (its own decision may be under way)."""
        if self._aead is None:
            return set()
        labels: set[str] = set()
        for seq, sealed in self._store.task_events.after(state.id, state.seq):
            event = self._unseal(state.id, seq, sealed)
            labels |= event.inherited if isinstance(event, Decided) else event.labels
        return labels

    def catch_up(self, state: TaskState) -> None:
        """Apply the events other processes added (the caller holds `state.lock`)."""
        if self._aead is None:
            return
        for seq, sealed in self._store.task_events.after(state.id, state.seq):
            if seq != state.seq + 1:
                raise RuntimeError(f"task {state.id} lacks event {state.seq + 1}")
            state.apply(self._unseal(state.id, seq, sealed))

    def drop(self, task_id: str) -> TaskState | None:
        with self._lock:
            return self._states.pop(task_id, None)

    def expired(self, now: float) -> list[TaskState]:
        return [s for s in list(self._states.values()) if s.task.expires_at <= now]

    def known(self) -> list[TaskState]:
        return list(self._states.values())

    def _seal(self, task_id: str, seq: int, event: Event) -> bytes:
        assert self._aead is not None
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, _encode(event), f"{task_id}#{seq}".encode())

    def _unseal(self, task_id: str, seq: int, sealed: bytes) -> Event:
        assert self._aead is not None
        plain = self._aead.decrypt(sealed[:12], sealed[12:], f"{task_id}#{seq}".encode())
        return _decode(plain)
