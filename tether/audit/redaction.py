"""What the decision log keeps of a call's arguments (`settings.audit` in workspace.yaml):

    audit:
      arguments: redact                     # full (the default) | redact | digest
      redact: [password, token, authorization, body]

The log is evidence: it is kept for long, exported, backed up and read by people who have no
need to see a password an agent typed, a customer's message body or an API token. So a
workspace says what its records keep:

- `full`: the arguments as called, and the context the policies saw (the default: nothing
  changes for a workspace that says nothing).
- `redact`: the value of every argument named in `redact`, at any depth (a key of any object
  inside the arguments, in lists too) and compared case-insensitively (an HTTP tool's
  `Authorization` header is caught by `authorization`), is replaced by `[redacted]`. Other
  arguments stay as called. Naming `redact` alone implies this mode.
- `digest`: no argument value at all: `args` is `{}` and so is the context's `args`.

In every mode the record's `args_digest` is the SHA-256 of the real canonical arguments, so
whoever holds the arguments can prove they are the ones decided on. It is not salted, so it
also lets whoever holds the record test guesses of a withheld value: it does not protect one
that can be guessed (a PIN), and docs/audit.md says so. The same cut applies to the context's
`args` (the arguments, converted for Cedar), and a withheld value is also cut from the record's
other texts wherever it appears verbatim: the arguments kept (another argument may repeat it; a
kept number equal to a withheld one is cut whole), the task's request in the context (the
user's words: that is how a sink's provenance is `user`), the reasons (an argument-schema error
quotes the value it refuses) and the shadow outcome. A value shorter than MIN_CUT characters is
cut from those only where it appears quoted (as an error quotes it) or as a word of its own (a
three-digit card code repeated in a note), so that a short value does not shred every word it
is part of; a one-character one only where quoted. Field names, ids and the rest of the context
are kept: they say what the call was, not what it said.

A record whose arguments were cut says so in its context (`"redaction": {...}`): a backtest
cannot replay it faithfully, and counts it apart instead of re-deciding it on altered data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from tether.errors import InvalidInput
from tether.model import Reason

MARKER = "[redacted]"
KEY = "redaction"  # the key of a stored context that says its arguments were cut
MIN_CUT = 4
# Cutting n withheld values out of texts costs n passes over them: past this many characters
# compared, every further text is withheld whole rather than searched (a bounded cost per record,
# and never a leak).
BUDGET = 50_000_000

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


class Mode(StrEnum):
    FULL = "full"
    REDACT = "redact"
    DIGEST = "digest"


_STRICTNESS = {Mode.FULL: 0, Mode.REDACT: 1, Mode.DIGEST: 2}


class _Setting(msgspec.Struct, forbid_unknown_fields=True):
    arguments: str | None = None
    redact: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Redacted:
    """What a record keeps once its arguments are cut: the JSON to store in each column."""

    args: str
    context: str | None
    reasons: tuple[Reason, ...]
    shadow: str | None


@dataclass(frozen=True, slots=True)
class Redaction:
    """A workspace's redaction setting, parsed once per workspace snapshot. `fields` are the
    argument names to cut, case-folded. Keeping everything is always the one instance FULL, so
    that the pipeline pays one identity check for it."""

    mode: Mode = Mode.FULL
    fields: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Redaction:
        """The workspace's setting; InvalidInput saying what is wrong."""
        raw = settings.get("audit", {})
        try:
            parsed = msgspec.convert(raw if raw is not None else {}, _Setting)
        except msgspec.ValidationError as exc:
            raise InvalidInput(
                f"settings.audit: {exc} (expected {{arguments: full | redact | digest, "
                "redact: [argument names]}})"
            ) from exc
        names = [name.strip() for name in parsed.redact]
        if any(not name for name in names):
            raise InvalidInput("settings.audit.redact: an argument name cannot be empty")
        if parsed.arguments is None:
            mode = Mode.REDACT if names else Mode.FULL
        elif parsed.arguments in tuple(Mode):
            mode = Mode(parsed.arguments)
        else:
            raise InvalidInput(
                f"settings.audit.arguments must be full, redact or digest, not {parsed.arguments!r}"
            )
        if mode is Mode.REDACT and not names:
            raise InvalidInput(
                "settings.audit: arguments: redact needs `redact`, the argument names to cut "
                "(e.g. redact: [password, token])"
            )
        if mode is Mode.FULL and names:
            raise InvalidInput(
                "settings.audit: arguments: full keeps every argument, so `redact` would cut "
                "nothing; use arguments: redact (or drop `redact`)"
            )
        if mode is Mode.FULL:
            return FULL  # the one instance: the pipeline's fast path checks identity
        return cls(mode, frozenset(name.casefold() for name in names))

    @classmethod
    def strictest(cls, settings: Iterable[Redaction]) -> Redaction:
        """One setting that keeps no more than any of `settings` would: for a record that
        holds the data of more than one workspace (a call aimed outside its task's)."""
        chosen = list(settings)
        mode = max((s.mode for s in chosen), key=_STRICTNESS.__getitem__, default=Mode.FULL)
        if mode is Mode.FULL:
            return FULL
        return cls(mode, frozenset().union(*(s.fields for s in chosen)))

    def describe(self) -> dict[str, Any]:
        """The marker a cut record carries in its context."""
        if self.mode is Mode.DIGEST:
            return {"arguments": self.mode.value}
        return {"arguments": self.mode.value, "fields": sorted(self.fields)}

    def apply(
        self,
        args: Any,
        *,
        context: bytes | None,
        reasons: tuple[Reason, ...],
        shadow: str | None,
    ) -> Redacted | None:
        """The record's columns with the arguments cut, or None when there was nothing to cut
        (the record is then stored as it is, and stays replayable). `args` are the real
        arguments as recorded (decoded from their canonical JSON)."""
        if self.mode is Mode.FULL:
            return None
        try:
            return self._apply(args, context, reasons, shadow)
        except RecursionError:  # nested deeper than a walk can follow: keep none of them
            return DIGEST._apply(args, context, reasons, shadow)

    def _apply(
        self, args: Any, context: bytes | None, reasons: tuple[Reason, ...], shadow: str | None
    ) -> Redacted | None:
        withheld: list[Any] = []
        kept = self._cut(args, withheld)
        if kept is _UNCHANGED:
            return None
        cut = _Scrubber(withheld)
        stored_context = None
        if context is not None:
            document = _decode(context)
            if isinstance(document, dict):
                _cut_context(document, self._cut(document.get("args", {}), [], changed=True), cut)
                document[KEY] = self.describe()
            stored_context = _encode(document).decode()
        return Redacted(
            args=_encode_sorted(cut.tree(kept)).decode(),
            context=stored_context,
            reasons=tuple(msgspec.structs.replace(r, text=cut.text(r.text)) for r in reasons),
            shadow=_encode(cut.tree(_decode(shadow))).decode() if shadow is not None else None,
        )

    def _cut(self, args: Any, withheld: list[Any], *, changed: bool = False) -> Any:
        """`args` with what this setting withholds cut (its leaf values added to `withheld`),
        or _UNCHANGED when nothing was (unless `changed`: then always the cut value)."""
        if self.mode is Mode.DIGEST:
            if args == {} and not changed:
                return _UNCHANGED
            _leaves(args, withheld)
            return {}
        hits: list[bool] = []
        out = _cut_fields(args, self.fields, withheld, hits)
        return out if hits or changed else _UNCHANGED


def _cut_context(context: dict[str, Any], args: Any, cut: _Scrubber) -> None:
    """Cut a context in place. Its `args` are the arguments; of the rest, only the task's
    request is text that can hold them (the user's words, which a sink's value may come from):
    everything else is names, ids and counts Tether wrote, left as the policies saw them."""
    context["args"] = cut.tree(args)
    task = context.get("task")
    if isinstance(task, dict) and isinstance(task.get("request"), str):
        task["request"] = cut.text(task["request"])


class _Unchanged:
    pass


_UNCHANGED: Any = _Unchanged()
FULL = Redaction()
DIGEST = Redaction(Mode.DIGEST)  # its cut needs no recursion: the fallback for deep arguments


def _cut_fields(value: Any, fields: frozenset[str], withheld: list[Any], hits: list[bool]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and key.casefold() in fields:
                _leaves(item, withheld)
                hits.append(True)
                out[key] = MARKER
            else:
                out[key] = _cut_fields(item, fields, withheld, hits)
        return out
    if isinstance(value, list):
        return [_cut_fields(item, fields, withheld, hits) for item in value]
    return value


def _leaves(value: Any, into: list[Any]) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool):
            into.append(item)


class _Scrubber:
    """Cuts withheld values out of texts: verbatim when they are long enough to be told from
    ordinary words, and quoted (Python's repr, JSON) always, which is how errors quote them."""

    def __init__(self, withheld: Iterable[Any]) -> None:
        plain: set[str] = set()
        bounded: set[str] = set()  # numbers: whole ones only (1234, not the 1234 in 912345)
        words: set[str] = set()  # short strings: where they stand alone (123, not in 91234)
        self._numbers: set[int | float] = set()  # (withheld leaves hold no booleans)
        for value in withheld:
            if isinstance(value, str):
                if not value:
                    continue
                plain.update(
                    (repr(value), json.dumps(value), json.dumps(value, ensure_ascii=False))
                )
                if len(value) >= MIN_CUT:
                    plain.add(value)
                elif len(value) > 1:
                    words.add(value)
            else:  # a number: cut however short (a CVV), but only where it stands alone
                bounded.add(json.dumps(value))
                self._numbers.add(value)
        self._needles = sorted(plain | bounded | words, key=len, reverse=True)
        self._bounded, self._words = bounded, words
        self._spent = 0

    def text(self, text: str) -> str:
        if not self._needles:
            return text
        self._spent += (len(text) + 1) * len(self._needles)
        if self._spent > BUDGET:
            return MARKER
        present = [n for n in self._needles if n in text]
        if not present:
            return text
        return _pattern(present, self._bounded, self._words).sub(MARKER, text)

    def tree(self, value: Any) -> Any:
        """Every string value inside `value` cut, and every number equal to a withheld one (a
        kept argument may repeat it: a PIN and its confirmation); object keys are kept."""
        if isinstance(value, str):
            return self.text(value)
        if self._numbers and _number(value) in self._numbers:
            return MARKER
        if isinstance(value, dict):
            return {key: self.tree(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.tree(item) for item in value]
        return value


def _number(value: Any) -> int | float | None:
    """The number an argument's value is, if it is one: itself, or in the context's (Cedar's)
    form of the arguments, a decimal `{"__extn": {"fn": "decimal", "arg": "739215.0"}}`. A
    boolean is not one, though True == 1 (so a set holding 1 would say it holds True)."""
    if type(value) is int or type(value) is float:
        return value
    if isinstance(value, dict) and len(value) == 1:
        extension = value.get("__extn")
        if not isinstance(extension, dict) or extension.get("fn") != "decimal":
            return None
        text = extension.get("arg")
        if isinstance(text, str):
            with suppress(ValueError):
                return float(text)  # at most 4 places (catalogue/json_schema.py): a float holds it
    return None


def _pattern(needles: list[str], bounded: set[str], words: set[str]) -> re.Pattern[str]:
    def part(needle: str) -> str:
        if needle in bounded:  # a number: not part of a longer one, nor of a decimal
            return rf"(?<![\w.]){re.escape(needle)}(?![\w.])"
        if needle in words:  # a short string: not part of a longer word
            return rf"(?<!\w){re.escape(needle)}(?!\w)"
        return re.escape(needle)

    return re.compile("|".join(part(n) for n in needles))


def is_redacted(context: Mapping[str, Any]) -> bool:
    """Whether a stored context had its arguments cut (it cannot be replayed faithfully)."""
    return KEY in context
