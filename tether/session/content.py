"""The text inside a tool's output, found within a fixed budget whatever the output is.

Outputs come from tools, and tools can return anything: megabytes of text, bytes, structures
nested thousands deep, objects that are not JSON. Reporting an output must never fail a task and
never take unbounded memory or time, so this walks the output iteratively, takes at most
`MAX_TEXT` characters, and says whether it had to stop early (the unread rest is then unknown,
which the caller records as a label rather than pretending it was clean).
"""

from __future__ import annotations

import codecs
import inspect
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from io import IOBase
from typing import Any

MAX_TEXT = 32 * 1024 * 1024  # characters read from one output
MAX_NODES = 1_000_000  # values visited in one structured output
MAX_SCALAR = 64  # characters kept of a value that is neither text nor a container


@dataclass(frozen=True)
class Text:
    """The pieces of text found in an output, and whether some of it was left unread."""

    pieces: tuple[str, ...]
    truncated: bool


def text_of(output: Any) -> Text:
    pieces: list[str] = []
    budget = MAX_TEXT
    truncated = False
    for piece in _strings(output):
        if piece is None:
            truncated = True
            break
        if len(piece) > budget:
            pieces.append(piece[:budget])
            truncated = True
            break
        pieces.append(piece)
        budget -= len(piece)
    return Text(tuple(pieces), truncated)


def _strings(output: Any) -> Iterator[str | None]:  # noqa: PLR0912 - a branch per kind of value
    """Every string in `output`, depth-first without recursion; None wherever something was left
    unread (the node budget ran out, a value was cut short, or could not be read at all)."""
    stack = [output]
    visited = 0
    while stack:
        visited += 1
        if visited > MAX_NODES:
            yield None
            return
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, bytes | bytearray | memoryview):
            yield _decoded(bytes(value[:MAX_TEXT]))
            if len(value) > MAX_TEXT:
                yield None
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                named, text = _as_text(key), _as_text(item)
                if named is not None and text is not None:
                    # together, so `{"aws_secret_access_key": K}` reads like the text it is
                    stack.append(f"{named}: {text}")
                else:
                    stack.append(item)
                    stack.append(key)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(reversed(list(value)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield _describe(value)  # a card or account number may come as a number
        elif isinstance(value, Iterator | AsyncIterator | IOBase) or inspect.isawaitable(value):
            # A stream, or a result still to come (a coroutine, a future): reading it here
            # would consume it, or cannot be done at all; what it holds is unknown.
            yield None
        elif value is not None and not isinstance(value, bool):
            yield _describe(value)


UTF16_SAMPLE = 4096  # bytes looked at to tell UTF-16 text from other bytes
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16's: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decoded(data: bytes) -> str:
    """The text in `data`: by its byte-order mark if it has one; as UTF-16 if it looks like
    it (most of its first bytes NUL, at every other place, as in text a Windows tool saved),
    so a key in it is read as the key it is; else as UTF-8."""
    for mark, codec in _BOMS:
        if data.startswith(mark):
            return data.decode(codec, errors="replace")
    sample = data[:UTF16_SAMPLE]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd > len(sample) // 4 and even * 4 < odd:
        return data.decode("utf-16-le", errors="replace")
    if even > len(sample) // 4 and odd * 4 < even:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("utf-8", errors="replace")


def _as_text(value: Any) -> str | None:
    """A name's or a value's text, where it is one (bytes as UTF-8: `os.environb`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray) and len(value) <= MAX_TEXT:
        return bytes(value).decode("utf-8", errors="replace")
    return None


def _describe(value: Any) -> str | None:
    """The text of a value that is neither text nor a container; None if it cannot be read
    (an int too long for str(), a __str__ that raises)."""
    try:
        text = str(value)
    except Exception:
        return None
    return text if len(text) <= MAX_TEXT // 4 else None
