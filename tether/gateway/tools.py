"""An upstream's `tools/list`, held against the workspace catalogue.

A tool list is the upstream's claim, and a changed one is the classic way to slip an agent new
instructions (a "rug pull": the description it was reviewed with is swapped afterwards). So the
catalogue entry is the reviewed definition, and the gateway offers an upstream tool only while
the upstream still describes it exactly as the entry does (description and input schema):

- the first time an upstream is seen (no import of it recorded in the audit log), its tools
  are imported under its prefix (`<upstream>.<tool>` by default) with the cautious mapping of
  catalogue/mcp_import.py, and the import is recorded;
- afterwards a tool that is new, or whose description or input schema changed, is *flagged*:
  withheld from agents, its calls denied, and the change recorded (audit event
  `gateway.tool_flagged`) until a person accepts it (`tether gateway accept`).

Importing grants nothing: a new catalogue entry is allowed only where a policy permits it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import msgspec

from tether.catalogue.mcp_import import Proposal, propose
from tether.model import Tool
from tether.sdk import Guard


@dataclass(frozen=True)
class Offered:
    """An upstream tool the gateway offers: its catalogue name, where it goes, and the
    definition agents see (the reviewed one: `served`)."""

    name: str
    upstream: str
    original: str
    definition: types.Tool


@dataclass
class Review:
    """One upstream's tools as last listed: what is offered, and what is held back and why."""

    upstream: str
    offered: dict[str, Offered] = field(default_factory=dict)
    flagged: dict[str, str] = field(default_factory=dict)
    imported: list[str] = field(default_factory=list)


IMPORTED = "gateway.tools_imported"


def review(
    guard: Guard, workspace: str, upstream: str, prefix: str, tools: Iterable[types.Tool]
) -> Review:
    """Hold `tools` against the catalogue (importing them if the upstream was never imported
    before) and record what changed; the result says which tools agents may be shown."""
    tools = list(tools)
    catalogue = {t.name: t for t in guard.tools(workspace)}
    seen_before = guard.store.audit.has_event(IMPORTED, workspace=workspace, subject=upstream)
    result = Review(upstream)
    proposals = _proposals(tools, workspace, prefix)
    if not seen_before:  # entries a person made already are kept, and held to the list
        importable = [
            p.tool
            for p in proposals.values()
            if p.tool is not None and p.name not in catalogue and _importable_name(p.name, prefix)
        ]
        if importable:
            guard.register_tools(workspace, importable)
            catalogue.update({t.name: t for t in importable})
        result.imported = sorted(t.name for t in importable)
        guard.audit.event(
            IMPORTED,
            workspace=workspace,
            actor="gateway",
            subject=upstream,
            tools=result.imported,
            flags={p.name: list(p.flags) for p in proposals.values() if p.flags},
        )
    for tool in tools:
        name = prefix + tool.name
        entry = catalogue.get(name)
        why = (
            _difference(entry, proposals[name])
            if _importable_name(name, prefix)
            else "an MCP tool name holds no ':' (the gateway's own catalogue names do)"
        )
        if why is None and entry is not None:
            result.offered[name] = Offered(name, upstream, tool.name, served(entry, tool))
        else:
            why = why or "not in the catalogue"
            result.flagged[name] = why
            guard.audit.event(
                "gateway.tool_flagged",
                workspace=workspace,
                actor="gateway",
                subject=name,
                upstream=upstream,
                why=why,
            )
    return result


def accept(
    guard: Guard,
    workspace: str,
    upstream: str,
    prefix: str,
    tools: Iterable[types.Tool],
    *,
    names: Iterable[str] = (),
) -> list[str]:
    """A person accepts the upstream's current definitions of `names` (default: every flagged
    tool): new tools are added as proposed, changed ones take the new description and input
    schema and keep the rest of their reviewed entry (effects, sinks, labels)."""
    tools = list(tools)
    catalogue = {t.name: t for t in guard.tools(workspace)}
    proposals = _proposals(tools, workspace, prefix)
    wanted = set(names) or {
        name for name, p in proposals.items() if _difference(catalogue.get(name), p) is not None
    }
    unknown = wanted - set(proposals)
    if unknown:
        raise KeyError(f"upstream {upstream} does not offer {', '.join(sorted(unknown))}")
    changed: list[Tool] = []
    for name in sorted(wanted):
        proposed = proposals[name].tool
        if proposed is None:
            raise ValueError(f"{name} cannot be registered: {'; '.join(proposals[name].flags)}")
        entry = catalogue.get(name)
        changed.append(
            proposed
            if entry is None
            else msgspec.structs.replace(
                entry, description=proposed.description, args_schema=proposed.args_schema
            )
        )
    if changed:
        guard.register_tools(workspace, changed)
        guard.audit.event(
            "gateway.tools_accepted",
            workspace=workspace,
            actor="gateway",
            subject=upstream,
            tools=[t.name for t in changed],
        )
    return [t.name for t in changed]


def served(entry: Tool, listed: types.Tool) -> types.Tool:
    """The definition agents are shown: the reviewed one (the catalogue's name, description and
    input schema), with only the upstream's yes/no hints; its other text (titles, output
    schema, metadata) was never reviewed, so it is not passed on."""
    hints = listed.annotations
    return types.Tool(
        name=entry.name,
        description=entry.description or None,
        input_schema=entry.args_schema,
        annotations=(
            types.ToolAnnotations(
                read_only_hint=hints.read_only_hint,
                destructive_hint=hints.destructive_hint,
                idempotent_hint=hints.idempotent_hint,
                open_world_hint=hints.open_world_hint,
            )
            if hints is not None
            else None
        ),
    )


def _importable_name(name: str, prefix: str) -> bool:
    return ":" not in name[len(prefix) :]


def _proposals(tools: list[types.Tool], workspace: str, prefix: str) -> dict[str, Proposal]:
    listed = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]
    return {p.name: p for p in propose(listed, workspace, prefix)}


def _difference(entry: Tool | None, proposal: Proposal) -> str | None:
    """Why the upstream's definition is not the reviewed one (None: it is)."""
    if entry is None:
        return "a new tool: not reviewed yet"
    proposed = proposal.tool
    if proposed is None:
        return "cannot be registered as listed: " + "; ".join(proposal.flags)
    changed = [
        what
        for what, mine, theirs in (
            ("description", entry.description, proposed.description),
            ("input schema", _canonical(entry.args_schema), _canonical(proposed.args_schema)),
        )
        if mine != theirs
    ]
    if changed:
        return f"its {' and '.join(changed)} changed since it was reviewed"
    return None


def _canonical(schema: Any) -> bytes:
    return msgspec.json.encode(schema, order="sorted")
