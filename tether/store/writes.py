"""The writes a decision makes, in one transaction on the store's one hot-path connection.

A remote call makes three: its DPoP proof's one-time id (the replay cache), its task's event
(where tasks are shared) and its record. Each was a commit of its own; now the first two are
*claims* made in the record's transaction: if a claim is lost (the proof was used before, or
another process took the task's next event number), nothing of that call is written and its
decider learns which (`Refusal`), while the other calls committed with it go in. A commit is
most of what a write costs here (measured: benchmarks/http_api.py), so a call pays one.

Claims are inserts that do nothing on a conflict, so a lost one is a row count of 0, not an
error that would end the transaction for the calls sharing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tether.store import tables as t
from tether.store.prepared import Prepared
from tether.store.wal import WriteTurn

PURGE_EVERY = 512  # one-time ids claimed between deletions of the expired ones


class Refusal(Enum):
    """Why a call's claims were not granted."""

    REPLAYED = "replayed"  # a one-time id (a DPoP proof's) was used before and is unexpired
    TASK_MOVED = "task moved"  # another process added the task's next event first


@dataclass(frozen=True)
class Claims:
    """What a call must be the first to write for its answer to stand: one-time ids (key,
    kept until) and its task's next event (task id, number, sealed body)."""

    now: float
    once: tuple[tuple[str, float], ...] = ()
    event: tuple[str, int, bytes] | None = None

    def __bool__(self) -> bool:
        return bool(self.once) or self.event is not None


class StoreClosed(RuntimeError):
    """A write after the store was closed on purpose: there is nothing to retry."""


class HotWrites:
    """The store's one writing connection. If the database drops it (a PostgreSQL restart, a
    network cut), the next transaction opens another: until then each write fails, and with it
    its decision (a deny that says why); once the database is back, writes go on by themselves.
    """

    def __init__(self, engine: sa.Engine, turn: WriteTurn) -> None:
        self._engine = engine
        self._writer = engine.raw_connection()
        self._cursor = self._writer.cursor()  # used only in the turn: one for every transaction
        self._closed = False
        self.turn = turn  # taken around each transaction on it (store/wal.py)
        dialect = engine.dialect
        insert: Any = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect.name]
        once = insert(t.replay_cache)
        # A key that is there but expired (not purged yet) is taken afresh.
        self._once = Prepared(
            once.on_conflict_do_update(
                index_elements=["key"],
                set_={"expires_at": once.excluded.expires_at},
                where=t.replay_cache.c.expires_at <= sa.bindparam("now"),
            ),
            ["key", "expires_at"],
            dialect,
        )
        self._release_once = Prepared(
            t.replay_cache.delete().where(t.replay_cache.c.key == sa.bindparam("key")),
            [],
            dialect,
        )
        self._purge_once = Prepared(
            t.replay_cache.delete().where(t.replay_cache.c.expires_at <= sa.bindparam("now")),
            [],
            dialect,
        )
        self._claimed = 0  # one-time ids claimed, counted under the turn
        self._event = Prepared(
            insert(t.task_events).on_conflict_do_nothing(), ["task_id", "seq", "body"], dialect
        )

    def transaction(self) -> Transaction:
        """One transaction, committed when its block ends (rolled back if it raises)."""
        return Transaction(self)

    def between_transactions(self, action: Callable[[Any], None]) -> None:
        """Run `action` on the connection while no transaction is (a pragma, say)."""
        with self.turn:
            action(self._live())

    def close(self) -> None:
        with self.turn, suppress(Exception):
            self._closed = True
            self._writer.close()

    def _live(self) -> Any:
        """The writing connection, opened again first if the database dropped it (called in
        the turn). Raises if the database is still away: the write fails, as it must."""
        if self._closed:  # closed on purpose: not opened again behind the closer's back
            raise StoreClosed("the store is closed")
        connection = getattr(self._writer, "dbapi_connection", self._writer)
        if (  # the pool let go of it (invalidated), or psycopg says it is lost
            connection is None
            or getattr(connection, "broken", False)
            or getattr(connection, "closed", False)
        ):
            with suppress(Exception):
                self._writer.invalidate()  # the pool forgets it
            self._writer = self._engine.raw_connection()
            self._cursor = self._writer.cursor()
        return self._writer

    def claim(self, claims: Claims) -> Refusal | None:
        """Make the claims alone, in a transaction of their own."""
        with self.transaction() as tx:
            return tx.claim(claims)


class Transaction:
    """A context manager (a class, not a generator: it is entered on every decision)."""

    def __init__(self, writes: HotWrites) -> None:
        self._writes = writes
        self._turn = writes.turn

    def __enter__(self) -> Transaction:
        self._turn.__enter__()
        try:
            self._connection = self._writes._live()
        except BaseException:
            self._turn.__exit__()
            raise
        self._cursor = self._writes._cursor
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                try:
                    self._connection.commit()
                except BaseException:
                    with suppress(Exception):
                        self._connection.rollback()
                    raise
            else:  # what went wrong in the block is the error to raise, not a failed rollback
                with suppress(Exception):
                    self._connection.rollback()
        finally:
            self._turn.__exit__()

    def claim(self, claims: Claims) -> Refusal | None:
        """Write the claims; when one is lost, undo the others and say which was lost."""
        w, taken = self._writes, list[str]()
        if claims.once:
            w._claimed += 1
            if w._claimed % PURGE_EVERY == 0:
                self._cursor.execute(*w._purge_once.bind({"now": claims.now}))
        for key, until in claims.once:
            if not self._write(w._once, {"key": key, "expires_at": until, "now": claims.now}):
                self._release(taken)
                return Refusal.REPLAYED
            taken.append(key)
        if claims.event is not None:
            task_id, seq, body = claims.event
            if not self._write(w._event, {"task_id": task_id, "seq": seq, "body": body}):
                self._release(taken)
                return Refusal.TASK_MOVED
        return None

    def insert(self, sql: str, params: Sequence[Any]) -> None:
        """Run `sql` once per row of `params` (each bound already: `Prepared`)."""
        if len(params) == 1:
            self._cursor.execute(sql, params[0])
        elif params:
            self._cursor.executemany(sql, params)

    def _write(self, statement: Prepared, values: dict[str, Any]) -> bool:
        self._cursor.execute(*statement.bind(values))
        return bool(self._cursor.rowcount == 1)

    def _release(self, keys: list[str]) -> None:
        for key in keys:
            self._cursor.execute(*self._writes._release_once.bind({"key": key}))
