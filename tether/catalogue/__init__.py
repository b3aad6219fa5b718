"""The tool catalogue: what each tool of a workspace is, does, and takes.

Public names: `CompiledTool`, `Catalogue`, `compile_tool`, `ArgumentError`, `CedarType`,
`args_type`, `cedar_schema`, `decision_context`, `load_catalogue_file`.
"""

from tether.catalogue.cedar_schema import CONTEXT_FIELDS, cedar_schema, decision_context
from tether.catalogue.compiled import Catalogue, CompiledTool, compile_tool
from tether.catalogue.files import load_catalogue_file
from tether.catalogue.json_schema import ArgumentError, CedarType, args_type

__all__ = [
    "CONTEXT_FIELDS",
    "ArgumentError",
    "Catalogue",
    "CedarType",
    "CompiledTool",
    "args_type",
    "cedar_schema",
    "compile_tool",
    "decision_context",
    "load_catalogue_file",
]
