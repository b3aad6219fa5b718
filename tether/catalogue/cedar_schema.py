"""The Cedar schema of a workspace, generated from its tool catalogue.

The mapping follows DESIGN.md "Mapping onto Cedar":

- principal: `Agent`, in its `Workspace`, in its `Tenant`;
- action: one per tool (`Action::"send_email"`), member of one group per effect
  (`Action::"external"`), so a policy can say `action in Action::"external"`;
- resource: the `Workspace`;
- context: `args` and `provenance` typed per tool, plus the fields every decision has (below).
  `decision_context` builds exactly this shape; tests hold the two together.

The well-known effect groups always exist, even empty, so a shipped policy pack that names
`Action::"financial"` parses against a catalogue without a financial tool; a policy that then
applies to no tool is inert (policy/bundle.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from tether.catalogue.json_schema import CedarType

WELL_KNOWN_EFFECTS = (
    "read",
    "write",
    "execute",
    "external",
    "financial",
    "destructive",
    "secret_access",
)
PROVENANCES = ("user", "trusted", "untrusted", "unseen")

_STRING = {"type": "String"}
_LONG = {"type": "Long"}
_BOOL = {"type": "Boolean"}
_STRINGS = {"type": "Set", "element": _STRING}


def _record(**attributes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attributes}


def context_fields(effects: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The context fields every tool has. Keep docs/policy-guide.md ("What a policy can see")
    in step."""
    return {
        "task": _record(
            id=_STRING,
            user=_STRING,
            request=_STRING,
            tools=_STRINGS,
            calls=_LONG,
            allowed=_LONG,
            denied=_LONG,
            tool_calls=_LONG,
            effect_calls={
                "type": "Record",
                "attributes": dict.fromkeys(sorted(effects), _LONG),
            },
            labels=_STRINGS,
        ),
        "tool": _record(name=_STRING, effects=_STRINGS, risk_tier=_STRING, read_only=_BOOL),
        "sinks": _record(**dict.fromkeys(PROVENANCES, _STRINGS)),
        "risk": _record(score=_LONG, level=_STRING, signals=_STRINGS),
        "delegation": _record(depth=_LONG, delegators=_STRINGS, grant=_STRING),
        "approved": _BOOL,
        "time": _record(unix=_LONG, hour=_LONG, weekday=_LONG),
    }


# The top-level names of every tool's context: what `@reason` placeholders may start with.
CONTEXT_ROOTS = ("args", "provenance", *context_fields(()))


def decision_context(
    *,
    args: Any,
    task: Mapping[str, Any],
    tool: Mapping[str, Any],
    provenance: Mapping[str, str],
    risk: Mapping[str, Any],
    now: float,
    approved: bool = False,
    delegation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of one decision, in exactly the shape `cedar_schema` declares.

    `args` are the tool's arguments already converted to Cedar values; `provenance` maps each
    sink argument present to where its value came from; `delegation` is how the task's token
    was delegated (default: straight from the user's grant).
    """
    moment = time.gmtime(now)
    sinks: dict[str, list[str]] = {name: [] for name in PROVENANCES}
    for arg, source in provenance.items():
        sinks[source].append(arg)
    return {
        "args": args,
        "provenance": dict(provenance),
        "task": task,
        "tool": tool,
        "sinks": sinks,
        "risk": risk,
        "delegation": delegation or {"depth": 1, "delegators": [], "grant": ""},
        "approved": approved,
        "time": {"unix": int(now), "hour": moment.tm_hour, "weekday": moment.tm_wday},
    }


def tool_context(name: str, effects: Iterable[str], risk_tier: str) -> dict[str, Any]:
    """`context.tool`: what the catalogue says of the tool being called."""
    effect_list = sorted(set(effects))
    return {
        "name": name,
        "effects": effect_list,
        "risk_tier": risk_tier,
        "read_only": effect_list == ["read"],
    }


# What policies can read of the calling agent (`principal.kind`, ...): all Strings.
AGENT_ATTRIBUTES = ("name", "kind", "owner", "spiffe_id")

ENTITY_TYPES: dict[str, Any] = {
    "Tenant": {"shape": _record(name=_STRING)},
    "Workspace": {"memberOfTypes": ["Tenant"], "shape": _record(name=_STRING, tenant=_STRING)},
    "Agent": {
        "memberOfTypes": ["Workspace"],
        "shape": _record(**dict.fromkeys(AGENT_ATTRIBUTES, _STRING)),
    },
}


def provenance_type(args: CedarType, sinks: Iterable[str]) -> dict[str, Any]:
    """`context.provenance` of a tool: one String per sink, required when the argument is."""
    return {
        "type": "Record",
        "attributes": {
            sink: {**_STRING, "required": args.attributes[sink][1]} for sink in sorted(sinks)
        },
    }


def cedar_schema(
    tools: Iterable[tuple[str, Iterable[str], Iterable[str], CedarType]],
) -> dict[str, Any]:
    """The Cedar JSON schema for tools given as (name, effects, sinks, argument type)."""
    entries = [
        (name, sorted(set(effects)), list(sinks), args) for name, effects, sinks, args in tools
    ]
    groups = set(WELL_KNOWN_EFFECTS) | {e for _, effects, _, _ in entries for e in effects}
    common = context_fields(groups)

    actions: dict[str, Any] = {}
    for name, effects, sinks, args in entries:
        actions[name] = {
            "memberOf": [{"id": effect} for effect in effects],
            "appliesTo": {
                "principalTypes": ["Agent"],
                "resourceTypes": ["Workspace"],
                "context": {
                    "type": "Record",
                    "attributes": {
                        "args": args.to_schema(),
                        "provenance": provenance_type(args, sinks),
                        **common,
                    },
                },
            },
        }
    for group in sorted(groups):
        actions[group] = {}
    return {"": {"entityTypes": ENTITY_TYPES, "actions": actions}}
