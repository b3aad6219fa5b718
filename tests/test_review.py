"""Access review: grants against use, idle grants, silent policies, owners, suspended agents."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_cli import run_cli

from tether import Guard
from tether.audit.review import review, to_markdown

POLICIES = {
    "p.cedar": """
@id("reads") permit (principal, action == Action::"read_file", resource);
@id("mail") permit (principal, action == Action::"send_email", resource);
@id("never") forbid (principal, action == Action::"send_email", resource) when { principal.name == "nobody" };
"""
}


def test_review_finds_what_an_owner_should_tighten(home: Path) -> None:
    with Guard.embedded(home=home) as guard:
        guard.add_workspace("acme")
        guard.add_user("acme", "alice")
        guard.register_agent("acme", "coder", kind="coder", owner="alice")
        guard.register_agent("acme", "ghost", kind="coder", owner="somebody@elsewhere.example")
        guard.register_agent("acme", "parked", kind="coder", owner="alice")
        for tool in ("read_file", "send_email", "delete_branch"):
            guard.register_tool("acme", tool, effects=["read"])
        guard.activate_policies("acme", POLICIES)
        used = guard.grant(
            "acme", user="alice", agent="coder", tools=["read_file", "send_email", "delete_branch"]
        )
        idle = guard.grant("acme", user="alice", agent="ghost", tools=["read_file"])
        guard.grant("acme", user="alice", agent="parked", tools=["read_file"])
        guard.suspend_agent("acme", "parked")
        with guard.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="",
            tools=["read_file", "send_email"],
        ) as t:
            t.authorize("read_file", {})
            t.authorize("send_email", {})
        now = time.time()
        result = review(guard.store, "acme", since=now - 3600, until=now + 1)
    coder = next(a for a in result.agents if a.agent == "coder")
    assert coder.granted == ["delete_branch", "read_file", "send_email"]
    assert coder.used == ["read_file", "send_email"] and coder.unused == ["delete_branch"]
    assert coder.calls == 2
    assert idle.id in result.idle_grants and used.id not in result.idle_grants
    assert result.silent_policies == ["never"]
    text = "\n".join(result.findings)
    assert "coder may hold delete_branch but used none of it" in text
    assert "ghost's owner 'somebody@elsewhere.example' is not a user of acme" in text
    assert "parked is suspended but still holds grants" in text
    assert "policy never decided nothing" in text
    markdown = to_markdown(result)
    assert (
        markdown.startswith("# Access review: acme")
        and "| coder | coder | alice | active | 2 |" in markdown
    )


def test_the_review_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0
    run_cli(
        home,
        "check",
        "acme",
        "coder",
        "read_file",
        "--user",
        "alice",
        "--args",
        '{"path": "/repo/a"}',
    )
    shown = run_cli(home, "review", "acme", "--window", "1d", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    coder = next(a for a in report["agents"] if a["agent"] == "coder")
    assert coder["used"] == ["read_file"] and "write_file" in coder["unused"]
    assert "does not exist" in run_cli(home, "review", "nowhere").stderr
