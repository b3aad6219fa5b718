"""Rows to records: one conversion for every table the store reads back."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def row_to(model: type[T], row: Any, *, without: tuple[str, ...] = ()) -> T:
    """The record a row holds (column names as str: msgspec refuses SQLAlchemy's subclass)."""
    return msgspec.convert({str(k): v for k, v in row._mapping.items() if k not in without}, model)
