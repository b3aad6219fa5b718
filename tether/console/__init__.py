"""The web console's templates and static files (its routes are tether/server/console.py).

Pages are rendered on the server with Jinja2 (autoescaped: every value an agent or a user
chose is text, never markup); htmx, shipped here as a file, refreshes the live parts. Nothing
is loaded from elsewhere, so the console works offline and under a strict Content Security
Policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

STATIC = Path(__file__).parent / "static"


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def _pretty(text: str | None) -> str:
    """JSON text indented for reading, ASCII only as `tether approvals show` and the webhooks
    show a call (approvals/workflow.py `shown_args`): non-ASCII as \\u escapes, so a Cyrillic
    "а" or a right-to-left override in what an agent chose cannot pass for what it imitates.
    Text that is not JSON is shown as it is, its non-ASCII escaped the same way."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=True)
    except ValueError:
        return _ascii(text)


def _ascii(text: str | None) -> str:
    """Text shown as `_pretty` shows what is not JSON: as it is, its non-ASCII as \\u escapes
    (a task's request, the user's words, may hold look-alikes as an argument may)."""
    return (text or "").encode("ascii", "backslashreplace").decode("ascii")


def _reason_texts(reasons: str) -> str:
    """A decision record's reasons (JSON), as one line."""
    try:
        return "; ".join(str(r.get("text", "")) for r in json.loads(reasons))
    except (ValueError, AttributeError, TypeError):
        return ""


def _shadow_effect(shadow: str | None) -> str:
    """What a record's shadow bundle would have answered."""
    try:
        return str(json.loads(shadow or "{}").get("bundle", {}).get("effect", ""))
    except (ValueError, AttributeError):
        return ""


def _short(version: str | None) -> str:
    """A policy version (a SHA-256) short enough to read; pages keep the whole one in a title."""
    if not version:
        return "none"
    return version if len(version) <= 20 else version[:19] + "…"


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tether.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.filters["ascii"] = _ascii
    env.filters["reason_texts"] = _reason_texts
    env.filters["shadow_effect"] = _shadow_effect
    env.filters["short"] = _short
    return env


def render(env: Environment, template: str, **values: Any) -> str:
    return env.get_template(template).render(**values)


__all__ = ["STATIC", "environment", "render"]
