"""The audit log's persistence: appending decisions and events (one transaction per batch),
making commits survive power loss, and what the audit tools read back (the log in row order,
each chain's head, the signed checkpoints)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tether.model import AuditEvent, DecisionRecord
from tether.store import tables as t
from tether.store.isolation import one_moment
from tether.store.prepared import Prepared
from tether.store.rows import row_to
from tether.store.wal import WriteAheadLog
from tether.store.writes import HotWrites, Transaction

LOGS = {"decisions": t.decisions, "events": t.audit_events}
NOT_UTF8 = "\ufffd[not UTF-8] "


def canonical_columns(log: str) -> list[str]:
    """A log's columns in the order its records' canonical form lists them (sorted; `seq` is
    the store's row number and `hash` is what is computed, so neither is in it)."""
    return sorted(str(c.name) for c in LOGS[log].columns if c.name not in ("seq", "hash"))


class AuditRecords:
    def __init__(self, engine: sa.Engine, writes: HotWrites, wal: WriteAheadLog | None) -> None:
        self.engine = engine
        self.writes = writes  # the store's one writing connection (the hot path's)
        dialect = engine.dialect
        self._insert = {
            name: Prepared(
                table.insert(), [str(c.name) for c in table.columns if c.name != "seq"], dialect
            )
            for name, table in LOGS.items()
        }
        # Two tasks of one agent may both see a first use: the second insert must be a no-op.
        insert: Any = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect.name]
        self._insert_tool_use = Prepared(
            insert(t.agent_tools).on_conflict_do_nothing(),
            ["workspace", "agent", "tool", "first_used"],
            dialect,
        )
        self._insert_checkpoint = Prepared(
            t.audit_checkpoints.insert(), ["at", "statement"], dialect
        )
        self._heads = {name: _head_queries(table) for name, table in LOGS.items()}
        self._decision_params = self._insert["decisions"].struct_params(DecisionRecord)
        self._event_params = self._insert["events"].struct_params(AuditEvent)
        self._wal = wal

    # -- appending -----------------------------------------------------------------------------

    def insert(self, tx: Transaction, decisions: Sequence[tuple[DecisionRecord, bool]]) -> None:
        """Insert decisions in `tx` (its commit stores them, or none). The flag: the decision
        is the agent's first allowed call of its tool, remembered with it."""
        params = self._decision_params
        tx.insert(self._insert["decisions"].sql, [params(r) for r, _ in decisions])
        uses = [
            self._insert_tool_use.params(
                {"workspace": r.workspace, "agent": r.agent, "tool": r.tool, "first_used": r.ts}
            )
            for r, first_use in decisions
            if first_use
        ]
        tx.insert(self._insert_tool_use.sql, uses)

    def append_events(self, events: Sequence[AuditEvent]) -> None:
        """Insert events and commit them in one transaction (raises if that failed: then none
        of them is stored)."""
        with self.writes.transaction() as tx:
            tx.insert(self._insert["events"].sql, [self._event_params(e) for e in events])

    def sync(self) -> None:
        """Make every commit so far survive power loss (the `fsync` level; wal.py). On
        PostgreSQL a commit is already flushed (synchronous_commit)."""
        if self._wal is not None:
            self._wal.sync()

    def checkpoint_in_background(self) -> None:
        """This process appends to the log: move SQLite's checkpoints off its commits."""
        if self._wal is not None:
            wal = self._wal
            self.writes.between_transactions(
                lambda writer: wal.checkpoint_in_background(writer, self.writes.turn)
            )

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()

    # -- reading -------------------------------------------------------------------------------

    def rows(
        self, log: str, *, after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """Every record of a log in row order, as tuples of `canonical_columns(log)`, then
        `hash`, then the row number: verification reads the whole log, so this skips
        SQLAlchemy. Bytes that are not UTF-8 (only a tampered log has them) are read again as
        backslash escapes: altered, found by verify, not a crash."""
        columns = ", ".join(f'"{c}"' for c in [*canonical_columns(log), "hash", "seq"])
        bound = "" if upto is None else f" AND seq <= {int(upto)}"
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = f"SELECT {columns} FROM {LOGS[log].name} WHERE seq > {mark}{bound} ORDER BY seq"  # noqa: S608 - names from the table
        connection = self.engine.raw_connection()
        driver: Any = connection.driver_connection
        last, lenient = after, False
        try:
            while True:
                if lenient:
                    driver.text_factory = _lenient_text
                cursor: Any = connection.cursor()
                try:
                    cursor.execute(sql, (last,))
                    for row in cursor:
                        last = row[-1]
                        yield row
                    return
                except Exception as exc:
                    if lenient or "decode" not in str(exc):
                        raise
                    lenient = True  # from the row that failed on, read leniently
                finally:
                    cursor.close()
        finally:
            if lenient:
                driver.text_factory = str
            connection.close()

    def after(self, seq: int, limit: int = 1000) -> list[tuple[int, DecisionRecord]]:
        """Decisions recorded after the store's row number `seq`, oldest first (for `tail`)."""
        query = (
            sa.select(t.decisions)
            .where(t.decisions.c.seq > seq)
            .order_by(t.decisions.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as db:
            rows = db.execute(query).all()
        return [(int(r.seq), row_to(DecisionRecord, r, without=("seq",))) for r in rows]

    def stored(self, log: str, record_id: str) -> bool:
        table = LOGS[log]
        with self.engine.connect() as db:
            return (
                db.execute(sa.select(table.c.seq).where(table.c.id == record_id)).first()
                is not None
            )

    def last_seq(self) -> int:
        return self.last_row("decisions")

    def last_row(self, log: str) -> int:
        table = LOGS[log]
        with self.engine.connect() as db:
            return int(db.execute(sa.select(sa.func.max(table.c.seq))).scalar() or 0)

    def events(
        self, *, workspace: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        """The newest events first."""
        e = t.audit_events
        query = sa.select(*[c for c in e.columns if c.name != "seq"])
        if workspace is not None:
            query = query.where(e.c.workspace == workspace)
        if since is not None:
            query = query.where(e.c.ts >= since)
        with self.engine.connect() as db:
            rows = db.execute(query.order_by(e.c.seq.desc()).limit(limit)).all()
        return [row_to(AuditEvent, r) for r in rows]

    def has_event(self, kind: str, *, workspace: str, subject: str) -> bool:
        """Whether such an event was ever recorded (the MCP gateway's mark that an upstream's
        tools were imported once: later changes to them are not imported, but flagged)."""
        e = t.audit_events
        query = (
            sa.select(e.c.seq)
            .where((e.c.workspace == workspace) & (e.c.kind == kind) & (e.c.subject == subject))
            .limit(1)
        )
        with self.engine.connect() as db:
            return db.execute(query).first() is not None

    def heads(self, after: dict[str, int]) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
        """The last record of each chain among each log's rows after row `after[log]`: its
        place and hash; and the last row read of each log. One consistent snapshot, so a
        checkpoint reads only what was appended since the one before. (Statements built once:
        a checkpoint runs beside the deciding threads, and building them held the GIL longer
        than SQLite took to answer.)"""
        found: dict[str, tuple[int, str]] = {}
        top: dict[str, int] = {}
        with one_moment(self.engine) as db:
            for name, (last_row, chain_heads) in self._heads.items():
                top[name] = int(db.execute(last_row).scalar() or 0)
                window = {"after": after.get(name, 0), "top": top[name]}
                for chain, seq, digest in db.execute(chain_heads, window):
                    found[chain] = (int(seq), digest)
        return found, top

    def add_checkpoint(self, at: float, statement: str) -> None:
        """Through the hot-path connection, in its turn: another connection's write would
        make a decision's commit that met it sleep in SQLite's busy handler (1 ms or more)."""
        checkpoint = self._insert_checkpoint.params({"at": at, "statement": statement})
        with self.writes.transaction() as tx:
            tx.insert(self._insert_checkpoint.sql, [checkpoint])

    def latest_checkpoint(self) -> str | None:
        query = (
            sa.select(t.audit_checkpoints.c.statement)
            .order_by(t.audit_checkpoints.c.seq.desc())
            .limit(1)
        )
        with self.engine.connect() as db:
            return db.execute(query).scalar()

    def checkpoints(self) -> list[tuple[int, float, str]]:
        query = sa.select(
            t.audit_checkpoints.c.seq, t.audit_checkpoints.c.at, t.audit_checkpoints.c.statement
        ).order_by(t.audit_checkpoints.c.seq)
        with self.engine.connect() as db:
            return [(int(s), float(a), str(st)) for s, a, st in db.execute(query)]


def _head_queries(table: sa.Table) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """A log's last row, and the head (chain, place, hash) of each chain among its rows in
    the window `after` < row <= `top`."""
    window = (
        (table.c.seq > sa.bindparam("after"))
        & (table.c.seq <= sa.bindparam("top"))
        & table.c.chain.is_not(None)
    )
    last = (
        sa.select(table.c.chain, sa.func.max(table.c.chain_seq).label("at"))
        .where(window)
        .group_by(table.c.chain)
        .subquery()
    )
    heads = (
        sa.select(table.c.chain, table.c.chain_seq, table.c.hash)
        .join(last, (table.c.chain == last.c.chain) & (table.c.chain_seq == last.c.at))
        .where(window)
    )
    return sa.select(sa.func.max(table.c.seq)), heads


def _lenient_text(raw: bytes) -> str:
    """Text that is not UTF-8 was not written by Tether: it reads marked, so its record's hash
    cannot match (a plain backslash escape could spell what the record held)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return NOT_UTF8 + raw.decode("utf-8", "backslashreplace")
