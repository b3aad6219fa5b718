"""What the framework adapters' tests share: the workspace they decide in (set up with the
adapters' own `register_tool`, so every test also checks that a framework tool's schema, as the
model sees it, is one the catalogue accepts). The Guard comes from conftest's `open_guard`, in
both modes: embedded, and remote through `tether serve`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import conftest

# The shared tests' policies (mail inside acme; the CEO needs approval; reads), and one that
# reads the task's state: what the task read decides what it may send.
POLICIES = {
    **conftest.POLICIES,
    "untrusted.cedar": """
@id("no-mail-after-untrusted")
@reason("no e-mail once the task has read untrusted content")
forbid (principal, action == Action::"send_email", resource)
when { context.task.labels.contains("untrusted") };
""",
}

# name -> how it is catalogued (what the framework's tool cannot say of itself)
CATALOGUE: dict[str, dict[str, Any]] = {
    "send_email": {"effects": ["external"], "sinks": ["to"]},
    "fetch_page": {"effects": ["read"], "output": "untrusted"},
    "read_file": {"effects": ["read"]},
    "flaky": {"effects": ["read"]},
}

OpenGuard = Callable[[Path], AbstractContextManager[Any]]


def set_up(guard: Any, tools: list[Any], register: Callable[..., Any]) -> None:
    """Workspace `acme`: agent `coder`; user `alice`, an admin (so she can answer approvals in
    both modes: remotely an answer is the admin token's owner's); `tools` catalogued with the
    adapter's `register` and delegated by alice to coder; POLICIES in force."""
    guard.add_workspace("acme")
    guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
    guard.add_user("acme", "alice", ["admin"])
    for tool in tools:
        register(guard, tool, workspace="acme", **CATALOGUE[tool.name])
    guard.activate_policies("acme", POLICIES)
    guard.grant("acme", user="alice", agent="coder", tools=[t.name for t in tools])


def start(guard: Any, tools: list[str] | None = None) -> Any:
    return guard.task(
        workspace="acme",
        agent="coder",
        user="alice",
        request="Mail the report to bob@acme.com",
        tools=tools or list(CATALOGUE),
    )
