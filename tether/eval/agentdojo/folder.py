"""The Tether workspace an evaluation runs in: a workspace folder like any other (workspace.yaml,
catalogue.yaml, policies/), for the suite's tools.

`skeleton` writes a starting folder for a suite: its tools proposed as `tether tool import`
proposes an MCP server's (the worst assumed, every guess marked REVIEW), one assistant acting
for one user with every tool, and a reviewer who answers approvals. The project's own folders
for the workspace and banking suites (workspaces/) began that way and were then written as a
user would: effects, sinks and whose content each output is, and a few rules of their own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from tether.catalogue.mcp_import import propose, to_catalogue_yaml
from tether.control import WorkspaceFolder
from tether.demo import BASELINE
from tether.errors import InvalidInput
from tether.eval.agentdojo.replay import Gate
from tether.eval.agentdojo.suites import VERSION, Suite
from tether.policy.source import read_policy_dir
from tether.sdk import Guard
from tether.store import sqlite_url

OURS = Path(__file__).resolve().parent / "workspaces"
AGENT = "assistant"
ALLOW_ALL = {
    "allow-all.cedar": '@id("allow-all")\n@reason("allow-all: the harness check")\n'
    "permit (principal, action, resource);\n"
}


def ours(suite: str) -> Path | None:
    """The project's folder for `suite`, if it has one (travel and slack are held out)."""
    folder = OURS / suite
    return folder if folder.is_dir() else None


def skeleton(suite: Suite, target: Path) -> None:
    """Write a starting workspace folder for `suite` at `target` (which must not exist)."""
    if target.exists():
        raise InvalidInput(f"{target} exists already")
    workspace = f"agentdojo-{suite.name}"
    listed = [
        {
            "name": tool.name,
            "description": tool.description.split("\n\n")[0].strip(),
            "inputSchema": tool.parameters.model_json_schema(),
        }
        for tool in suite.tasks.tools
    ]
    proposals = propose({"tools": listed}, workspace)
    catalogue = to_catalogue_yaml(proposals, f"AgentDojo {VERSION}, suite {suite.name}")
    # A tool that cannot be registered as proposed is commented out: grant it once it is written.
    granted = [p.name for p in proposals if p.tool is not None]
    spec = {
        "name": workspace,
        "agents": [{"name": AGENT, "kind": "assistant", "owner": "user@example.com"}],
        "users": [{"name": "user"}, {"name": "reviewer", "roles": ["admin", "approver"]}],
        "grants": [{"user": "user", "agent": AGENT, "tools": granted}],
    }
    (target / "policies").mkdir(parents=True)
    (target / "workspace.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100))
    (target / "catalogue.yaml").write_text(catalogue)
    (target / "policies" / "assistant.cedar").write_text(
        "// The assistant may use the tools its user granted it; the baseline pack (added by\n"
        "// `tether eval agentdojo` unless --no-baseline) says when it may not.\n"
        '@id("assistant-tools")\n@reason("the assistant uses the tools its user granted")\n'
        'permit (principal, action, resource) when { principal.kind == "assistant" };\n'
    )


def prepare(home: Path, folder: Path, *, baseline: bool = True, allow_all: bool = False) -> Gate:
    """A Guard on a new store in `home` with the folder's workspace applied: its policies and
    the baseline pack, or with `allow_all` one policy permitting everything."""
    read = WorkspaceFolder.read(folder)
    spec = read.spec()
    policies: dict[str, str] = dict(read.policies or {})
    if allow_all:
        policies = dict(ALLOW_ALL)
    elif baseline:
        policies |= {f"baseline/{name}": text for name, text in read_policy_dir(BASELINE).items()}
    agent = next((a for a in spec.agents if a.name == AGENT), None)
    grant = next((g for g in spec.grants if g.agent == AGENT), None)
    if agent is None or grant is None:
        raise InvalidInput(f"{folder}/workspace.yaml: no agent {AGENT!r} with a grant")
    approver = next(
        (
            u.name
            for u in spec.users
            if {"admin", "approver"} <= set(u.roles) and u.name != grant.user
        ),
        None,
    )
    if approver is None:
        raise InvalidInput(
            f"{folder}/workspace.yaml: no user but {grant.user} with roles admin and approver"
            " (the person who answers approvals in the oracle mode)"
        )
    # Its own SQLite store, whatever TETHER_DB names: an evaluation's throwaway workspaces and
    # hundreds of agents have no place in a real store.
    guard = Guard.embedded(home, db=sqlite_url(home))
    try:
        guard.apply_directory(msgspec.structs.replace(read, policies=policies))
    except BaseException:
        guard.close()
        raise
    return Gate(
        guard,
        spec.name,
        agent=AGENT,
        kind=agent.kind,
        owner=agent.owner,
        user=grant.user,
        tools=tuple(grant.tools),
        approver=approver,
    )


__all__ = ["ALLOW_ALL", "OURS", "ours", "prepare", "skeleton"]
