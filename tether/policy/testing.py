"""Policy tests: cases in a YAML file beside the policies, run against a bundle.

    catalogue: ../catalogue.yaml      # optional; else the workspace's catalogue in the store
    agents:                           # optional; else the workspace's agents in the store
      - {name: coder, kind: coder, owner: alice@acme.com}
    with_policies:                    # optional; added to the bundle for these tests only
      permit-all.cedar: "permit (principal, action, resource);"
    tests:
      - name: coders may e-mail colleagues
        agent: coder
        tool: send_email
        args: {to: bob@acme.com, subject: hi, body: hello}
        expect: allow
        reasons: [coder-emails-team]  # optional: exactly the policies that decided
      - name: deleting a branch needs approval
        agent: coder
        tool: delete_branch
        args: {branch: old}
        expect: approval_required
        approved: false               # optional; true evaluates as if a person approved
        task: {user: alice, request: "...", calls: 3, labels: [untrusted]}  # context.task
        provenance: {to: untrusted}   # optional; a sink not named is `user`
        risk: {level: high, signals: [denials]}               # optional context.risk
        delegation: {depth: 2, delegators: [planner]}         # optional context.delegation
        time: 1767225600              # optional epoch seconds for context.time

Arguments go through the same schema check and conversion as a live call, so a case can also
pin that a malformed call is denied before any policy sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from tether.catalogue import PROVENANCES, ArgumentError, Catalogue, decision_context
from tether.errors import InvalidInput
from tether.identity import agent_spiffe_id
from tether.model import Agent, Effect, Workspace
from tether.policy.bundle import Bundle, compile_bundle
from tether.policy.engine import evaluate
from tether.policy.entities import workspace_entities

TEST_FILE = "tests.yaml"
WORKSPACE = "test"  # the workspace entity cases run in; policies rarely name their own
FIXTURE_TIME = 1767225600.0  # 2026-01-01T00:00:00Z, so results do not depend on the clock


class AgentFixture(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: str
    owner: str = "tests@example.com"


class TaskFixture(msgspec.Struct, forbid_unknown_fields=True):
    id: str = "task_test"
    user: str = "tester"
    request: str = ""
    tools: list[str] | None = None
    calls: int = 0
    allowed: int = 0
    denied: int = 0
    tool_calls: int = 0
    effect_calls: dict[str, int] = msgspec.field(default_factory=dict)
    labels: list[str] = msgspec.field(default_factory=list)


class RiskFixture(msgspec.Struct, forbid_unknown_fields=True):
    level: Literal["low", "medium", "high"] = "low"
    score: int = 0
    signals: list[str] = msgspec.field(default_factory=list)


class DelegationFixture(msgspec.Struct, forbid_unknown_fields=True):
    depth: int = 1
    delegators: list[str] = msgspec.field(default_factory=list)
    grant: str = "grant_test"


class Case(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    agent: str
    tool: str
    expect: Effect
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    reasons: list[str] | None = None
    approved: bool = False
    task: TaskFixture = msgspec.field(default_factory=TaskFixture)
    # Where each sink argument's value came from; a sink not named here counts as `user`.
    provenance: dict[str, Literal["user", "trusted", "untrusted", "unseen"]] = msgspec.field(
        default_factory=dict
    )
    risk: RiskFixture = msgspec.field(default_factory=RiskFixture)
    delegation: DelegationFixture = msgspec.field(default_factory=DelegationFixture)
    time: float = FIXTURE_TIME


class TestFile(msgspec.Struct, forbid_unknown_fields=True):
    tests: list[Case]
    catalogue: str | None = None
    agents: list[AgentFixture] | None = None
    # Policies added to the bundle for these tests only ({file name: Cedar text}): how a pack of
    # forbids is tested under the permits a workspace would have.
    with_policies: dict[str, str] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    effect: Effect
    determining: tuple[str, ...]
    detail: str

    @property
    def passed(self) -> bool:
        if self.effect is not self.case.expect:
            return False
        return self.case.reasons is None or sorted(self.case.reasons) == sorted(self.determining)


def load_test_file(path: str | Path) -> TestFile:
    path = Path(path)
    try:
        return msgspec.yaml.decode(path.read_bytes(), type=TestFile)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


def run_cases(
    bundle: Bundle,
    catalogue: Catalogue,
    agents: list[Agent],
    cases: list[Case],
    workspace: str = WORKSPACE,
) -> list[CaseResult]:
    """Run each case in `workspace` (where `agents` live); a case naming an unknown agent or tool
    fails with that as its detail."""
    ws = Workspace(name=workspace, tenant="default", trust_domain="tether.local", created_at=0.0)
    entities = workspace_entities(ws, agents, bundle.schema)
    by_name = {a.name: a for a in agents}
    return [
        _run(case, bundle=bundle, catalogue=catalogue, entities=entities, agents=by_name)
        for case in cases
    ]


def run_test_text(
    text: str,
    files: dict[str, str],
    catalogue: Catalogue,
    agents: list[Agent],
    workspace: str = WORKSPACE,
) -> list[CaseResult]:
    """A test file's cases (YAML text) against the policy `files` and the file's own
    `with_policies`, typed by `catalogue`, among `agents` (or the file's own `agents:`): a
    candidate tested before anyone activates it (the HTTP API and the console)."""
    try:
        tests = msgspec.yaml.decode(text.encode(), type=TestFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"tests: {exc}") from exc
    bundle = compile_bundle({**files, **tests.with_policies}, catalogue.cedar_schema())
    chosen = fixture_agents(tests.agents, workspace) if tests.agents is not None else agents
    return run_cases(bundle, catalogue, chosen, tests.tests, workspace)


def fixture_agents(fixtures: list[AgentFixture], workspace: str = WORKSPACE) -> list[Agent]:
    return [
        Agent(
            workspace=workspace,
            name=f.name,
            kind=f.kind,
            owner=f.owner,
            spiffe_id=agent_spiffe_id("tether.local", workspace, f.name),
        )
        for f in fixtures
    ]


def _run(
    case: Case, *, bundle: Bundle, catalogue: Catalogue, entities: Any, agents: dict[str, Agent]
) -> CaseResult:
    tool = catalogue.get(case.tool)
    agent = agents.get(case.agent)
    if agent is None:
        return CaseResult(case, Effect.DENY, (), f"unknown agent {case.agent!r}")
    if tool is None:
        return CaseResult(case, Effect.DENY, (), f"tool {case.tool!r} is not in the catalogue")
    try:
        args = tool.cedar_args(case.args)
    except ArgumentError as exc:
        return CaseResult(case, Effect.DENY, (), f"arguments refused: {exc}")
    task = msgspec.structs.asdict(case.task)
    if task["tools"] is None:
        task["tools"] = [case.tool]
    task["effect_calls"] = {e: case.task.effect_calls.get(e, 0) for e in catalogue.effects}
    unknown = sorted(set(case.provenance) - set(tool.spec.sinks))
    if unknown:
        return CaseResult(case, Effect.DENY, (), f"provenance names non-sink arguments {unknown}")
    provenance = {
        sink: case.provenance.get(sink, PROVENANCES[0])
        for sink in tool.spec.sinks
        if sink in case.args
    }
    context = decision_context(
        args=args,
        task=task,
        tool=tool.context,
        provenance=provenance,
        risk=msgspec.structs.asdict(case.risk),
        now=case.time,
        approved=case.approved,
        delegation=msgspec.structs.asdict(case.delegation),
    )
    verdict = evaluate(
        bundle, entities, workspace=agent.workspace, agent=agent, tool=case.tool, context=context
    )
    outcome = verdict.outcome
    return CaseResult(
        case, outcome.effect, outcome.determining, "; ".join(r.text for r in outcome.reasons)
    )


def case_file_catalogue(test_file: TestFile, path: Path) -> Path | None:
    """The catalogue file a test file names, resolved against the test file's folder."""
    return (path.parent / test_file.catalogue).resolve() if test_file.catalogue else None


__all__ = [
    "Case",
    "CaseResult",
    "TestFile",
    "fixture_agents",
    "load_test_file",
    "run_cases",
]
