"""Raw cedarpy: the floor for any engine built on Cedar. The scenario's policies
(../policies.cedar) parsed once into a `PolicySet`, the entities once; each call is one
`cedarpy.is_authorized` with the cheapest request form (dict uids, the context as a JSON
string), and no more: no identity, no task, no record.

Glue: the task's labels (R4) are kept here and put in the context; a deny whose determining
policy carries `@approval` is read as approval_required (R3); a call aimed at another
workspace names that workspace as the resource, which no permit matches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cedarpy  # noqa: E402
import scenario  # noqa: E402
from scenario import ALLOW, APPROVAL, DENY, Call  # noqa: E402

SCENARIO_POLICIES = 7
POLICIES = cedarpy.PolicySet.from_str(
    (HERE.parent / "policies.cedar").read_text()
    + scenario.filler(max(0, scenario.option("--policies", 0) - SCENARIO_POLICIES))
)
ASKS = {  # the policies that ask for a person (cedarpy names them policy0, policy1, ...)
    key
    for key, policy in POLICIES.to_pst().static_policies.items()
    if "approval" in policy.annotations
}
ENTITIES = cedarpy.Entities.from_json_str(
    json.dumps(
        [
            {"uid": {"type": kind, "id": name}, "attrs": {}, "parents": []}
            for kind, name in (
                ("Agent", "coder"),
                ("Agent", "intern"),
                ("Workspace", "acme"),
                ("Workspace", "globex"),
            )
        ]
    )
)


class Task:
    def __init__(self) -> None:
        self.labels: list[str] = []

    def decide(self, call: Call) -> str:
        context = {"args": call.args, "task": {"labels": self.labels}, "approved": False}
        result = cedarpy.is_authorized(
            {
                "principal": {"type": "Agent", "id": call.agent},
                "action": {"type": "Action", "id": call.tool},
                "resource": {"type": "Workspace", "id": call.workspace},
                "context": json.dumps(context),
            },
            POLICIES,
            ENTITIES,
        )
        if result.decision is cedarpy.Decision.Allow:
            return ALLOW
        return APPROVAL if set(result.diagnostics.reasons) & ASKS else DENY

    def after(self, call: Call, effect: str) -> None:
        if call.tool == "read_secret" and effect == ALLOW:
            self.labels.append("secret")


class Engine:
    def new_task(self) -> Task:
        return Task()


ABOUT = {
    "engine": "cedarpy (raw)",
    "setup": "is_authorized on a parsed PolicySet; nothing else",
    "native": ["R1", "R2", "wrong workspace", "wrong agent", "unknown tool"],
    "glue": ["R3: @approval read from the determining policy", "R4: labels kept by the caller"],
}

if __name__ == "__main__":
    from importlib.metadata import version

    scenario.main(Engine, {**ABOUT, "version": version("cedarpy")})
