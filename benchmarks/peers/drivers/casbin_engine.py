"""casbin (pycasbin) with an ABAC model: a matcher over request attributes, per-rule conditions
evaluated with `eval()`, rule priorities, default deny.

Native: R2 (`regexMatch`), the wrong workspace, agent and unknown tool (no rule matches).
Custom functions: `pathUnder` (R1: casbin cannot normalize a path) and `tainted` (R4). Glue
(ours): R4's per-task state; R3 read from an `obligation` column of the matched rule (casbin
answers only true or false); the audit line (casbin logs no rule or reason)."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import casbin  # noqa: E402
import scenario  # noqa: E402
from scenario import ALLOW, APPROVAL, DENY, Call  # noqa: E402

MODEL = """
[request_definition]
r = sub, act, obj

[policy_definition]
p = priority, agent, ws, act, cond, eft, obligation

[policy_effect]
e = priority(p.eft) || deny

[matchers]
m = r.act == p.act && r.sub.Agent == p.agent && r.sub.Workspace == p.ws && eval(p.cond)
"""
POLICY = """
p, 1,  coder, acme, http_post,     tainted(r.sub.Task),                        deny,  -
p, 10, coder, acme, read_file,     pathUnder(r.obj.path, '/repo'),             allow, -
p, 10, coder, acme, send_email,    regexMatch(r.obj.to, '^[^@]+@acme[.]com$'), allow, -
p, 10, coder, acme, delete_branch, True,                                       allow, approve
p, 10, coder, acme, read_secret,   True,                                       allow, label:secret
p, 10, coder, acme, http_post,     True,                                       allow, -
"""


@dataclass(frozen=True)
class Subject:
    Agent: str
    Workspace: str
    Task: str


class Task:
    def __init__(self, engine: Engine, number: int) -> None:
        self.engine, self.id = engine, f"task-{number}"

    def decide(self, call: Call) -> str:
        subject = Subject(call.agent, call.workspace, self.id)
        try:
            allowed, rule = self.engine.enforcer.enforce_ex(subject, call.tool, dict(call.args))
        except Exception:  # a missing attribute, say: refused
            allowed, rule = False, []
        effect = (APPROVAL if rule[6:] == ["approve"] else ALLOW) if allowed else DENY
        self.engine.audit.write(
            json.dumps({"task": self.id, "tool": call.tool, "effect": effect, "rule": rule}) + "\n"
        )
        self.engine.audit.flush()
        return effect

    def after(self, call: Call, effect: str) -> None:
        if call.tool == "read_secret" and effect == ALLOW:
            self.engine.tainted.add(self.id)


class Engine:
    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="casbin-")
        folder = Path(self.folder.name)
        (folder / "model.conf").write_text(MODEL)
        (folder / "policy.csv").write_text(POLICY.strip() + "\n")
        self.enforcer = casbin.Enforcer(str(folder / "model.conf"), str(folder / "policy.csv"))
        self.tainted: set[str] = set()
        self.enforcer.add_function("pathUnder", scenario.under)
        self.enforcer.add_function("tainted", lambda task: task in self.tainted)
        self.audit = (folder / "audit.jsonl").open("a")
        self.tasks = 0

    def new_task(self) -> Task:
        self.tasks += 1
        return Task(self, self.tasks)


if __name__ == "__main__":
    from importlib.metadata import version

    scenario.main(Engine, {
        "engine": "casbin",
        "setup": "Enforcer.enforce_ex on an ABAC model with eval() conditions; our JSONL audit",
        "native": ["R2 (regexMatch)", "wrong workspace", "wrong agent", "unknown tool"],
        "glue": ["R1: pathUnder function", "R3: obligation column", "R4: taint set and "
                 "function", "audit line"],
        "version": version("pycasbin"),
    })  # fmt: skip
