"""Catalogue entries proposed from an MCP server's `tools/list`, for a person to review.

MCP tool annotations are the server's own claims (the specification says clients must treat them
as untrusted), and their defaults assume the worst: a tool that says nothing may write, may
destroy, and reaches the open world. So the mapping below is deliberately cautious, and every
hint that is missing, contradictory or has no effect mapping is flagged for review:

| hint (MCP default) | effects |
|---|---|
| `readOnlyHint: true` | `read` |
| `readOnlyHint: false` (default) | `write`, plus `destructive` unless `destructiveHint: false` |
| `openWorldHint: true` (default) | `external`; its output is third-party content: `untrusted` |
| `idempotentHint` | no effect (flagged as unmapped) |

`readOnlyHint: true` with `destructiveHint: true` contradicts itself and is taken as the
stricter `write, destructive`. Sink arguments are guessed from argument names and flagged too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tether.catalogue.compiled import compile_tool
from tether.errors import InvalidInput, TetherError
from tether.model import OutputTrust, Tool

HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_SINK_NAMES = re.compile(
    r"(?i)^(to|cc|bcc|recipients?|emails?|email_address|url|uri|endpoint|webhook|"
    r"iban|account(_number|_id)?|destination|dest|target_url|path|file(name|_path)?|"
    r"channel|phone(_number)?|address|repo_path)$"
)


@dataclass(frozen=True)
class Proposal:
    name: str
    tool: Tool | None  # None when the entry cannot be registered as proposed
    flags: tuple[str, ...]


def tools_of(document: Any) -> list[dict[str, Any]]:
    """The tool list from a `tools/list` result, a JSON-RPC response carrying one, or a list."""
    if isinstance(document, dict) and isinstance(document.get("result"), dict):
        document = document["result"]
    if isinstance(document, dict):
        document = document.get("tools")
    if not isinstance(document, list) or not all(isinstance(t, dict) for t in document):
        raise InvalidInput('expected an MCP tools/list result: {"tools": [{"name": ...}, ...]}')
    return document


def propose(document: Any, workspace: str, prefix: str = "") -> list[Proposal]:
    return [_propose(entry, workspace, prefix) for entry in tools_of(document)]


def _propose(entry: dict[str, Any], workspace: str, prefix: str) -> Proposal:
    name = f"{prefix}{entry.get('name', '')}"
    hints = entry.get("annotations") or {}
    flags: list[str] = []
    if not isinstance(hints, dict):
        hints, flags = {}, ["annotations is not an object: ignored"]
    effects, output = _effects(hints, flags)
    schema = entry.get("inputSchema") or {"type": "object", "properties": {}}
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    sinks = tuple(sorted(p for p in properties if _SINK_NAMES.match(p)))
    if sinks:
        flags.append(f"sink arguments guessed from their names: {', '.join(sinks)}")
    tool = Tool(
        workspace=workspace,
        name=name,
        args_schema=schema if isinstance(schema, dict) else {},
        effects=tuple(effects),
        sinks=sinks,
        output=output,
        risk_tier=_risk_tier(effects),
        description=str(entry.get("description") or hints.get("title") or entry.get("title") or ""),
    )
    try:
        compile_tool(tool)
    except TetherError as exc:
        return Proposal(name, None, (*flags, f"cannot be registered as proposed: {exc}"))
    return Proposal(name, tool, tuple(flags))


def _effects(hints: dict[str, Any], flags: list[str]) -> tuple[list[str], OutputTrust]:
    meaningful: tuple[str, ...] = ("readOnlyHint", "openWorldHint")
    if hints.get("readOnlyHint") is not True:  # destructiveHint only matters for writers
        meaningful += ("destructiveHint",)
    missing = [h for h in HINTS if h in meaningful and h not in hints]
    if missing:
        flags.append(f"hints not given, MCP defaults assumed: {', '.join(missing)}")
    unmapped = sorted(str(h) for h in set(hints) - {*HINTS, "title"})
    if unmapped:
        flags.append(f"unmapped hints: {', '.join(json.dumps(h) for h in unmapped)}")
    if "idempotentHint" in hints:
        flags.append("idempotentHint is not mapped to an effect")

    read_only = hints.get("readOnlyHint", False) is True
    destructive = hints.get("destructiveHint", True) is not False
    open_world = hints.get("openWorldHint", True) is not False
    if read_only and hints.get("destructiveHint") is True:
        flags.append("readOnlyHint and destructiveHint contradict: taken as write, destructive")
        read_only = False
    effects = ["read"] if read_only else ["write"] + (["destructive"] if destructive else [])
    if open_world:
        effects.append("external")
        flags.append("open world: its output is treated as untrusted third-party content")
    return effects, OutputTrust.UNTRUSTED if open_world else OutputTrust.TRUSTED


def _risk_tier(effects: list[str]) -> str:
    if "destructive" in effects or {"write", "external"} <= set(effects):
        return "high"
    return "medium" if "write" in effects or "external" in effects else "low"


def to_catalogue_yaml(proposals: list[Proposal], source: str) -> str:
    """A catalogue file: entries ready to load, each preceded by what to review; entries that
    cannot be registered as proposed are commented out."""
    lines = [
        f"# Proposed from the MCP tools/list in {source}.",
        "# The server's annotations are its own claims: review every entry, above all the",
        "# lines marked REVIEW, before loading this catalogue (`tether apply`).",
        "tools:",
    ]
    for proposal in proposals:
        lines.append("")
        lines.extend(f"  # REVIEW: {_one_line(flag)}" for flag in proposal.flags)
        entry = _entry(proposal) if proposal.tool is not None else {"name": proposal.name}
        text = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=100)
        prefix = "  " if proposal.tool is not None else "  # "
        lines.extend(prefix + line for line in text.rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """A comment line that stays a comment: the server chose some of this text (hint names,
    property names in error messages), and a newline in it would start real YAML."""
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def _entry(proposal: Proposal) -> dict[str, Any]:
    tool = proposal.tool
    assert tool is not None
    entry: dict[str, Any] = {"name": tool.name}
    if tool.description:
        entry["description"] = tool.description
    entry["effects"] = list(tool.effects)
    if tool.sinks:
        entry["sinks"] = list(tool.sinks)
    entry["output"] = tool.output.value
    entry["risk_tier"] = tool.risk_tier
    entry["args"] = tool.args_schema
    return entry
