"""How records reach the store: together, or behind.

`GroupCommit` (the `commit` and `fsync` levels): every appender waits for its record's commit,
but appenders arriving together share one: whoever finds no commit running commits everything
waiting, the others wait for it (the leader/follower scheme databases use for their own logs).
One writer alone pays one commit per record; eight pay far fewer than eight.

`Background` (the `async` level): appenders hand the record over and go on; a thread commits
what is waiting at least every `interval` seconds. At most `max_pending` records wait, so the
records a crash can lose are bounded in count and in age; when the store is failing, new
records are refused (their decisions are denied) instead of piling up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tether.errors import TetherError, shown

log = logging.getLogger("tether.audit")

Item = TypeVar("Item")
Result = TypeVar("Result")


class LogUnavailable(TetherError):
    """The audit log could not take a record: the decision it belongs to must be a deny."""


@dataclass
class _Entry(Generic[Item, Result]):
    item: Item
    done: bool = False
    error: str | None = None
    result: Result | None = None


class GroupCommit(Generic[Item, Result]):
    """`commit` stores a batch and says, for each of its items, what became of it."""

    def __init__(self, commit: Callable[[list[Item]], list[Result]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._waiting: list[_Entry[Item, Result]] = []
        self._busy = False

    def submit(self, item: Item) -> Result | None:
        """Returns, once `item` is committed, what `commit` said of it; raises LogUnavailable
        if its commit failed."""
        entry: _Entry[Item, Result] = _Entry(item)
        with self._cond:
            self._waiting.append(entry)
            while not entry.done:
                self._wait_or_lead()
        if entry.error is not None:
            raise LogUnavailable(entry.error)
        return entry.result

    def submit_all(self, items: list[Item]) -> list[Result | LogUnavailable | None]:
        """`submit` for several items at once (an event loop's waiting records): each one's
        outcome, the error in place of a result for those whose commit failed. They wait in
        one step, so one batch takes them all."""
        entries: list[_Entry[Item, Result]] = [_Entry(item) for item in items]
        with self._cond:
            self._waiting.extend(entries)
            while entries and not entries[-1].done:
                self._wait_or_lead()
        return [e.result if e.error is None else LogUnavailable(e.error) for e in entries]

    def _wait_or_lead(self) -> None:
        """With the condition held: wait for the commit running, or, if none is, commit
        everything waiting (this thread leads)."""
        if self._busy:
            self._cond.wait()
            return
        self._busy = True
        batch, self._waiting = self._waiting, []
        self._cond.release()
        error: str | None = "interrupted"  # unless the commit returns: then there is no error
        results: list[Result | None] = [None] * len(batch)
        try:
            said = self._commit([e.item for e in batch])
            if len(said) != len(batch):
                raise RuntimeError(f"{len(said)} results for {len(batch)} records")
            results[:], error = said, None
        except Exception as exc:  # every record of the batch fails with it
            log.error("a group commit of %d records failed", len(batch), exc_info=exc)
            error = shown(exc)
        finally:
            self._cond.acquire()
            for done, result in zip(batch, results, strict=True):
                done.done, done.error, done.result = True, error, result
            self._busy = False
            self._cond.notify_all()


class Background(Generic[Item]):
    def __init__(
        self,
        commit: Callable[[list[Item]], object],
        *,
        max_pending: int,
        interval: float,
    ) -> None:
        self._commit = commit
        self._max = max_pending
        self._interval = interval
        self._cond = threading.Condition()
        self._pending: list[Item] = []
        self._failure: str | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tether-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Queues `item` (waiting while `max_pending` are queued); raises LogUnavailable while
        the store is refusing commits."""
        with self._cond:
            while len(self._pending) >= self._max and self._failure is None:
                self._cond.wait()
            if self._failure is not None:
                raise LogUnavailable(f"the audit log is not being written: {self._failure}")
            if self._closing:
                raise LogUnavailable("the audit log is closed")
            self._pending.append(item)
            if len(self._pending) >= self._max:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and len(self._pending) < self._max:
                    self._cond.wait(self._interval)
                batch = list(self._pending)
                if not batch and self._closing:
                    return
            if not batch:
                continue
            try:
                self._commit(batch)
            except Exception as exc:
                log.error("could not write %d audit records; retrying: %s", len(batch), exc)
                with self._cond:
                    self._failure = shown(exc)
                    self._cond.notify_all()
                    if self._closing:
                        log.error("closing: %d audit records were not written", len(batch))
                        return
                time.sleep(self._interval)
                continue
            with self._cond:
                del self._pending[: len(batch)]
                self._failure = None
                self._cond.notify_all()

    def close(self) -> None:
        """Commits what is queued, then stops."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
