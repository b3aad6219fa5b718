"""Transactions that must see the store at one moment, or keep others out while they check.

Neither is what a transaction gets by default here: SQLite's driver starts no transaction for a
SELECT (each statement sees its own moment) and takes SQLite's write lock only at the first
write; PostgreSQL's default isolation (read committed) lets each statement see what committed
before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def one_moment(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose reads all see the store as it was at one moment."""
    with engine.connect() as db:
        if db.dialect.name == "sqlite":
            db.exec_driver_sql("BEGIN")
        else:
            db.execution_options(isolation_level="REPEATABLE READ")
        yield db


def one_at_a_time(db: sa.Connection, table: sa.Table) -> None:
    """Make the transaction of `db` (begun, nothing read yet) the only one writing `table`
    until it ends, so that what it reads before writing cannot change meanwhile: a check
    made on those reads holds for its write (two made at once would each pass a check that
    read before the other wrote). PostgreSQL: a self-exclusive table lock (readers go on);
    SQLite: its one write lock, taken by a write that changes nothing."""
    if db.dialect.name == "postgresql":
        db.execute(sa.text(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE"))
    else:
        key = next(iter(table.primary_key.columns))
        db.execute(table.update().where(sa.false()).values({key.name: key}))
