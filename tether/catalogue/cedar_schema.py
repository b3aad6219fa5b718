"""The Cedar schema of a workspace, generated from its tool catalogue.

The mapping follows DESIGN.md "Mapping onto Cedar":

- principal: `Agent`, in its `Workspace`, in its `Tenant`;
- action: one per tool (`Action::"send_email"`), member of one group per effect
  (`Action::"external"`), so a policy can say `action in Action::"external"`;
- resource: the `Workspace`;
- context: `args` typed per tool from its JSON Schema, plus the fields every decision has
  (`CONTEXT_FIELDS`). The decision pipeline builds exactly this shape; a test holds it to that.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from tether.catalogue.json_schema import CedarType

_STRING = {"type": "String"}
_LONG = {"type": "Long"}


def _record(**attributes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attributes}


# Context fields shared by every tool. Keep docs/policy-guide.md ("The context") in step.
CONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "task": _record(
        id=_STRING,
        user=_STRING,
        request=_STRING,
        tools={"type": "Set", "element": _STRING},
        calls=_LONG,
    ),
    "approved": {"type": "Boolean"},
    "time": _record(unix=_LONG, hour=_LONG, weekday=_LONG),
}


def decision_context(
    args: Any, task: Mapping[str, Any], now: float, *, approved: bool = False
) -> dict[str, Any]:
    """The context of one decision, in exactly the shape CONTEXT_FIELDS declares.

    `args` are the tool's arguments already converted to Cedar values; `task` is `context.task`.
    """
    moment = time.gmtime(now)
    return {
        "args": args,
        "task": task,
        "approved": approved,
        "time": {"unix": int(now), "hour": moment.tm_hour, "weekday": moment.tm_wday},
    }


ENTITY_TYPES: dict[str, Any] = {
    "Tenant": {"shape": _record(name=_STRING)},
    "Workspace": {"memberOfTypes": ["Tenant"], "shape": _record(name=_STRING, tenant=_STRING)},
    "Agent": {
        "memberOfTypes": ["Workspace"],
        "shape": _record(name=_STRING, kind=_STRING, owner=_STRING, spiffe_id=_STRING),
    },
}


def cedar_schema(tools: Iterable[tuple[str, Iterable[str], CedarType]]) -> dict[str, Any]:
    """The Cedar JSON schema for tools given as (name, effects, argument type)."""
    actions: dict[str, Any] = {}
    groups: set[str] = set()
    for name, effects, args in tools:
        effect_list = sorted(set(effects))
        groups.update(effect_list)
        actions[name] = {
            "memberOf": [{"id": effect} for effect in effect_list],
            "appliesTo": {
                "principalTypes": ["Agent"],
                "resourceTypes": ["Workspace"],
                "context": {
                    "type": "Record",
                    "attributes": {"args": args.to_schema(), **CONTEXT_FIELDS},
                },
            },
        }
    for group in sorted(groups):
        actions[group] = {}
    return {"": {"entityTypes": ENTITY_TYPES, "actions": actions}}
