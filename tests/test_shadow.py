"""Shadow bundles: a candidate evaluated beside the enforced bundle on every call, its answer
recorded, never deciding (DESIGN.md: "A shadow result can never change an enforced decision").

Every test runs twice: on an embedded Guard, and on a remote one speaking to `tether serve`
(conftest.py's `open_guard`), reading the decision log through `guard.decisions`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES, OpenGuard, acme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run_cli

from tether.model import Effect

CANDIDATES = {
    "permit-all": "permit (principal, action, resource);",
    "forbid-all": '@id("stop") forbid (principal, action, resource);',
    "forbid-mail-to-bob": '@id("no-bob") forbid (principal, action == Action::"send_email", resource) when { context.args.to == "bob@acme.com" };',
    "nothing": '@id("none") forbid (principal, action, resource) when { false };',
    "approval": '@id("ask") @approval("admin") forbid (principal, action == Action::"send_email", resource) unless { context.approved };\npermit (principal, action, resource);',
}
CALLS = [
    ("send_email", {"to": "bob@acme.com"}),
    ("send_email", {"to": "eve@evil.io"}),
    ("send_email", {"to": "ceo@acme.com"}),
    ("read_file", {"path": "/a"}),
]


@pytest.fixture
def guard(open_guard: OpenGuard, home: Path) -> Iterator[Any]:
    """conftest's `acme`, on a Guard of the test's mode."""
    with open_guard(home) as g:
        acme(g)
        yield g


def decide(guard: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[Effect]:
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email", "read_file"]
    ) as task:
        return [task.authorize(tool, args).effect for tool, args in calls]


def test_the_shadow_bundle_is_recorded_and_decides_nothing(guard: Any) -> None:
    enforced = decide(guard, CALLS)
    guard.activate_policies("acme", {"s.cedar": CANDIDATES["forbid-mail-to-bob"]}, shadow=True)
    assert decide(guard, CALLS) == enforced
    records = list(reversed(guard.decisions("acme", limit=len(CALLS))))
    shadows = [json.loads(r.shadow or "{}")["bundle"] for r in records]
    assert [s["effect"] for s in shadows] == ["deny", "deny", "deny", "deny"]  # nothing permits
    assert shadows[0]["determining"] == ["no-bob"]
    disagreeing = [
        r.id
        for r, s in zip(records, shadows, strict=True)
        if s["effect"] != ("approval_required" if r.approval_id else r.effect)
    ]
    # Bob's mail and the read were allowed, the CEO's mail asked for approval: all denied here.
    assert disagreeing == [records[0].id, records[2].id, records[3].id]
    guard.stop_shadow("acme")
    decide(guard, CALLS[:1])
    assert guard.decisions("acme", limit=1)[0].shadow is None


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    candidate=st.sampled_from(sorted(CANDIDATES)),
    calls=st.lists(st.sampled_from(CALLS), min_size=1, max_size=6),
)
def test_a_shadow_never_changes_an_enforced_effect(
    guard: Any, candidate: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    guard.stop_shadow("acme")
    without = decide(guard, calls)
    guard.activate_policies("acme", {"candidate.cedar": CANDIDATES[candidate]}, shadow=True)
    assert decide(guard, calls) == without


def test_a_shadow_that_stops_compiling_is_dropped_not_enforced(guard: Any) -> None:
    guard.register_tool(
        "acme",
        "pay",
        effects=["financial"],
        args_schema={
            "type": "object",
            "properties": {"amount": {"type": "number"}},
            "required": ["amount"],
        },
    )
    guard.grant("acme", user="alice", agent="coder", tools=["pay", "send_email", "read_file"])
    guard.activate_policies(
        "acme", {**POLICIES, "pay.cedar": 'permit (principal, action == Action::"pay", resource);'}
    )
    guard.activate_policies(
        "acme",
        {
            "s.cedar": 'forbid (principal, action == Action::"pay", resource) when { context.args.amount.greaterThan(decimal("1.0")) };'
        },
        shadow=True,
    )
    # The catalogue changes under the shadow: `amount` is gone, so it no longer compiles.
    guard.register_tool(
        "acme", "pay", effects=["financial"], args_schema={"type": "object", "properties": {}}
    )
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["pay"]
    ) as task:
        assert task.authorize("pay", {}).allowed
    assert guard.decisions("acme", limit=1)[0].shadow is None


def test_the_disagreements_are_listed(guard: Any, home: Path) -> None:
    guard.activate_policies("acme", {"s.cedar": CANDIDATES["forbid-mail-to-bob"]}, shadow=True)
    decide(guard, CALLS)
    # The command reads the store the Guard decided on (the service's, in remote mode).
    listed = run_cli(home, "audit", "query", "--disagreements", "--json")
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(json.loads(r["args"]).get("to", r["tool"]) for r in shown) == [
        "bob@acme.com",
        "ceo@acme.com",
        "read_file",
    ]
