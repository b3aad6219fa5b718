"""Turning Cedar's answer into Tether's: reasons, approval, fail-closed errors, shadow mode."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from conftest import POLICIES, sample_context

from tether import Guard
from tether.model import AgentStatus, Effect, Stage
from tether.policy import Verdict, bundle_version, evaluate
from tether.policy.engine import _interpret
from tether.workspace import WorkspaceView

TRIAL = """
@id("trial") @mode("shadow")
forbid (principal, action == Action::"send_email", resource);
"""
FILES = """
@id("no-secrets")
forbid (principal, action == Action::"read_file", resource)
when { context.args has path && context.args.path like "*secret*" };
"""
AMOUNT_SCHEMA = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["to"],
}


def view(guard: Guard) -> WorkspaceView:
    v = guard._views.get("acme")
    assert v is not None
    return v


def decide(guard: Guard, tool: str, args: dict[str, Any], *, approved: bool = False) -> Verdict:
    v = view(guard)
    compiled = v.catalogue.get(tool)
    assert compiled is not None and v.bundle is not None
    context = sample_context(compiled, v.catalogue, args, approved=approved)
    return evaluate(
        v.bundle, v.entities, workspace="acme", agent=v.agents["coder"], tool=tool, context=context
    )


def test_allow_carries_the_permitting_policy_and_its_reason(guard: Guard) -> None:
    outcome = decide(guard, "send_email", {"to": "bob@acme.com"}).outcome
    assert outcome.effect is Effect.ALLOW
    assert outcome.determining == ("mail-inside",)
    assert [r.text for r in outcome.reasons] == ["mail inside acme is fine"]


def test_default_deny_says_nothing_permits(guard: Guard) -> None:
    outcome = decide(guard, "send_email", {"to": "eve@evil.io"}).outcome
    assert outcome.effect is Effect.DENY
    assert outcome.reasons[0].text == "no policy permits send_email for agent coder"


def test_approval_forbid_becomes_approval_required_with_roles(guard: Guard) -> None:
    outcome = decide(guard, "send_email", {"to": "ceo@acme.com"}).outcome
    assert outcome.effect is Effect.APPROVAL_REQUIRED
    assert outcome.approver_roles == ("admin",)
    assert outcome.determining == ("ceo-needs-approval",)
    assert (
        decide(guard, "send_email", {"to": "ceo@acme.com"}, approved=True).outcome.effect
        is Effect.ALLOW
    )


def test_approval_is_not_offered_when_approval_could_not_help(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("gate") @approval("admin")
forbid (principal, action == Action::"send_email", resource) unless { context.approved };
"""
        },
    )
    outcome = decide(guard, "send_email", {"to": "bob@acme.com"}).outcome
    assert outcome.effect is Effect.DENY  # nothing permits it even when approved
    assert "no policy permits" in outcome.reasons[0].text


def test_a_plain_forbid_beside_an_approval_forbid_is_a_deny(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("ok") permit (principal, action, resource);
@id("gate") @approval("admin")
forbid (principal, action == Action::"send_email", resource) unless { context.approved };
@id("never") @reason("never to evil.io")
forbid (principal, action == Action::"send_email", resource)
when { context.args.to like "*@evil.io" };
"""
        },
    )
    outcome = decide(guard, "send_email", {"to": "eve@evil.io"}).outcome
    assert outcome.effect is Effect.DENY
    assert set(outcome.determining) == {"gate", "never"}


def test_a_forbid_that_errors_denies_instead_of_being_skipped(guard: Guard) -> None:
    """Raw Cedar skips a policy whose evaluation errors, so this call would be *allowed* there."""
    guard.register_tool("acme", "count", effects=["write"], args_schema=AMOUNT_SCHEMA)
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("ok") permit (principal, action, resource);
@id("cap") forbid (principal, action == Action::"count", resource)
when { context.args has n && context.args.n + 1 > 10 };
"""
        },
    )
    assert decide(guard, "count", {"to": "x", "n": 3}).outcome.effect is Effect.ALLOW
    overflow = decide(guard, "count", {"to": "x", "n": 2**63 - 1}).outcome
    assert overflow.effect is Effect.DENY
    assert overflow.reasons[0].stage is Stage.POLICY
    assert (
        "could not be evaluated" in overflow.reasons[0].text and "cap" in overflow.reasons[0].text
    )


def test_shadow_policies_are_evaluated_but_never_enforced(guard: Guard) -> None:
    guard.activate_policies(
        "acme",
        {
            "p.cedar": """
@id("ok") permit (principal, action, resource);
@id("trial") @mode("shadow") @reason("would block external mail")
forbid (principal, action in Action::"external", resource);
"""
        },
    )
    verdict = decide(guard, "send_email", {"to": "bob@acme.com"})
    assert verdict.outcome.effect is Effect.ALLOW
    assert verdict.shadow is not None and verdict.shadow.effect is Effect.DENY
    assert verdict.shadow.determining == ("trial",)
    assert decide(guard, "read_file", {"path": "/x"}).shadow is None  # no shadow policy applies


@pytest.mark.parametrize("tool", ["send_email", "read_file"])
def test_context_json_is_what_the_policies_saw(guard: Guard, tool: str) -> None:
    args = {"to": "bob@acme.com"} if tool == "send_email" else {"path": "/repo/a"}
    v = view(guard)
    compiled = v.catalogue.get(tool)
    assert compiled is not None and v.bundle is not None
    context = sample_context(compiled, v.catalogue, args)
    verdict = evaluate(
        v.bundle, v.entities, workspace="acme", agent=v.agents["coder"], tool=tool, context=context
    )
    assert json.loads(verdict.context_json) == context  # the whole context, not Cedar's part


def test_calls_in_the_fragment_are_decided_without_cedar(
    guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cedar(*_: Any) -> Any:
        raise AssertionError("Cedar was called")

    monkeypatch.setattr("tether.policy.engine.cedarpy.is_authorized", no_cedar)
    assert decide(guard, "send_email", {"to": "bob@acme.com"}).outcome.effect is Effect.ALLOW
    ceo = decide(guard, "send_email", {"to": "ceo@acme.com"}).outcome  # step-up: two passes
    assert ceo.effect is Effect.APPROVAL_REQUIRED


class _Result:
    """What cedarpy answers, for the cases a real policy set cannot be made to produce."""

    def __init__(self, decision: Any, errors: list[str], reasons: list[str]) -> None:
        self.decision = decision
        self.diagnostics = type("Diagnostics", (), {"errors": errors, "reasons": reasons})()


@pytest.mark.parametrize(
    ("decision", "errors"),
    [
        (cedarpy.Decision.NoDecision, []),
        (cedarpy.Decision.Allow, ["error in a policy Cedar does not name"]),
    ],
)
def test_an_answer_cedar_cannot_attribute_is_a_deny(
    guard: Guard, decision: Any, errors: list[str]
) -> None:
    bundle = view(guard).bundle
    assert bundle is not None
    outcome = _interpret(_Result(decision, errors, ["p0"]), bundle.by_key, "t", "coder", {})
    assert outcome.effect is Effect.DENY
    assert outcome.reasons[0].text.startswith("policy could not be evaluated")


def test_a_workspace_change_that_leaves_policies_and_catalogue_alone_keeps_their_bundles(
    guard: Guard,
) -> None:
    """Registering an agent, suspending one or adding a user does not compile the policies
    again: the new view is served by the same bundles, enforced and shadow. A change to the
    policies, or to a tool's definition (the schema they are checked against), compiles them."""
    guard.activate_policies("acme", {"trial.cedar": TRIAL}, shadow=True)
    before = view(guard)
    assert before.bundle is not None and before.shadow is not None

    guard.register_agent("acme", "planner", kind="planner", owner="alice@acme.com")
    guard.suspend_agent("acme", "planner")
    guard.add_user("acme", "carol")
    after = view(guard)
    assert after is not before and after.agents["planner"].status is AgentStatus.SUSPENDED
    assert after.bundle is before.bundle and after.shadow is before.shadow

    guard.activate_policies("acme", {**POLICIES, "files.cedar": FILES})
    changed = view(guard)
    assert changed.bundle is not None and changed.bundle.version != before.bundle.version
    assert changed.shadow is before.shadow

    guard.register_tool(
        "acme",
        "read_file",
        effects=["read"],
        args_schema={
            "type": "object",
            "properties": {"path": {"type": "string"}, "lines": {"type": "integer"}},
        },
    )
    retyped = view(guard)
    assert retyped.bundle is not None and retyped.bundle.version != changed.bundle.version
    assert retyped.shadow is not None and retyped.shadow.version != before.shadow.version
    # Each bundle compiled anew is named by the digest of what it holds (the decisions'
    # policy_version), as the version its view was built with said.
    for bundle in (changed.bundle, retyped.bundle, retyped.shadow):
        assert bundle.version == bundle_version(bundle.files, bundle.cedar_schema)
    assert decide(guard, "send_email", {"to": "bob@acme.com"}).outcome.effect is Effect.ALLOW
