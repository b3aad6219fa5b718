"""Microsoft's agent-governance-toolkit (its `agentmesh.governance` engine, from
agent-governance-toolkit-core): YAML policy rules evaluated by `PolicyEngine`, per-session
`SessionState` (a monotonic label for R4) and the hash-chained `AuditLog`, written to an
HMAC-signed JSON-lines file (`--memory-audit`: kept in memory only).

Glue (ours): R1 and R2 need facts its condition language cannot compute (it has ==, !=, in,
numeric comparisons, and/or: no prefix, suffix, regex or path normalisation), computed by a
function on its own facet hook; the loop that injects the session state, evaluates and writes
the audit entry is ours (its `govern()` wrapper ignores SessionState); and nothing in it
marks a session after a tool returns a secret, so we raise the label (outside the clock)."""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
warnings.filterwarnings("ignore", category=DeprecationWarning)  # "agentmesh-platform is deprecated"

import scenario  # noqa: E402
from agentmesh.governance import AuditLog, FileAuditSink, PolicyEngine, SessionState  # noqa: E402
from agentmesh.governance.protocol_facets import default_registry  # noqa: E402
from scenario import ALLOW, APPROVAL, DENY, Call  # noqa: E402

POLICY = """
apiVersion: governance.toolkit/v1
name: acme-coder
agents: [coder]
default_action: deny
rules:
  - name: wrong-workspace
    condition: "workspace != 'acme'"
    action: deny
    priority: 100
  - name: r1-outside-repo
    condition: "tool_name == 'read_file' and args.inside_repo != 'yes'"
    action: deny
    priority: 50
  - {name: r1-read-file, condition: "tool_name == 'read_file'", action: allow}
  - name: r2-outside
    condition: "tool_name == 'send_email' and args.to_domain != 'acme.com'"
    action: deny
    priority: 50
  - {name: r2-send-email, condition: "tool_name == 'send_email'", action: allow}
  - name: r3-delete-branch
    condition: "tool_name == 'delete_branch'"
    action: require_approval
    approvers: [approver]
  - name: r4-no-post-after-secret
    condition: "tool_name == 'http_post' and session.data_label == 'secret'"
    action: deny
    priority: 50
  - {name: r4-http-post, condition: "tool_name == 'http_post'", action: allow}
  - {name: read-secret, condition: "tool_name == 'read_secret'", action: allow}
session_attributes:
  - {name: data_label, ordering: [public, secret], monotonic: true, initial: public}
"""
OUTCOMES = {"allow": ALLOW, "require_approval": APPROVAL}


def facts(args: dict[str, Any]) -> dict[str, Any]:
    """Glue for R1 and R2."""
    out: dict[str, Any] = {}
    if isinstance(args.get("path"), str):
        out["inside_repo"] = "yes" if scenario.under(args["path"], "/repo") else "no"
    if isinstance(args.get("to"), str) and args["to"].count("@") == 1:
        out["to_domain"] = args["to"].rpartition("@")[2].lower()
    return out


default_registry.register("args", facts)


class Task:
    def __init__(self, engine: PolicyEngine, audit: AuditLog, number: int) -> None:
        self.engine, self.audit, self.id = engine, audit, f"task-{number}"
        self.state = SessionState.from_policy_yaml(POLICY)

    def decide(self, call: Call) -> str:
        context = {"tool_name": call.tool, "workspace": call.workspace, "args": dict(call.args)}
        self.state.inject_context(context)
        decision = self.engine.evaluate(call.agent, context, stage="pre_tool")
        self.audit.log(
            event_type="policy_evaluation", agent_did=call.agent, action=call.tool,
            outcome=decision.action, policy_decision=decision.action, trace_id=self.id,
            data={"rule": decision.matched_rule or "", "reason": decision.reason or "",
                  "workspace": call.workspace},
        )  # fmt: skip
        return OUTCOMES.get(decision.action, DENY)

    def after(self, call: Call, effect: str) -> None:
        if call.tool == "read_secret" and effect == ALLOW:
            self.state.set("data_label", "secret")


class Engine:
    def __init__(self) -> None:
        self.engine = PolicyEngine(conflict_strategy="deny_overrides")
        self.engine.load_yaml(POLICY)
        sink = None
        if "--memory-audit" not in sys.argv:
            self.folder = tempfile.TemporaryDirectory(prefix="agt-audit-")
            sink = FileAuditSink(str(Path(self.folder.name) / "audit.jsonl"), secret_key=b"k" * 32)
        self.audit = AuditLog(sink=sink)
        self.tasks = 0

    def new_task(self) -> Task:
        self.tasks += 1
        return Task(self.engine, self.audit, self.tasks)


if __name__ == "__main__":
    from importlib.metadata import version

    memory = "--memory-audit" in sys.argv
    scenario.main(Engine, {
        "engine": "agent-governance-toolkit" + (" (audit in memory)" if memory else ""),
        "setup": "PolicyEngine + SessionState + AuditLog (hash chain; "
                 + ("in memory)" if memory else "signed JSON-lines file)"),
        "native": ["R3", "R4 rule", "wrong workspace", "wrong agent", "unknown tool"],
        "glue": ["R1: path normalization (facet hook)", "R2: the address's domain (facet hook)",
                 "R4: marking the session once a secret was read", "the evaluate-and-audit loop"],
        "version": version("agent-governance-toolkit-core"),
    })  # fmt: skip
