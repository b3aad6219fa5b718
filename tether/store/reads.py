"""Reads of several statements that must agree with each other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def one_moment(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose reads all see the store as it was at one moment. Without it they
    need not: SQLite's driver starts no transaction for a read, so each statement sees its own
    moment, and PostgreSQL's default isolation (read committed) lets each see what committed
    before it."""
    with engine.connect() as db:
        if db.dialect.name == "sqlite":
            db.exec_driver_sql("BEGIN")
        else:
            db.execution_options(isolation_level="REPEATABLE READ")
        yield db
