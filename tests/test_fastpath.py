"""The native fast path decides exactly as Cedar does, and is really used.

Two levels: the whole engine on generated bundles (native vs Cedar-only evaluation of the same
bundle), and single conditions on hand-picked edge cases (native vs raw Cedar).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import cedarpy
import pytest
from hypothesis import given
from test_slicing_property import (
    AGENTS,
    SETTINGS,
    Scenario,
    build,
    context_of,
    normalize,
    scenarios,
    shadow_or_enforced,
    verdict,
)

from tether import Guard
from tether.model import Agent
from tether.policy import Bundle
from tether.policy.engine import _native, evaluate
from tether.policy.fastpath import Fallback, Unsupported, compile_condition


def cedar_only(bundle: Bundle) -> Bundle:
    """The same bundle with the native path switched off for every policy."""
    policies = {pid: dataclasses.replace(p, native=None) for pid, p in bundle.policies.items()}
    return dataclasses.replace(
        bundle,
        policies=policies,
        by_key={p.key: p for p in policies.values()},
        slices={t: tuple(policies[p.id] for p in ps) for t, ps in bundle.slices.items()},
    )


def test_native_and_cedar_decide_alike_on_generated_bundles() -> None:
    paths: Counter[str] = Counter()

    @SETTINGS
    @given(scenarios(principals=tuple(AGENTS)))
    def check(scenario: Scenario) -> None:
        world = build(scenario)
        reference = cedar_only(world.bundle)
        for request in scenario.requests:
            context = context_of(world, request)
            selection = world.bundle.select(request.tool, AGENTS[request.principal])
            if selection.fast is None:
                paths["cedar: outside the fragment"] += 1
            else:
                try:
                    _native(selection.fast[0], AGENTS[request.principal], request.tool, context)(
                        False
                    )
                    paths["native"] += 1
                except Fallback:
                    paths["native, fell back to cedar"] += 1
            got = verdict(world.bundle, world, request, context)
            expected = verdict(reference, world, request, context)
            assert normalize(got.outcome) == normalize(expected.outcome)
            # Same order too (bundle order), so the reason shown first does not depend on
            # which evaluator decided.
            assert got.outcome.determining == expected.outcome.determining
            assert normalize(shadow_or_enforced(got)) == normalize(shadow_or_enforced(expected))
            assert got.context_json == expected.context_json

    check()
    # The property means something only if each path was taken often.
    assert paths["native"] >= 40, paths  # observed 91-209 over 30 seeds
    assert paths["cedar: outside the fragment"] >= 40, paths  # observed 107-244


def test_both_evaluators_list_the_deciding_policies_in_bundle_order(guard: Guard) -> None:
    ids = ["zeta", "alpha", "mu", "beta"]  # file order, not alphabetical
    guard.activate_policies(
        "acme",
        {"p.cedar": "\n".join(f'@id("{i}") permit (principal, action, resource);' for i in ids)},
    )
    view = guard._views.get("acme")
    assert view is not None and view.bundle is not None
    coder = view.agents["coder"]
    context = {"args": {"to": "x"}}  # no policy reads it
    assert view.bundle.select("send_email", coder).fast is not None
    assert cedar_only(view.bundle).select("send_email", coder).fast is None  # caches not shared
    for bundle in (view.bundle, cedar_only(view.bundle)):
        got = evaluate(
            bundle, view.entities, workspace="acme", agent=coder, tool="send_email", context=context
        )
        assert got.outcome.determining == tuple(ids)


def test_a_call_the_fragment_cannot_decide_goes_to_cedar(guard: Guard) -> None:
    """Decimal equality is left to Cedar at run time; the answer is Cedar's."""
    guard.activate_policies(
        "acme",
        {
            "p.cedar": '@id("exact") permit (principal, action == Action::"send_email", resource) '
            'when { context.args has amount && context.args.amount == decimal("100.0") };'
        },
    )
    view = guard._views.get("acme")
    assert view is not None and view.bundle is not None
    assert view.bundle.select("send_email", view.agents["coder"]).fast is not None
    with guard.task(
        workspace="acme", agent="coder", user="a", request="", tools=["send_email"]
    ) as task:
        assert task.authorize("send_email", {"to": "x", "amount": 100}).allowed
        assert not task.authorize("send_email", {"to": "x", "amount": 100.5}).allowed


CODER = Agent(workspace="w", name="coder", kind="coder", owner="ann", spiffe_id="spiffe://x/coder")
ENTITIES = cedarpy.Entities.from_json_str(
    json.dumps(
        [
            {
                "uid": {"type": "Agent", "id": "coder"},
                "attrs": {
                    "name": "coder",
                    "kind": "coder",
                    "owner": "ann",
                    "spiffe_id": "spiffe://x/coder",
                },
                "parents": [],
            }
        ]
    )
)
DEC = {"__extn": {"fn": "decimal", "arg": "100.0"}}
CONTEXT = {
    "args": {"s": "a*b/é✓", "n": 5, "flag": True, "amount": DEC, "tags": ["x", "y"]},
    "approved": False,
    "task": {"calls": 3},
}


def cedar_says(condition: str, context: dict[str, Any]) -> bool | None:
    """Whether Cedar finds `when { condition }` true; None when it errors."""
    policies = cedarpy.PolicySet.from_str(
        f"permit (principal, action, resource) when {{ {condition} }};"
    )
    request = {
        "principal": {"type": "Agent", "id": "coder"},
        "action": {"type": "Action", "id": "t"},
        "resource": {"type": "Workspace", "id": "w"},
        "context": json.dumps(context),
    }
    result = cedarpy.is_authorized(request, policies, ENTITIES)
    if result.diagnostics.errors:
        return None
    return result.allowed


def native_says(condition: str, context: dict[str, Any]) -> bool | None:
    (template,) = cedarpy.policies_to_pst(
        f"permit (principal, action, resource) when {{ {condition} }};"
    ).static_policies.values()
    try:
        return compile_condition(template)(CODER, context)
    except Fallback:
        return None


@pytest.mark.parametrize(
    "condition",
    [
        'context.args.s == "a*b/é✓"',
        'context.args.s like "a\\*b*"',  # escaped star is a literal star
        'context.args.s like "a*✓"',
        'context.args.s like "*é*"',
        'context.args.s like "a\\*c*"',
        'context.args.s like ""',
        "context.args.n == 5",
        "context.args.n != 5",
        "context.args.n < 5 || context.args.n >= 5",
        "context.args.flag == true",
        "context.args.flag",
        "!context.args.flag",
        'context.args.amount.greaterThan(decimal("99.9999"))',
        'context.args.amount.lessThanOrEqual(decimal("100.0"))',
        'context.args.amount.greaterThanOrEqual(decimal("100.0001"))',
        'context.args.tags.contains("y")',
        'context.args.tags.contains("z")',
        'context.args.tags.containsAny(["z", "x"])',
        'context.args.tags.containsAny(["z"])',
        'context.args.tags.containsAll(["x", "y"])',
        'context.args.tags.containsAll(["x", 1])',
        "context.args.tags.isEmpty()",
        "context.args.tags.containsAll([])",
        "context.args.tags.containsAny([])",
        "[].isEmpty()",
        '["x", 1, true].contains(context.args.n)',
        "context has task && context.task.calls > 2",
        "context.args has missing",
        "context has args.s",
        "context has args.missing",
        "if context.args.flag then context.args.n == 5 else false",
        'principal.kind == "coder" && principal.owner != "bob"',
        'principal == Agent::"coder"',
        'principal != Agent::"planner"',
        'principal == Workspace::"w"',
        "false && context.args.missing == 1",  # short-circuit: no error
        "true || context.args.missing == 1",
        # Literals never become code: the generated source names them, it does not spell them.
        'context.args.s == "\\") or True or (\\""',
        'context.args.s != "\\") or True or (\\""',
        "context.args.s like \"*__import__('os')*\"",
        "context.args has \"x') or True or ('\"",
        'context.args["s"] == "a*b/é✓"',
    ],
)
def test_conditions_agree_with_cedar(condition: str) -> None:
    assert native_says(condition, CONTEXT) == cedar_says(condition, CONTEXT)


@pytest.mark.parametrize(
    "condition",
    [
        "context.args.missing == 1",  # Cedar errors: missing attribute
        "context.args.flag == 1",  # a bool is never a Long in Cedar; Python says True == 1
        "context.args.n == true",
        'context.args.amount == decimal("100.0")',  # decimal equality is left to Cedar
        "context.args.tags == context.args.tags",  # set equality is left to Cedar
        "context.args.s.containsAll([])",  # not a set: Cedar errors
        "context.args.n.containsAny([])",
    ],
)
def test_what_the_fragment_cannot_decide_exactly_falls_back_or_agrees(condition: str) -> None:
    native = native_says(condition, CONTEXT)
    assert native is None or native == cedar_says(condition, CONTEXT)


def test_bool_and_long_are_never_equal() -> None:
    assert cedar_says("context.args.flag == 1", CONTEXT) is False
    assert native_says("context.args.flag == 1", CONTEXT) is False


@pytest.mark.parametrize(
    "condition",
    [
        "context.args.n + 1 > 0",  # arithmetic can overflow: Cedar's
        'action == Action::"t"',
        'principal in Workspace::"w"',
        "context == {}",
        'resource.name == "w"',
        'context.args.amount.lessThan(decimal("1.00001"))',  # not a valid decimal literal
    ],
)
def test_policies_outside_the_fragment_are_left_to_cedar(condition: str) -> None:
    (template,) = cedarpy.policies_to_pst(
        f"permit (principal, action, resource) when {{ {condition} }};"
    ).static_policies.values()
    with pytest.raises(Unsupported):
        compile_condition(template)
