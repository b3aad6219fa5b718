"""The tool catalogue: what each tool of a workspace is, does, and takes.

Public names: `CompiledTool`, `Catalogue`, `compile_tool`, `ArgumentError`, `CedarType`,
`args_type`, `cedar_schema`, `context_fields`, `decision_context`, `tool_context`,
`load_catalogue_file`, `parse_catalogue`, `AGENT_ATTRIBUTES`, `WELL_KNOWN_EFFECTS`, `PROVENANCES`.
"""

from tether.catalogue.cedar_schema import (
    AGENT_ATTRIBUTES,
    PROVENANCES,
    WELL_KNOWN_EFFECTS,
    cedar_schema,
    context_fields,
    decision_context,
    tool_context,
)
from tether.catalogue.compiled import Catalogue, CompiledTool, compile_tool
from tether.catalogue.files import load_catalogue_file, parse_catalogue
from tether.catalogue.json_schema import ArgumentError, CedarType, args_type

__all__ = [
    "AGENT_ATTRIBUTES",
    "PROVENANCES",
    "WELL_KNOWN_EFFECTS",
    "ArgumentError",
    "Catalogue",
    "CedarType",
    "CompiledTool",
    "args_type",
    "cedar_schema",
    "compile_tool",
    "context_fields",
    "decision_context",
    "load_catalogue_file",
    "parse_catalogue",
    "tool_context",
]
