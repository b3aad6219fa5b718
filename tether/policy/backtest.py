"""Backtest: replay recorded decisions, with the context each one was decided on, against a
candidate bundle, and report every decision that would come out differently.

A record keeps the exact context its policies saw, so the replay asks the very question the
enforced bundle answered then. Both answers are computed now, on the same context: the recorded
bundle's (by its version; a check that the replay is faithful) and the candidate's. Decisions
that never reached the policy stage (no token, outside the task's scope, bad arguments) are not
the policies' to change and are counted apart. So are decisions whose record had its arguments
cut by the workspace's redaction setting (tether/audit/redaction.py): re-deciding them on the
cut arguments would answer a question nobody asked, so they are counted, never guessed at.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.audit.redaction import is_redacted
from tether.model import Agent, DecisionRecord, Effect, Stage
from tether.policy.bundle import Bundle
from tether.policy.engine import Outcome, evaluate

REPLAYABLE = (Stage.POLICY, Stage.APPROVAL)


@dataclass(frozen=True)
class Change:
    decision_id: str
    ts: float
    agent: str
    tool: str
    before: Effect
    after: Effect
    policies: tuple[str, ...]  # what decides the candidate's answer and did not decide before
    reason: str


@dataclass
class BacktestReport:
    replayed: int = 0
    not_replayable: int = 0  # decided before the policy stage
    redacted: int = 0  # reached the policies, but the record's arguments were cut: not replayable
    unfaithful: list[str] = field(default_factory=list)  # the recorded bundle now answers otherwise
    changes: list[Change] = field(default_factory=list)

    def by_policy(self) -> dict[str, list[Change]]:
        """Changes grouped by the policy that made the difference (a change to allow has none
        determining the deny any more: it is grouped under the policies that now permit)."""
        groups: dict[str, list[Change]] = defaultdict(list)
        for change in self.changes:
            for policy in change.policies or ("(no policy)",):
                groups[policy].append(change)
        return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def backtest(
    records: Iterable[DecisionRecord],
    candidate: Bundle,
    recorded: Callable[[str], Bundle | None],
    *,
    entities: Any,
    agents: Mapping[str, Agent],
) -> BacktestReport:
    """`recorded(version)`: the bundle a record was decided by, compiled (None if unknown)."""
    report = BacktestReport()
    for record in records:
        agent = agents.get(record.agent or "")
        if record.stage not in REPLAYABLE or record.context is None or agent is None:
            report.not_replayable += 1
            continue
        context = json.loads(record.context)
        if is_redacted(context):
            report.redacted += 1
            continue
        context["approved"] = False  # the question the policies were asked, before any approval
        report.replayed += 1
        then = recorded(record.policy_version or "")
        if then is not None:
            original = _decide(then, entities, record, agent, context)
            if original.effect is not policy_effect(record):
                report.unfaithful.append(record.id)
        else:
            original = None
        before = original.effect if original is not None else policy_effect(record)
        after = _decide(candidate, entities, record, agent, context)
        if after.effect is not before:
            # The difference is made by what decides now and did not then.
            then_deciding = set(original.determining) if original is not None else set()
            new = tuple(p for p in after.determining if p not in then_deciding)
            report.changes.append(
                Change(
                    decision_id=record.id,
                    ts=record.ts,
                    agent=agent.name,
                    tool=record.tool,
                    before=before,
                    after=after.effect,
                    policies=new or after.determining,
                    reason="; ".join(r.text for r in after.reasons),
                )
            )
    return report


def _decide(
    bundle: Bundle, entities: Any, record: DecisionRecord, agent: Agent, context: dict[str, Any]
) -> Outcome:
    return evaluate(
        bundle,
        entities,
        workspace=record.workspace or "",
        agent=agent,
        tool=record.tool,
        context=context,
    ).outcome


def policy_effect(record: DecisionRecord) -> Effect:
    """What the policies answered, as recorded: a call allowed by spending an approval, or
    denied by a person at the approval stage, had been `approval_required`."""
    if record.approval_id is not None or record.stage is Stage.APPROVAL:
        return Effect.APPROVAL_REQUIRED
    return Effect(record.effect)


def shadow_disagrees(record: DecisionRecord) -> bool:
    """Whether the shadow bundle would have answered this call otherwise than the policies
    that decided it."""
    bundle = json.loads(record.shadow).get("bundle") if record.shadow else None
    return bundle is not None and bundle.get("effect") != policy_effect(record).value
