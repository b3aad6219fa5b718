"""The audit log as the rest of Tether writes it: decisions (from the pipeline) and events
(approvals, credentials, keys, grants), each appended to this writer's hash chain of its log, at
the durability level chosen for the store, with a signed checkpoint now and then.

The level (docs/audit.md): `commit` (default) and `fsync` return once the record is committed
(and, for `fsync`, on disk), so an answer never runs ahead of its record; `async` returns at
once and commits within `ASYNC_WINDOW` seconds or `ASYNC_PENDING` records, whichever is first.
Events are always written at `commit` or `fsync`: they are few, and each is a change someone
made on purpose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple

from tether.audit.chain import Chain, Head
from tether.audit.checkpoints import Checkpointer, OwnChains
from tether.audit.writers import Background, GroupCommit, LogUnavailable
from tether.credentials.signing_keys import Keyring
from tether.errors import InvalidInput, shown
from tether.model import AuditEvent, DecisionRecord, Durability, new_id
from tether.store import Store
from tether.store.writes import Claims, Refusal

log = logging.getLogger("tether.audit")

ASYNC_WINDOW = 0.1  # seconds a record may wait at `async`
ASYNC_PENDING = 1000  # records that may wait at `async`
DURABILITY_ENV = "TETHER_AUDIT_DURABILITY"


def durability_from_env(default: Durability = Durability.COMMIT) -> Durability:
    value = os.environ.get(DURABILITY_ENV, default.value)
    try:
        return Durability(value)
    except ValueError:
        levels = ", ".join(d.value for d in Durability)
        raise InvalidInput(f"{DURABILITY_ENV}={value!r}: use one of {levels}") from None


class _Pending(NamedTuple):
    record: DecisionRecord
    first_use: bool
    claims: Claims | None


class _Advancing:
    """Moves a chain's head past the records linked in its block (put in the list it gives)
    once they are stored. When storing raised, they may be stored all the same (interrupted
    after the commit, say): then the head moves too, or the next batch would take the same
    places and fork the chain. (A class, not a generator: it runs for every decision.)"""

    def __init__(self, store: Store, chain: Chain, log: str) -> None:
        self._store, self._chain, self._log = store, chain, log
        self.linked: list[Any] = []

    def __enter__(self) -> list[Any]:
        return self.linked

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        linked = self.linked
        if kind is not None:
            with suppress(Exception):
                if linked and self._store.audit.stored(self._log, linked[-1].id):
                    self._chain.advance(linked)
            return
        self._chain.advance(linked)


def _event_of(pending: _Pending) -> tuple[str, int]:
    event = pending.claims.event if pending.claims is not None else None
    return (event[0], event[1]) if event is not None else ("", 0)


class AuditLog:
    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        clock: Callable[[], float] = time.time,
        durability: Durability = Durability.COMMIT,
    ) -> None:
        self._store = store
        self._clock = clock
        self.durability = durability
        self.chain = Chain()  # the decisions'
        self.events_chain = Chain()
        self._checkpoints = Checkpointer(store, keyring, clock, OwnChains(self.heads))
        self._decisions: GroupCommit[_Pending, Refusal | None] | Background[_Pending]
        if durability is Durability.ASYNC:
            self._decisions = Background(
                self._commit_decisions, max_pending=ASYNC_PENDING, interval=ASYNC_WINDOW
            )
        else:
            self._decisions = GroupCommit(self._commit_decisions)
        self._events = GroupCommit(self._commit_events)
        self._on_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[_Pending, asyncio.Future[Refusal | None]]]
        ] = {}
        self._appending = False  # set by the first commit: this process writes the log

    def append(
        self, record: DecisionRecord, *, first_use: bool = False, claims: Claims | None = None
    ) -> Refusal | None:
        """Link and store one decision at this log's durability level (raises LogUnavailable
        if it could not be stored: its decision must then be a deny). `first_use`: the agent's
        first allowed call of the tool, remembered with it.

        `claims` (store/writes.py) are made in the record's transaction: if one is lost, the
        record is not stored and the refusal is returned (the decision must be made again, or
        refused). At `async` they are made before the record is queued, since the answer
        must not run ahead of them."""
        if claims and isinstance(self._decisions, Background):
            refused = self._store.writes.claim(claims)
            if refused is not None:
                return refused
            claims = None
        return self._decisions.submit(_Pending(record, first_use, claims))

    async def append_async(
        self, record: DecisionRecord, *, first_use: bool = False, claims: Claims | None = None
    ) -> Refusal | None:
        """`append` for an event loop: the record waits (without holding up the loop) with
        the others appended before the loop next comes round, and all of them are committed
        in one transaction, as threads' records are (group commit)."""
        if isinstance(self._decisions, Background):  # `async`: nothing to wait for
            return self.append(record, first_use=first_use, claims=claims)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Refusal | None] = loop.create_future()
        waiting = self._on_loop.setdefault(loop, [])  # each loop's own: only it touches them
        waiting.append((_Pending(record, first_use, claims), future))
        if len(waiting) == 1:  # after the calls the loop is running now
            loop.call_soon(self._commit_on_loop, loop)
        return await future

    def _commit_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._on_loop.pop(loop, [])
        try:
            assert isinstance(self._decisions, GroupCommit)
            outcomes = self._decisions.submit_all([pending for pending, _ in waiting])
        except Exception as exc:  # no answer may wait for ever
            log.error("committing %d decision records failed", len(waiting), exc_info=exc)
            outcomes = [LogUnavailable(shown(exc))] * len(waiting)
        for (_, future), outcome in zip(waiting, outcomes, strict=True):
            if future.done():  # its caller went away
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def event(
        self,
        kind: str,
        *,
        workspace: str | None,
        actor: str | None,
        subject: str | None,
        tenant: str | None = None,
        **detail: Any,
    ) -> None:
        """Record something done that is not a decision (AuditEvent); raises if it could not
        be stored."""
        self._events.submit(
            AuditEvent(
                id=new_id("evt_"),
                ts=float(self._clock()),  # stored as REAL: hash what verification reads back
                kind=kind,
                tenant=tenant,
                workspace=workspace,
                actor=actor,
                subject=subject,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )

    def heads(self) -> dict[str, tuple[str, Head]]:
        """This writer's chains, each with its log and the head it has committed: what its
        checkpoints sign for them, whatever the store gives back (checkpoints.py)."""
        return {
            chain.id: (log, chain.committed)
            for chain, log in ((self.chain, "decisions"), (self.events_chain, "events"))
        }

    def _commit_decisions(self, batch: list[_Pending]) -> list[Refusal | None]:
        """One transaction: each record's claims, then the records whose claims held, linked
        in the order they are stored. Claims go in the order of their tasks' events, so two
        replicas' transactions that claim events of the same tasks wait for each other in
        one order, never in a circle (PostgreSQL would end one as a deadlock)."""
        order = (
            sorted(range(len(batch)), key=lambda i: _event_of(batch[i])) if len(batch) > 1 else [0]
        )
        refusals: list[Refusal | None] = [None] * len(batch)
        with (
            self._advancing(self.chain, "decisions") as linked,
            self._store.writes.transaction() as tx,
        ):
            for i in order:
                claims = batch[i].claims
                refusals[i] = tx.claim(claims) if claims else None
            kept = [batch[i] for i in order if refusals[i] is None]
            linked.extend(self.chain.link([p.record for p in kept]))
            rows = [(r, p.first_use) for r, p in zip(linked, kept, strict=True)]
            self._store.audit.insert(tx, rows)
        self._made_durable(len(linked))
        return refusals

    def _commit_events(self, batch: list[AuditEvent]) -> list[None]:
        with self._advancing(self.events_chain, "events") as linked:
            linked.extend(self.events_chain.link(batch))
            self._store.audit.append_events(linked)
        self._made_durable(len(linked))
        return [None] * len(batch)

    def _advancing(self, chain: Chain, log: str) -> _Advancing:
        return _Advancing(self._store, chain, log)

    def _made_durable(self, count: int) -> None:
        if self.durability is Durability.FSYNC:  # the leader syncs for its whole batch
            self._store.audit.sync()
        self._checkpoints.appended(count)
        if not self._appending:
            self._appending = True
            # A process that appends hands SQLite's checkpoints to a thread (store/wal.py),
            # except at `fsync`: there the syncs are the cost, and a checkpoint's own syncs
            # beside them made each take 1.6 times as long (0.41 ms against 0.25, measured).
            if self.durability is not Durability.FSYNC:
                self._store.audit.checkpoint_in_background()

    def close(self) -> None:
        """Commit what waits, then a last checkpoint, so what this writer appended is held to a
        signature."""
        if isinstance(self._decisions, Background):
            self._decisions.close()
        self._checkpoints.close()
