"""The exact call an approval is for: RFC 8785 canonical JSON of the arguments, and one hash of
task, tool and arguments.

Canonical JSON makes "the same arguments" mean the same bytes whatever the key order, spacing,
number spelling (1.0 and 1) or escaping the agent used; the hash binds the approval to the task
and the tool too, so a grant for one call can never be spent on any other.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from tether.errors import InvalidInput


def canonical_json(value: Any) -> str:
    """RFC 8785 (JCS) text of a JSON value; InvalidInput for what JSON cannot carry."""
    try:
        return rfc8785.dumps(value).decode()
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the arguments have no canonical JSON form: {exc}") from exc


def call_hash(task_id: str, tool: str, args: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of {task, tool, args}."""
    body = canonical_json({"args": args, "task": task_id, "tool": tool})
    return hashlib.sha256(body.encode()).hexdigest()
