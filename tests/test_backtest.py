"""Backtests replay recorded decisions on their recorded context: the active bundle changes
nothing, and a bundle with one extra forbid changes exactly the decisions it covers.

The Guard's backtests run twice: on an embedded Guard, and on a remote one speaking to
`tether serve` (conftest.py's `open_guard`); the command's own test runs the CLI on a home."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES, OpenGuard, acme
from test_cli import run_cli

from tether.model import Effect

FORBID_SECRETS = """
@id("no-secret-subjects")
@reason("no secrets by mail")
forbid (principal, action == Action::"send_email", resource)
when { context.args has subject && context.args.subject like "*secret*" };
"""


@pytest.fixture
def guard(open_guard: OpenGuard, home: Path) -> Iterator[Any]:
    """conftest's `acme`, on a Guard of the test's mode."""
    with open_guard(home) as g:
        acme(g)
        yield g


def _traffic(guard: Any) -> None:
    with guard.task(
        workspace="acme",
        agent="coder",
        user="alice",
        request="mail",
        tools=["send_email", "read_file"],
    ) as task:
        for i in range(60):
            to = ("bob@acme.com", "eve@evil.io", "ceo@acme.com")[i % 3]
            subject = "the secret plan" if i % 4 == 0 else f"update {i}"
            task.authorize("send_email", {"to": to, "subject": subject})
            task.authorize("read_file", {"path": f"/repo/{i}"})
        task.authorize("delete_everything", {})  # outside the task: never reached the policies


def test_the_active_bundle_changes_nothing(guard: Any) -> None:
    _traffic(guard)
    report = guard.backtest("acme", guard.check_policies("acme", POLICIES), since=0)
    assert report.replayed == 120 and report.not_replayable == 1
    assert report.changes == [] and report.unfaithful == []


def test_one_extra_forbid_changes_exactly_the_decisions_it_covers(guard: Any) -> None:
    _traffic(guard)
    candidate = guard.check_policies("acme", {**POLICIES, "secrets.cedar": FORBID_SECRETS})
    report = guard.backtest("acme", candidate, since=0)
    expected = {
        r.id
        for r in guard.decisions("acme", limit=1000)
        if r.tool == "send_email"
        and "secret" in json.loads(r.args)["subject"]
        and r.effect is not Effect.DENY
    }
    assert expected and {c.decision_id for c in report.changes} == expected
    assert {c.after for c in report.changes} == {Effect.DENY}
    assert list(report.by_policy()) == ["no-secret-subjects"]
    assert all("no secrets by mail" in c.reason for c in report.changes)


def test_the_command_reports_and_exits_by_outcome(tmp_path: Path) -> None:
    # Not a Guard test: the CLI on a home of its own, in one mode only.
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0
    for args in (
        ["send_email", '{"to": "bob@acme.com", "subject": "hi"}'],
        ["read_file", '{"path": "/repo/a"}'],
    ):
        run_cli(home, "check", "acme", "coder", args[0], "--user", "alice", "--args", args[1])
    policies = home / "workspaces" / "acme" / "policies"
    same = run_cli(home, "policy", "backtest", str(policies), "--workspace", "acme")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "replayed 2 decisions" in same.stdout and "0 would change" in same.stdout
    (policies / "stricter.cedar").write_text(
        '@id("no-mail") forbid (principal, action == Action::"send_email", resource);'
    )
    changed = run_cli(home, "policy", "backtest", str(policies), "--workspace", "acme", "--json")
    assert changed.returncode == 3, changed.stderr
    report = json.loads(changed.stdout)
    assert report["replayed"] == 2 and list(report["by_policy"]) == ["no-mail"]
    assert report["changes"][0]["before"] == "allow" and report["changes"][0]["after"] == "deny"
