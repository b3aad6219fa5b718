"""What the audit tools read of the decision log: the chains in order, their heads, and the
signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from tether.model import DecisionRecord
from tether.store import tables as t
from tether.store.rows import row_to

COLUMNS = [str(c.name) for c in t.decisions.columns if c.name != "seq"]


class AuditRecords:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def chained(self, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """Every decision as a dict of its columns, chain by chain, in chain order (unchained
        ones first). Read on a driver cursor in batches: verification reads the whole log."""
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        connection = self.engine.raw_connection()
        if self.engine.dialect.name == "sqlite":  # bytes that are not UTF-8: altered, not a crash
            connection.driver_connection.text_factory = _lenient_text  # type: ignore[union-attr]
        try:
            cursor = connection.cursor()
            cursor.execute(f"SELECT {columns} FROM decisions ORDER BY chain, chain_seq")  # noqa: S608 - column names from the table
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    yield dict(zip(COLUMNS, row, strict=True))
            cursor.close()
        finally:
            if self.engine.dialect.name == "sqlite":
                connection.driver_connection.text_factory = str  # type: ignore[union-attr]
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

    def last_seq(self) -> int:
        with self.engine.connect() as db:
            return int(db.execute(sa.select(sa.func.max(t.decisions.c.seq))).scalar() or 0)

    def heads(self, after: int = 0) -> tuple[dict[str, tuple[int, str]], int]:
        """The last record of each chain among the rows after row `after` (0: all rows): its
        place and hash; and the last row read. One consistent snapshot, so a checkpoint can
        carry on from the one before instead of reading the whole log again."""
        d = t.decisions
        with self.engine.begin() as db:
            top = int(db.execute(sa.select(sa.func.max(d.c.seq))).scalar() or 0)
            window = (d.c.seq > after) & (d.c.seq <= top) & d.c.chain.is_not(None)
            last = (
                sa.select(d.c.chain, sa.func.max(d.c.chain_seq).label("at"))
                .where(window)
                .group_by(d.c.chain)
                .subquery()
            )
            query = sa.select(d.c.chain, d.c.chain_seq, d.c.hash).join(
                last, (d.c.chain == last.c.chain) & (d.c.chain_seq == last.c.at)
            )
            found = {chain: (int(seq), digest) for chain, seq, digest in db.execute(query)}
        return found, top

    def add_checkpoint(self, at: float, statement: str) -> None:
        with self.engine.begin() as db:
            db.execute(t.audit_checkpoints.insert().values(at=at, statement=statement))

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


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
