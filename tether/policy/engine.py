"""Evaluating one call against a bundle, and turning Cedar's answer into Tether's.

Cedar answers Allow or Deny with the determining policies and any evaluation errors. Tether adds:
- fail closed: Cedar skips a policy whose evaluation errors, so an erroring *forbid* would let a
  call through; here it denies, naming the policy and the error;
- step-up: a deny determined only by `@approval` forbids becomes `approval_required`, but only if
  the same call, approved, would be allowed (otherwise an approval could never help);
- shadow: `@mode("shadow")` policies are evaluated beside the enforced ones, the outcome kept for
  the record, never returned as the effect.

A selection whose every policy is in the native fragment (policy/fastpath.py) is decided in
Python with the same semantics; anything the fragment cannot decide exactly goes to Cedar.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy
import msgspec

from tether.model import Agent, Effect, Reason, Stage
from tether.policy.analysis import prune
from tether.policy.bundle import Bundle, FastPlan, Policy
from tether.policy.fastpath import Fallback

_encode = msgspec.json.Encoder().encode
# Cedar names a policy that failed as `p<n>`, the key the bundle gave it (never an author's @id,
# which may contain anything, backticks included).
_ERROR = re.compile(r"^error while evaluating policy `(p\d+)`: ")


@dataclass(frozen=True)
class Outcome:
    effect: Effect
    reasons: tuple[Reason, ...]
    determining: tuple[str, ...]
    approver_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """An enforced outcome, the shadow outcome if shadow policies applied, and the context used."""

    outcome: Outcome
    shadow: Outcome | None
    context_json: bytes


def evaluate(
    bundle: Bundle,
    entities: Any,
    *,
    workspace: str,
    agent: Agent,
    tool: str,
    context: dict[str, Any],
) -> Verdict:
    """Decide one call. `context` must match the tool's context type in the bundle's schema.

    Only the policies that can matter for this tool and agent are evaluated; Cedar is given only
    the parts of the context they read. The verdict keeps the full context for the record.
    """
    selection = bundle.select(tool, agent)
    context_json = _encode(context)  # first: a context that cannot be encoded decides nothing
    if selection.fast is not None:
        enforced_plan, shadow_plan = selection.fast
        try:
            return Verdict(
                outcome=_decide(_native(enforced_plan, agent, tool, context), bundle.policies),
                shadow=(
                    _decide(_native(shadow_plan, agent, tool, context), bundle.policies)
                    if shadow_plan is not None
                    else None
                ),
                context_json=context_json,
            )
        except Fallback:
            pass  # something the native fragment cannot decide exactly: Cedar decides

    seen = prune(context, selection.paths)
    request = {
        "principal": {"type": "Agent", "id": agent.name},
        "action": {"type": "Action", "id": tool},
        "resource": {"type": "Workspace", "id": workspace},
        "context": _encode(seen).decode(),
    }

    def cedar(policy_set: Any) -> Callable[[bool], Outcome]:
        def once(approved: bool) -> Outcome:
            call = request if not approved else dict(request, context=_approved(seen))
            result = cedarpy.is_authorized(call, policy_set, entities)
            return _interpret(result, bundle.by_key, tool, agent.name, context)

        return once

    return Verdict(
        outcome=_decide(cedar(selection.enforced), bundle.policies),
        shadow=(
            _decide(cedar(selection.with_shadow), bundle.policies)
            if selection.with_shadow is not None
            else None
        ),
        context_json=context_json,
    )


def _approved(context: Mapping[str, Any]) -> str:
    return _encode({**context, "approved": True}).decode()


def _decide(once: Callable[[bool], Outcome], policies: Mapping[str, Policy]) -> Outcome:
    """One evaluation, and the step-up rule on top of it."""
    outcome = once(False)
    only_approval = bool(outcome.determining) and all(
        policies[p].annotations.approval for p in outcome.determining
    )
    if outcome.effect is not Effect.DENY or not only_approval:
        return outcome
    retry = once(True)
    if retry.effect is not Effect.ALLOW:
        return retry
    roles = tuple(sorted({policies[p].annotations.approval or "" for p in outcome.determining}))
    return Outcome(Effect.APPROVAL_REQUIRED, outcome.reasons, outcome.determining, roles)


def _native(
    plan: FastPlan, agent: Agent, tool: str, context: Mapping[str, Any]
) -> Callable[[bool], Outcome]:
    """Cedar's semantics over the plan: any satisfied forbid denies, else any satisfied permit
    allows, else deny. Every forbid is evaluated, so one that would error is never skipped."""

    def once(approved: bool) -> Outcome:
        forbids, permits = plan.decide(
            agent, context if not approved else {**context, "approved": True}
        )
        if forbids:
            return _outcome(Effect.DENY, [plan.forbids[i] for i in forbids], context)
        if permits:
            return _outcome(Effect.ALLOW, [plan.permits[i] for i in permits], context)
        return _nothing_permits(tool, agent.name)

    return once


def _outcome(effect: Effect, policies: list[Policy], context: Mapping[str, Any]) -> Outcome:
    """`policies` in bundle order (as plans keep them), so that the first reason is the same
    whichever evaluator decided."""
    reasons = tuple(Reason(Stage.POLICY, p.reason.render(context), p.id) for p in policies)
    return Outcome(effect, reasons, tuple(p.id for p in policies))


def _nothing_permits(tool: str, agent: str) -> Outcome:
    text = f"no policy permits {tool} for agent {agent}"
    return Outcome(Effect.DENY, (Reason(Stage.POLICY, text),), ())


def _interpret(
    result: Any,
    by_key: Mapping[str, Policy],
    tool: str,
    agent: str,
    context: Mapping[str, Any],
) -> Outcome:
    diagnostics = result.diagnostics
    failed_forbids = []
    for error in diagnostics.errors:
        match = _ERROR.match(error)
        policy = by_key.get(match.group(1)) if match else None
        if policy is None:
            failed_forbids.append(error)  # not attributable to a permit: count it against the call
        elif policy.effect == "forbid":
            failed_forbids.append(f"policy {policy.id}: {error[match.end() :]}" if match else error)
    if failed_forbids or result.decision is cedarpy.Decision.NoDecision:
        errors = failed_forbids or list(diagnostics.errors) or ["no decision"]
        text = "policy could not be evaluated, so the call is denied: " + "; ".join(errors)
        return Outcome(Effect.DENY, (Reason(Stage.POLICY, text),), ())

    policies = sorted((by_key[key] for key in diagnostics.reasons), key=lambda p: int(p.key[1:]))
    if result.decision is cedarpy.Decision.Allow:
        return _outcome(Effect.ALLOW, policies, context)
    if not policies:
        return _nothing_permits(tool, agent)
    return _outcome(Effect.DENY, policies, context)
