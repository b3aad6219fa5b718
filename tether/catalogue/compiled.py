"""A catalogue entry made ready for decisions: its argument validator and Cedar type, built once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema_rs

from tether.catalogue.cedar_schema import WELL_KNOWN_EFFECTS, cedar_schema, tool_context
from tether.catalogue.json_schema import ArgumentError, CedarType, args_type, resolve, to_cedar
from tether.errors import CatalogueError, InvalidInput
from tether.model import OutputTrust, Tool
from tether.names import check_identifier, check_tool_name

MAX_REPORTED_ERRORS = 3


@dataclass(frozen=True)
class CompiledTool:
    spec: Tool
    args_type: CedarType
    validator: Any  # jsonschema_rs validator; the extension ships no type information
    context: dict[str, Any]  # `context.tool`

    @property
    def name(self) -> str:
        return self.spec.name

    def cedar_args(self, args: Any) -> Any:
        """The arguments checked against the tool's schema and converted for Cedar.

        Raises ArgumentError naming the first offending arguments; the pipeline turns that
        into a deny, so a call the schema forbids never reaches a policy.
        """
        if not isinstance(args, dict):
            raise ArgumentError("", "arguments must be a JSON object")
        errors = []
        for error in self.validator.iter_errors(args):
            path = ".".join(str(p) for p in error.instance_path)
            errors.append(f"argument `{path}`: {error.message}" if path else error.message)
            if len(errors) == MAX_REPORTED_ERRORS:
                break
        if errors:
            raise ArgumentError("", "; ".join(errors))
        return to_cedar(self.args_type, args)


def compile_tool(tool: Tool) -> CompiledTool:
    """Check a catalogue entry and build its validator and Cedar type.

    Raises CatalogueError (or InvalidInput for names) with a message for the person
    registering the tool; a tool that cannot be fully typed is never half-registered.
    """
    check_tool_name(tool.name)
    if not tool.effects:
        raise CatalogueError(
            f"tool {tool.name!r} declares no effects; declare at least one (read, write, external, "
            "financial, destructive, secret_access, ...)"
        )
    for effect in tool.effects:
        check_identifier("effect", effect)
    if tool.output not in tuple(OutputTrust):
        raise InvalidInput(f"tool {tool.name!r}: output must be 'trusted' or 'untrusted'")
    try:
        schema = resolve(tool.args_schema)
        typed = args_type(schema)
    except CatalogueError as exc:
        raise CatalogueError(f"tool {tool.name!r}: {exc}") from exc
    unknown_sinks = sorted(set(tool.sinks) - set(typed.attributes))
    if unknown_sinks:
        raise CatalogueError(
            f"tool {tool.name!r}: sink arguments {unknown_sinks} are not declared in its schema"
        )
    # `format` is an annotation, whatever draft the schema names (draft 7 would assert it):
    # a tool's arguments are held to one rule, documented in the policy guide.
    validator = jsonschema_rs.validator_for(schema, offline=True, validate_formats=False)
    return CompiledTool(
        spec=tool,
        args_type=typed,
        validator=validator,
        context=tool_context(tool.name, tool.effects, tool.risk_tier),
    )


@dataclass(frozen=True)
class Catalogue:
    """A workspace's compiled tools, by name."""

    tools: Mapping[str, CompiledTool]

    def __post_init__(self) -> None:
        effects = {e for tool in self.tools.values() for e in tool.spec.effects}
        clashes = sorted((effects | set(WELL_KNOWN_EFFECTS)) & set(self.tools))
        if clashes:
            raise CatalogueError(
                f"tool names {clashes} are also effect names; Cedar would not tell the tool from "
                "the group of tools with that effect"
            )

    def get(self, name: str) -> CompiledTool | None:
        return self.tools.get(name)

    @cached_property
    def effects(self) -> list[str]:
        """Every effect a policy may count (`context.task.effect_calls`). Read by every
        decision, so computed once."""
        used = {e for tool in self.tools.values() for e in tool.spec.effects}
        return sorted(used | set(WELL_KNOWN_EFFECTS))

    def cedar_schema(self) -> dict[str, Any]:
        return cedar_schema(
            (name, tool.spec.effects, tool.spec.sinks, tool.args_type)
            for name, tool in sorted(self.tools.items())
        )


__all__ = ["ArgumentError", "Catalogue", "CompiledTool", "compile_tool"]
