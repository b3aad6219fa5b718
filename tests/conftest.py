"""Shared fixtures: a real embedded Guard on a temporary home, with a small workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tether import Guard

STARTER = Path(__file__).resolve().parent.parent / "tether" / "starter" / "acme"

EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string"},
        "subject": {"type": "string"},
        "amount": {"type": "number"},
    },
    "required": ["to"],
}

POLICIES = {
    "mail.cedar": """
@id("mail-inside")
@reason("mail inside acme is fine")
permit (principal, action == Action::"send_email", resource)
when { context.args.to like "*@acme.com" };

@id("ceo-needs-approval")
@approval("admin")
@reason("mail to the CEO needs approval")
forbid (principal, action == Action::"send_email", resource)
when { context.args.to == "ceo@acme.com" }
unless { context.approved };

@id("reads-ok")
permit (principal, action in Action::"read", resource);
""",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def guard(home: Path) -> Iterator[Guard]:
    """A workspace `acme` with agent `coder`, tools send_email and read_file, and POLICIES."""
    with Guard.embedded(home=home) as g:
        g.add_workspace("acme")
        g.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        g.register_tool(
            "acme", "send_email", effects=["external"], sinks=["to"], args_schema=EMAIL_SCHEMA
        )
        g.register_tool(
            "acme",
            "read_file",
            effects=["read"],
            args_schema={"type": "object", "properties": {"path": {"type": "string"}}},
        )
        g.activate_policies("acme", POLICIES)
        yield g


@pytest.fixture
def starter(home: Path) -> Iterator[Guard]:
    """The starter workspace `acme` that `tether init` and `tether demo` use."""
    with Guard.embedded(home=home) as g:
        g.apply_directory(STARTER)
        yield g
