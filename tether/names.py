"""What names may look like, and why.

Workspace and agent names become SPIFFE path segments (`spiffe://<td>/ws/<ws>/agent/<name>`), so
they are lowercase ASCII. Tool names become Cedar action ids and come from MCP servers, so they
allow the separators those use. Everything is ASCII: a name that merely looks like another
(Cyrillic "а" for Latin "a") must not be able to pass for it.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from tether.errors import InvalidInput

_SEGMENT = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_TOOL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_-]{0,62}")
MAX_PERSON = 255  # characters of a person's name (a user, an owner): what the store keeps

# The same rules as JSON Schema patterns (anchored: a pattern matches anywhere otherwise), for
# the OpenAPI document's request bodies and path parameters: a name it calls valid is one the
# checks below accept. Only the document carries them: the checks stay the service's (their
# messages say what a name may be, where a pattern would only be quoted back).
SEGMENT_PATTERN = f"^{_SEGMENT.pattern}$"
TOOL_PATTERN = f"^{_TOOL.pattern}$"
IDENTIFIER_PATTERN = f"^{_IDENTIFIER.pattern}$"
SEGMENT_SCHEMA = {
    "pattern": SEGMENT_PATTERN,
    "description": "1-64 lowercase ASCII letters, digits, '.', '_' or '-', starting and ending "
    "with a letter or digit",
}
TOOL_SCHEMA = {
    "pattern": TOOL_PATTERN,
    "description": "1-128 ASCII letters, digits, '_', '.', ':', '/' or '-', not starting with "
    "a separator",
}
IDENTIFIER_SCHEMA = {"pattern": IDENTIFIER_PATTERN, "description": "a lowercase identifier"}
Segment = Annotated[str, msgspec.Meta(extra_json_schema=SEGMENT_SCHEMA)]
ToolName = Annotated[str, msgspec.Meta(extra_json_schema=TOOL_SCHEMA)]
Identifier = Annotated[str, msgspec.Meta(extra_json_schema=IDENTIFIER_SCHEMA)]
# Names held by no pattern but not blank (a user, an owner), within what the store keeps. Not
# blank as str.strip() sees it: Python takes \x1c-\x1f and \x85 for spaces, JSON Schema's \S not.
Named = Annotated[
    str,
    msgspec.Meta(max_length=MAX_PERSON, extra_json_schema={"pattern": r"[^\s\x1c-\x1f\x85]"}),
]


def check_segment(kind: str, name: str) -> str:
    """A workspace, tenant or agent name: one SPIFFE path segment."""
    if not isinstance(name, str) or not _SEGMENT.fullmatch(name):
        rule = SEGMENT_SCHEMA["description"]
        raise InvalidInput(f"{kind} name {name!r} is not allowed: use {rule}")
    return name


def check_tool_name(name: str) -> str:
    if not isinstance(name, str) or not _TOOL.fullmatch(name):
        rule = TOOL_SCHEMA["description"]
        raise InvalidInput(f"tool name {name!r} is not allowed: use {rule}")
    return name


def check_person(what: str, name: str) -> str:
    """A person's name (a user, an agent's owner), as kept: free text, not blank, at most
    MAX_PERSON characters (PostgreSQL refuses a longer one: a 500 where a 400 is due)."""
    if len(name) > MAX_PERSON:  # as given, as the API's document counts it
        raise InvalidInput(f"{what}'s name is {len(name)} characters; at most {MAX_PERSON}")
    if not name.strip():
        raise InvalidInput(f"{what} needs a name")
    return name.strip()


def check_identifier(kind: str, name: str) -> str:
    """An effect or a role: a lowercase identifier (`external`, `policy-author`)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidInput(
            f"{kind} {name!r} is not allowed: use a lowercase identifier such as 'external'"
        )
    return name
