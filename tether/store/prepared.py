"""Statements compiled once for the driver, for the few inserts on a decision's hot path.

SQLAlchemy's per-execute overhead (about 120 us here) is larger than everything else such an
insert costs, so these run straight on a DBAPI connection with SQL compiled from the Core table.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa


class Prepared:
    """An INSERT compiled once for the driver, so the hot path skips SQLAlchemy's execute."""

    def __init__(self, statement: Any, keys: list[str], dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or ()) if compiled.positional else None

    def bind(self, values: dict[str, Any]) -> tuple[str, Any]:
        return self.sql, self.params(values)

    def params(self, values: dict[str, Any]) -> Any:
        return [values[k] for k in self.order] if self.order is not None else values

    def struct_params(self, kind: type[msgspec.Struct]) -> Callable[[msgspec.Struct], Any]:
        """`params` straight from a struct of `kind` (whose fields the statement's keys are):
        no dict on the way, for the insert every decision makes."""
        if self.order is None:
            return msgspec.structs.asdict
        fields = list(kind.__struct_fields__)
        pick = operator.itemgetter(*(fields.index(k) for k in self.order))
        astuple = msgspec.structs.astuple
        return lambda struct: pick(astuple(struct))
