"""Approvals and credentials in the chained audit log: what people and services did beside the
decisions is evidence too (issue 6: "one record per decision, and per approval and credential
event"), chained, checkpointed and verified like the decisions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_approvals import guard, task  # noqa: F401 - the approvals workspace, as a fixture
from test_cli import run_cli

from tether import Guard
from tether.audit import verify
from tether.model import AuditEvent
from tether.store import DB_FILE


@pytest.fixture
def mode() -> str:
    """The approvals workspace, embedded only: these tests read the log in the store itself."""
    return "embedded"


def kinds(events: list[AuditEvent], subject: str) -> list[str]:
    return [e.kind for e in reversed(events) if e.subject == subject]


def test_an_approvals_life_is_in_the_chained_log(guard: Guard) -> None:  # noqa: F811
    with task(guard) as t:
        asked = t.authorize("delete_branch", {"branch": "old"})
        assert asked.approval_id is not None
        guard.approve(asked.approval_id, approver="bob", comment="fine")
        used = t.authorize("delete_branch", {"branch": "old"})
        assert used.allowed
    events = guard.store.audit.events(limit=1000)
    assert kinds(events, asked.approval_id) == [
        "approval.requested",
        "approval.approved",
        "approval.used",
    ]
    approved = next(e for e in events if e.kind == "approval.approved")
    assert approved.actor == "bob" and approved.workspace == "acme"
    detail = json.loads(approved.detail)
    assert detail["tool"] == "delete_branch" and detail["detail"] == "fine"
    assert detail["task"] == t.id and len(detail["call_hash"]) == 64
    assert verify(guard.store, guard.credentials.keyring).intact


def test_tokens_issued_and_revoked_are_in_the_chained_log(guard: Guard) -> None:  # noqa: F811
    with task(guard) as t:
        task_id = t.id
    events = guard.store.audit.events(limit=1000)
    issued = [e for e in events if e.kind == "credential.issued"]
    assert issued and all(e.actor == "coder" and e.workspace == "acme" for e in issued)
    claims = json.loads(issued[-1].detail)
    assert claims["task"] == task_id and claims["user"] == "alice" and claims["use"] == "task"
    assert claims["key"]  # the DPoP key thumbprint the token is bound to
    revoked = [e for e in events if e.kind == "credential.revoked" and e.subject == task_id]
    assert [json.loads(e.detail)["revoked"] for e in revoked] == ["task"]  # ended: refused
    grants = [e for e in events if e.kind == "grant.created"]
    assert {e.actor for e in grants} >= {"alice"}


@pytest.mark.sqlite  # edits the SQLite file
def test_an_edited_event_is_found_and_located(guard: Guard, home: Path) -> None:  # noqa: F811
    with task(guard) as t:
        asked = t.authorize("delete_branch", {"branch": "old"})
        assert asked.approval_id is not None
        guard.approve(asked.approval_id, approver="bob")
    approved = next(
        e for e in guard.store.audit.events(limit=1000) if e.kind == "approval.approved"
    )
    with sqlite3.connect(home / DB_FILE) as conn:  # someone rewrites who approved
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = ?", (approved.id,))
    problems = verify(guard.store, guard.credentials.keyring).problems
    assert problems == [
        f"event {approved.id} ({approved.chain} #{approved.chain_seq}) was altered: its hash "
        "does not match its content"
    ]


def test_the_cli_lists_events_by_kind(guard: Guard, home: Path) -> None:  # noqa: F811
    with task(guard) as t:
        asked = t.authorize("delete_branch", {"branch": "old"})
        assert asked.approval_id is not None
        guard.deny(asked.approval_id, approver="bob", comment="not today")
    guard.close()
    result = run_cli(home, "audit", "events", "--kind", "approval", "--json")
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["kind"] for e in listed] == ["approval.denied", "approval.requested"]
    assert listed[0]["actor"] == "bob" and listed[0]["hash"]
    table = run_cli(home, "audit", "events", "--kind", "credential.issued")
    assert table.returncode == 0 and "credential.issued" in table.stdout
    assert "approval." not in table.stdout
