"""What names may look like, and why.

Workspace and agent names become SPIFFE path segments (`spiffe://<td>/ws/<ws>/agent/<name>`), so
they are lowercase ASCII. Tool names become Cedar action ids and come from MCP servers, so they
allow the separators those use. Everything is ASCII: a name that merely looks like another
(Cyrillic "а" for Latin "a") must not be able to pass for it.
"""

from __future__ import annotations

import re

from tether.errors import InvalidInput

_SEGMENT = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_TOOL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def check_segment(kind: str, name: str) -> str:
    """A workspace, tenant or agent name: one SPIFFE path segment."""
    if not isinstance(name, str) or not _SEGMENT.fullmatch(name):
        raise InvalidInput(
            f"{kind} name {name!r} is not allowed: use 1-64 lowercase ASCII letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit"
        )
    return name


def check_tool_name(name: str) -> str:
    if not isinstance(name, str) or not _TOOL.fullmatch(name):
        raise InvalidInput(
            f"tool name {name!r} is not allowed: use 1-128 ASCII letters, digits, '_', '.', ':', "
            "'/' or '-', not starting with a separator"
        )
    return name


def check_identifier(kind: str, name: str) -> str:
    """An effect or a role: a lowercase identifier (`external`, `policy-author`)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidInput(
            f"{kind} {name!r} is not allowed: use a lowercase identifier such as 'external'"
        )
    return name
