"""`@reason` templates: a reason can quote the context of the call it decided.

    @reason("{sinks.untrusted} came from untrusted content after the task read it")

renders as "to came from untrusted content after the task read it". A placeholder is a dotted
path into the context (`args`, `provenance`, `task`, `tool`, `sinks`, `risk`, `approved`, `time`);
an unknown root is a validation error, a path absent from a particular call renders as `?`.
Reasons reach approvers, so values that could carry someone else's words are quoted and cut
short: a recipient can be shown, but cannot pass itself off as part of the sentence. A cut says
so, and a run of spaces is shown as one (`[40 spaces]`): padding must not push the end of a
value (`…, everyone@evil.example`) out of a quote that reads as if it held all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.catalogue.cedar_schema import CONTEXT_ROOTS

MAX_VALUE = 80
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
_PLAIN = re.compile(r"[\w.@:/+\-]{1,64}", re.ASCII)  # anything else is quoted, escaped
_SPACES = re.compile(r" {2,}")


@dataclass(frozen=True)
class ReasonTemplate:
    text: str
    paths: tuple[tuple[str, ...], ...]

    def render(self, context: Mapping[str, Any]) -> str:
        if not self.paths:
            return self.text
        values = iter(_show(_lookup(context, path)) for path in self.paths)
        return _PLACEHOLDER.sub(lambda _: next(values), self.text)


def compile_reason(text: str) -> tuple[ReasonTemplate, list[str]]:
    """The template, and the names of placeholders whose root is not in the context."""
    paths = tuple(tuple(m.group(1).split(".")) for m in _PLACEHOLDER.finditer(text))
    unknown = [".".join(p) for p in paths if p[0] not in CONTEXT_ROOTS]
    return ReasonTemplate(text, paths), unknown


def _lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _show(value: Any) -> str:  # noqa: PLR0911 - one case per kind of JSON value
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else _quoted(value)
    if isinstance(value, list):
        return (
            ", ".join(_show(v) for v in value[:10]) + (", ..." if len(value) > 10 else "") or "none"
        )
    if isinstance(value, Mapping):
        if "__extn" in value:
            return str(value["__extn"].get("arg", "?"))
        return ", ".join(f"{k}={_show(v)}" for k, v in list(value.items())[:10]) or "none"
    return "?"


def _quoted(value: str) -> str:
    """`value` in quotes, escaped (JSON: control and non-ASCII characters as \\u escapes), its
    runs of spaces counted, and cut at MAX_VALUE characters with the cut said."""
    shown = _SPACES.sub(lambda run: f"[{len(run.group())} spaces]", value)
    if len(shown) <= MAX_VALUE:
        return json.dumps(shown)
    return f"{json.dumps(shown[:MAX_VALUE])} (cut: {len(value)} characters in all)"
