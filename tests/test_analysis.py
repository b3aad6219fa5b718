"""Static policy analysis: which agents a policy can matter for, which context it reads."""

from __future__ import annotations

import cedarpy
import pytest

from tether.model import Agent
from tether.policy.analysis import ALL, can_apply_to, context_paths, merge, prune

CODER = Agent(
    workspace="acme", name="coder", kind="coder", owner="alice@acme.com", spiffe_id="spiffe://x"
)


def template(text: str) -> object:
    (only,) = cedarpy.policies_to_pst(text).static_policies.values()
    return only


@pytest.mark.parametrize(
    ("text", "applies"),
    [
        ("permit (principal, action, resource);", True),
        ('permit (principal == Agent::"coder", action, resource);', True),
        ('permit (principal == Agent::"planner", action, resource);', False),
        ('permit (principal in Workspace::"acme", action, resource);', True),
        ('permit (principal in Workspace::"beta", action, resource);', False),
        ('permit (principal, action, resource) when { principal.kind == "coder" };', True),
        ('permit (principal, action, resource) when { principal.kind == "monitor" };', False),
        ('permit (principal, action, resource) when { "monitor" == principal.kind };', False),
        ('permit (principal, action, resource) when { principal.kind != "coder" };', False),
        ('permit (principal, action, resource) unless { principal.kind == "coder" };', False),
        ('permit (principal, action, resource) unless { principal.kind == "monitor" };', True),
        (
            'permit (principal, action, resource) when { ["a", "coder"].contains(principal.kind) };',
            True,
        ),
        (
            'permit (principal, action, resource) when { ["a", "b"].contains(principal.kind) };',
            False,
        ),
        ('permit (principal, action, resource) when { principal == Agent::"planner" };', False),
        ('permit (principal, action, resource) when { principal in Workspace::"beta" };', False),
        # The agent-decided conjunct comes after one that reads the context: it could error first.
        (
            'forbid (principal, action, resource) when { context.args.n + 1 > 0 && principal.kind == "x" };',
            True,
        ),
        # ... but once an agent-decided conjunct is false, nothing after it runs.
        (
            'forbid (principal, action, resource) when { principal.kind == "x" && context.args.n + 1 > 0 };',
            False,
        ),
        (
            'permit (principal, action, resource) when { principal.kind == "coder" } '
            'when { principal.owner == "bob@acme.com" };',
            False,
        ),
        (
            'permit (principal, action, resource) when { principal.kind == "coder" || context.x };',
            True,
        ),
        (
            'permit (principal, action, resource) when { principal.kind == "x" || principal.name == "y" };',
            False,
        ),
        ('permit (principal, action, resource) when { !(principal.kind == "coder") };', False),
        ("permit (principal, action, resource) when { principal is Agent };", True),
        (
            'permit (principal, action, resource) when { principal.kind like "cod*" };',
            True,
        ),  # unknown
    ],
)
def test_agent_selection(text: str, applies: bool) -> None:
    assert can_apply_to(template(text), CODER) is applies


def test_context_paths() -> None:
    paths = context_paths(
        template(
            "permit (principal, action, resource) "
            'when { context.args.to like "*@acme.com" && context.args has cc } '
            "unless { context.approved };"
        )
    )
    assert paths == {"args": {"to": ALL, "cc": ALL}, "approved": ALL}
    assert context_paths(template("permit (principal, action, resource);")) == {}
    whole = 'permit (principal, action, resource) when { context == {"a": 1} };'
    assert context_paths(template(whole)) is ALL
    nested = "permit (principal, action, resource) when { context.args == {} && context.args.x };"
    assert context_paths(template(nested)) == {"args": ALL}


def test_merge_and_prune() -> None:
    paths = merge([{"args": {"to": ALL}}, {"args": {"n": ALL}, "task": {"calls": ALL}}])
    context = {
        "args": {"to": "a", "n": {"__extn": {"fn": "decimal", "arg": "1.0"}}, "body": "x" * 100},
        "task": {"calls": 3, "request": "long text"},
        "approved": False,
    }
    assert prune(context, paths) == {
        "args": {"to": "a", "n": {"__extn": {"fn": "decimal", "arg": "1.0"}}},
        "task": {"calls": 3},
    }
    assert prune(context, ALL) is context
    assert merge([paths, ALL]) is ALL
