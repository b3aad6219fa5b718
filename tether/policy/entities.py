"""The Cedar entities of one workspace: its tenant, itself, and its agents.

Built once per change of the workspace, with the bundle's schema, so Cedar also knows the action
hierarchy (tool -> effect groups) without being handed the schema on every request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import cedarpy

from tether.catalogue import AGENT_ATTRIBUTES
from tether.model import Agent, Workspace


def workspace_entities(workspace: Workspace, agents: Iterable[Agent], schema: Any) -> Any:
    """A parsed `cedarpy.Entities` for the workspace (suspended agents included: the gate, not
    the policy, stops them, and policies may still refer to them)."""
    ws = {"type": "Workspace", "id": workspace.name}
    tenant = {"type": "Tenant", "id": workspace.tenant}
    entities: list[dict[str, Any]] = [
        {"uid": tenant, "attrs": {"name": workspace.tenant}, "parents": []},
        {
            "uid": ws,
            "attrs": {"name": workspace.name, "tenant": workspace.tenant},
            "parents": [tenant],
        },
    ]
    entities.extend(
        {
            "uid": {"type": "Agent", "id": agent.name},
            "attrs": {name: getattr(agent, name) for name in AGENT_ATTRIBUTES},
            "parents": [ws],
        }
        for agent in agents
    )
    return cedarpy.Entities.from_json_str(json.dumps(entities), schema)
