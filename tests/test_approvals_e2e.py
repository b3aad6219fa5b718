"""End to end, across processes: an agent blocks in `wait` on a destructive call while a person
answers with `tether approvals approve|deny` from another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import run_cli

from tether import Guard
from tether.model import ApprovalStatus
from tether.store import Store

pytestmark = (
    pytest.mark.sqlite
)  # a module-scoped home: on PostgreSQL it needs a database per module

AGENT = """
import json, sys
from tether import Guard


with Guard.embedded(home=sys.argv[1]) as guard:
    with guard.task(workspace="acme", agent="coder", user="alice", request="tidy branches",
                    tools=["delete_branch"]) as task:
        d = task.authorize("delete_branch", {"branch": sys.argv[2]}, wait=60)
        print(json.dumps({"effect": d.effect.value, "reason": d.reason,
                          "approval": d.approval_id}), flush=True)
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("approvals-e2e") / "home"
    assert run_cli(home, "init").returncode == 0
    return home


def pending_request(home: Path, branch: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    store = Store.at_home(home)
    try:
        while time.monotonic() < deadline:
            for request in store.approvals.find(
                workspace="acme", statuses=[ApprovalStatus.PENDING]
            ):
                if json.loads(request.args) == {"branch": branch}:
                    return request.id
            time.sleep(0.1)
    finally:
        store.close()
    raise AssertionError(f"no pending request for branch {branch} within {within} s")


@pytest.mark.parametrize(
    ("answer", "effect", "reason"),
    [
        ("approve", "allow", "coders read, write and test code, and tidy branches"),
        ("deny", "deny", "bob denied this call: keep it"),
    ],
)
def test_an_agent_waits_for_a_person_in_another_process(
    home: Path, answer: str, effect: str, reason: str
) -> None:
    branch = f"feature-{answer}"
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(home), branch],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        request = pending_request(home, branch)
        assert agent.poll() is None  # still waiting
        shown = run_cli(home, "approvals", "list", "acme")
        assert request in shown.stdout.replace("\n", "") and "delete_branch" in shown.stdout
        refused = run_cli(home, "approvals", "approve", request, "--as", "alice")
        assert "alice is the user coder acts for" in refused.stderr  # by default, not on deletions
        answered = run_cli(
            home, "approvals", answer, request, "--as", "bob", "--comment", "keep it"
        )
        assert answered.returncode == 0, answered.stderr
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    result = json.loads(out)
    assert result["effect"] == effect and result["approval"] == request
    assert result["reason"].startswith(reason)
    history = run_cli(home, "approvals", "show", request).stdout
    past = {"approve": "approved", "deny": "denied"}[answer]
    assert "requested by coder" in history and f"{past} by bob: keep it" in history
    if answer == "approve":
        assert "used by coder" in history


def test_the_list_shows_what_the_agent_wrote_as_text(home: Path) -> None:
    with (
        Guard.embedded(home=home) as guard,
        guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["delete_branch"]
        ) as task,
    ):
        # Rich markup, and a Cyrillic "а" posing as a Latin one: shown as text and \u escapes.
        task.authorize("delete_branch", {"branch": "[/x][conceal]evil[/conceal]mаin"})
        listed = run_cli(home, "approvals", "list", "acme")
    assert listed.returncode == 0, listed.stderr
    assert "[conceal]evil[/conceal]m\\u0430in" in listed.stdout.replace("\n", "")
