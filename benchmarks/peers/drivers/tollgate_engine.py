"""tollgate: its `ControlTower` pipeline (identity check, tool registry with per-tool
parameter schemas, YAML policy, approvals, JSON-lines audit) around a tool that does nothing.

Native: R1 and R2 as regular expressions in the tool manifest's parameter schemas (no path
normalization: any `..` segment is refused), R3 as ASK sent to an approver that defers, the
unknown tool and the wrong agent by default deny. Glue (ours): the workspace check (its policy
cannot match the agent's owner) in the identity verifier; R4's state, kept by an audit sink of
ours and put in each request's metadata; each request built from the registry."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scenario  # noqa: E402
from scenario import ALLOW, APPROVAL, DENY, Call  # noqa: E402
from tollgate import (  # noqa: E402
    AgentContext,
    ApprovalOutcome,
    AsyncQueueApprover,
    CompositeAuditSink,
    ControlTower,
    InMemoryApprovalStore,
    Intent,
    JsonlAuditSink,
    Outcome,
    TollgateApprovalDenied,
    TollgateConstraintViolation,
    TollgateDeferred,
    TollgateDenied,
    ToolRegistry,
    ToolRequest,
    YamlPolicyEvaluator,
    make_verifier,
    sign_agent_context,
)

SAFE_PATH = r"^/repo(/(?!\.\.(/|$))[^/]*)*$"
MANIFEST = f"""
version: "1"
tools:
  read_file: {{effect: read, resource_type: file, params_schema: {{type: object, required: [path],
    properties: {{path: {{type: string, pattern: '{SAFE_PATH}'}}}}}}}}
  send_email: {{effect: notify, resource_type: email, params_schema: {{type: object,
    required: [to], properties: {{to: {{type: string, pattern: '^[^@\\s]+@acme\\.com$'}}}}}}}}
  delete_branch: {{effect: delete, resource_type: git_branch}}
  read_secret: {{effect: read, resource_type: secret, labels: [secret]}}
  http_post: {{effect: write, resource_type: network}}
"""
POLICY = """
version: "1"
rules:
  - {id: R4-no-exfil, tool: http_post, when: {secret_read: true}, decision: DENY,
     reason: "nothing leaves once a secret was read"}
  - {id: R1, tool: read_file, agent: {agent_id: coder}, decision: ALLOW}
  - {id: R2, tool: send_email, agent: {agent_id: coder}, decision: ALLOW}
  - {id: R3, tool: delete_branch, agent: {agent_id: coder}, decision: ASK,
     reason: "deleting a branch needs a person"}
  - {id: secret, tool: read_secret, agent: {agent_id: coder}, decision: ALLOW}
  - {id: post, tool: http_post, agent: {agent_id: coder}, decision: ALLOW}
"""
KEY = b"bench-key"


class TaintSink:
    """Glue for R4: remembers the tasks in which a tool labelled secret ran."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry, self.tainted = registry, set[str]()

    def emit(self, event: Any) -> None:
        labels = self.registry.tools.get(event.tool_request.tool, {}).get("labels", [])
        if event.outcome == Outcome.EXECUTED and "secret" in labels:
            self.tainted.add(event.intent.metadata.get("task_id"))


async def _nothing() -> str:
    return "ok"


class Task:
    def __init__(self, engine: Engine, number: int) -> None:
        self.engine, self.id = engine, f"task-{number}"

    async def decide(self, call: Call) -> str:
        e = self.engine
        effect, resource_type, version = e.registry.resolve_tool(call.tool)
        request = ToolRequest(
            tool=call.tool, action="call", resource_type=resource_type, effect=effect,
            params=dict(call.args), manifest_version=version,
            metadata={"secret_read": self.id in e.taint.tainted},
        )  # fmt: skip
        intent = Intent(action=call.tool, reason="agent step", metadata={"task_id": self.id})
        try:
            await e.tower.execute_async(
                e.agents[call.agent, call.workspace], intent, request, _nothing
            )
        except TollgateDeferred:
            return APPROVAL
        except (TollgateDenied, TollgateConstraintViolation, TollgateApprovalDenied):
            return DENY
        return ALLOW

    def after(self, call: Call, effect: str) -> None:
        """R4's state was kept by the audit sink, in the pipeline."""


class Engine:
    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="tollgate-")
        folder = Path(self.folder.name)
        (folder / "manifest.yaml").write_text(MANIFEST)
        (folder / "policy.yaml").write_text(POLICY)
        self.registry = ToolRegistry(folder / "manifest.yaml")
        self.taint = TaintSink(self.registry)
        verify = make_verifier(KEY)
        self.tower = ControlTower(
            policy=YamlPolicyEvaluator(folder / "policy.yaml"),
            approver=AsyncQueueApprover(
                InMemoryApprovalStore(), timeout=0, default_outcome=ApprovalOutcome.DEFERRED
            ),
            audit=CompositeAuditSink([JsonlAuditSink(folder / "audit.jsonl"), self.taint]),
            registry=self.registry,
            verify_fn=lambda agent: agent.owner == "acme" and verify(agent),
        )
        self.agents = {
            (agent, workspace): sign_agent_context(
                AgentContext(agent_id=agent, version="1", owner=workspace), KEY
            )
            for agent in ("coder", "intern")
            for workspace in ("acme", "globex")
        }
        self.tasks = 0

    def new_task(self) -> Task:
        self.tasks += 1
        return Task(self, self.tasks)


if __name__ == "__main__":
    from importlib.metadata import version

    scenario.main(Engine, {
        "engine": "tollgate",
        "setup": "ControlTower: identity, registry schemas, YAML policy, approver, JSONL audit",
        "native": ["R1 (regex, no normalization)", "R2 (regex)", "R3", "wrong agent",
                   "unknown tool"],
        "glue": ["wrong workspace: in the identity verifier", "R4: taint kept by our audit sink "
                 "and passed as request metadata", "requests built from the registry"],
        "version": version("tollgate"),
    })  # fmt: skip
