"""Access review: what each agent may do against what it did, over a window of the log.

The findings an owner acts on: tools granted but not used (narrow the grant), grants nothing used
(revoke them), policies that decided nothing (dead or mis-scoped rules), agents whose owner is not
a person of the workspace, and suspended agents still holding grants. Read-only: it suggests, a
person decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tether.model import AgentStatus, Effect
from tether.policy.source import policy_sources
from tether.store import Store


@dataclass
class AgentReview:
    agent: str
    kind: str
    owner: str
    status: str
    granted: list[str]  # every tool some live grant lets it hold
    used: list[str]  # the tools it was allowed to call in the window
    unused: list[str]
    calls: int
    denied: int
    approvals: int


@dataclass
class Review:
    workspace: str
    since: float
    until: float
    agents: list[AgentReview] = field(default_factory=list)
    idle_grants: list[str] = field(default_factory=list)  # live, no task in the window
    silent_policies: list[str] = field(default_factory=list)  # decided nothing in the window
    findings: list[str] = field(default_factory=list)


def review(store: Store, workspace: str, *, since: float, until: float) -> Review:
    result = Review(workspace, since, until)
    snapshot = store.snapshot(workspace)
    if snapshot is None:
        return result
    users = {u.name for u in store.users(workspace)}
    grants = [
        g
        for g in store.credentials.grants(workspace)
        if g.revoked_at is None and g.expires_at > until
    ]
    tally = store.decision_counts(
        workspace, since=since, until=until, by=("agent", "tool", "effect")
    )
    tasks_by_grant = store.grants_used(workspace, since=since, until=until)
    deciding = {
        reason["policy"]
        for reasons in store.decision_reasons(workspace, since=since, until=until)
        for reason in json.loads(reasons)
        if reason.get("policy")
    }
    for agent in snapshot.agents:
        held = sorted({t for g in grants if agent.name in (g.agent, *g.may_act) for t in g.tools})
        mine = [(tool, Effect(effect), n) for who, tool, effect, n in tally if who == agent.name]
        used = sorted({tool for tool, effect, _ in mine if effect is Effect.ALLOW})
        unused = [t for t in held if t not in used]
        result.agents.append(
            AgentReview(
                agent=agent.name,
                kind=agent.kind,
                owner=agent.owner,
                status=agent.status.value,
                granted=held,
                used=used,
                unused=unused,
                calls=sum(n for _, _, n in mine),
                denied=sum(n for _, effect, n in mine if effect is Effect.DENY),
                approvals=sum(n for _, effect, n in mine if effect is Effect.APPROVAL_REQUIRED),
            )
        )
        if unused:
            result.findings.append(
                f"{agent.name} may hold {', '.join(unused)} but used none of it: narrow its "
                "grants (or its ceiling)"
            )
        if agent.owner not in users and agent.owner.split("@")[0] not in users:
            result.findings.append(
                f"{agent.name}'s owner {agent.owner!r} is not a user of {workspace}: who answers "
                "for it?"
            )
        if agent.status is AgentStatus.SUSPENDED and held:
            result.findings.append(
                f"{agent.name} is suspended but still holds grants: revoke them if it stays off"
            )
    for grant in grants:
        if grant.id not in tasks_by_grant:
            result.idle_grants.append(grant.id)
            result.findings.append(
                f"grant {grant.id} ({grant.user} -> {grant.agent}) started no task in the "
                "window: revoke it?"
            )
    if snapshot.bundle is not None:
        ids = sorted(set(policy_sources(snapshot.bundle.files)) - deciding)
        result.silent_policies = ids
        for policy in ids:
            result.findings.append(f"policy {policy} decided nothing in the window")
    return result


def to_markdown(result: Review) -> str:
    lines = [f"# Access review: {result.workspace}", ""]
    lines += ["| agent | kind | owner | status | calls | denied | approvals | granted | used |"]
    lines += ["|---|---|---|---|---:|---:|---:|---|---|"]
    for a in result.agents:
        lines.append(
            f"| {a.agent} | {a.kind} | {a.owner} | {a.status} | {a.calls} | {a.denied} | "
            f"{a.approvals} | {', '.join(a.granted) or '-'} | {', '.join(a.used) or '-'} |"
        )
    lines += ["", "## Findings", ""]
    lines += [f"- {finding}" for finding in result.findings] or ["- none"]
    return "\n".join(lines) + "\n"
