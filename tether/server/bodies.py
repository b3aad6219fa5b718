"""Request bodies, read strictly: what two parsers could read two ways is refused.

A JSON object that names a key twice, or a form that gives a field twice, is valid to some
parsers and not to others, and those that accept it disagree on which value counts (msgspec and
Python's `json` keep the last; others keep the first). A proxy, a logger or the tool itself may
read `{"path": "/etc/passwd", "path": "/repo/a"}` as the first path while the decision was made
on the second, so no decision is made on it: it is a 400 (RFC 8259 says names SHOULD be unique;
RFC 6749 says a parameter MUST NOT appear twice). JSON nested deeper than the decoder's stack is
a 400 too, not a failure inside Tether.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec

from tether.errors import InvalidInput

T = TypeVar("T")


def json_body(raw: bytes, kind: type[T]) -> T:
    """The body decoded as `kind` (msgspec's checks: UTF-8, types, numbers in range), once no
    object in it names a key twice."""
    try:
        decoded = msgspec.json.decode(raw, type=kind)
        json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InvalidInput("the JSON body is nested too deeply") from None
    return decoded


def form_body(raw: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, each field given once."""
    try:
        pairs = parse_qsl(raw.decode("utf-8", "strict"))
    except UnicodeDecodeError as exc:
        raise InvalidInput("the form body is not UTF-8") from exc
    fields = dict(pairs)
    if len(fields) != len(pairs):
        names = [name for name, _ in pairs]
        again = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInput(f"the form gives {', '.join(again)} more than once")
    return fields


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        names = [key for key, _ in pairs]
        again = next(key for i, key in enumerate(names) if key in names[:i])
        raise InvalidInput(f"the JSON body names {again!r} twice in one object")
    return found


__all__ = ["form_body", "json_body"]
