"""Evaluating one call against a bundle, and turning Cedar's answer into Tether's.

Cedar answers Allow or Deny with the determining policies and any evaluation errors. Tether adds:
- fail closed: Cedar skips a policy whose evaluation errors, so an erroring *forbid* would let a
  call through; here it denies, naming the policy and the error;
- step-up: a deny determined only by `@approval` forbids becomes `approval_required`, but only if
  the same call, approved, would be allowed (otherwise an approval could never help);
- shadow: `@mode("shadow")` policies are evaluated beside the enforced ones, the outcome kept for
  the record, never returned as the effect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy
import msgspec

from tether.model import Agent, Effect, Reason, Stage
from tether.policy.analysis import prune
from tether.policy.bundle import Bundle, Policy

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

    Cedar sees only the policies that can matter for this tool and agent, and only the parts of
    the context they read; the verdict keeps the full context for the record.
    """
    selection = bundle.select(tool, agent)
    seen = prune(context, selection.paths)
    request = {
        "principal": {"type": "Agent", "id": agent.name},
        "action": {"type": "Action", "id": tool},
        "resource": {"type": "Workspace", "id": workspace},
        "context": _encode(seen).decode(),
    }
    name = agent.name

    def decide(policy_set: Any) -> Outcome:
        outcome = _interpret(
            cedarpy.is_authorized(request, policy_set, entities), bundle.by_key, tool, name
        )
        if outcome.effect is Effect.DENY and _only_approval(outcome, bundle.policies):
            approved = dict(request, context=_encode({**seen, "approved": True}).decode())
            retry = _interpret(
                cedarpy.is_authorized(approved, policy_set, entities), bundle.by_key, tool, name
            )
            if retry.effect is Effect.ALLOW:
                roles = tuple(
                    sorted(
                        {bundle.policies[p].annotations.approval or "" for p in outcome.determining}
                    )
                )
                return Outcome(
                    Effect.APPROVAL_REQUIRED, outcome.reasons, outcome.determining, roles
                )
            return retry
        return outcome

    enforced = decide(selection.enforced)
    shadow = decide(selection.with_shadow) if selection.with_shadow is not None else None
    return Verdict(outcome=enforced, shadow=shadow, context_json=_encode(context))


def _only_approval(outcome: Outcome, policies: Mapping[str, Policy]) -> bool:
    return bool(outcome.determining) and all(
        policies[p].annotations.approval for p in outcome.determining
    )


def _interpret(result: Any, by_key: Mapping[str, Policy], tool: str, agent: str) -> Outcome:
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

    policies = [by_key[key] for key in diagnostics.reasons]
    determining = tuple(p.id for p in policies)
    reasons = tuple(Reason(Stage.POLICY, p.reason, p.id) for p in policies)
    if result.decision is cedarpy.Decision.Allow:
        return Outcome(Effect.ALLOW, reasons, determining)
    if not determining:
        text = f"no policy permits {tool} for agent {agent}"
        return Outcome(Effect.DENY, (Reason(Stage.POLICY, text),), ())
    return Outcome(Effect.DENY, reasons, determining)
