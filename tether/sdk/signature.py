"""A Python function's signature as the JSON Schema of a tool's arguments.

msgspec already knows how to describe Python types as JSON Schema; we give it the parameters as a
Struct and inline its `$defs`. Parameters it cannot describe precisely (no annotation, `Any`,
free-form dicts) end up untyped, and the catalogue then refuses the tool, as it should.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

import jsonschema_rs
import msgspec

from tether.errors import CatalogueError


def args_schema_of(fn: Callable[..., Any]) -> dict[str, Any]:
    signature = inspect.signature(fn)
    hints = get_type_hints(fn)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise CatalogueError(f"{fn.__name__}: *args and **kwargs cannot be typed for policies")
        annotation = hints.get(name, Any)
        if param.default is inspect.Parameter.empty:
            fields.append((name, annotation))
        else:
            fields.append((name, annotation, param.default))
    struct = msgspec.defstruct(f"{fn.__name__}_args", fields)
    schema: dict[str, Any] = jsonschema_rs.dereference(msgspec.json.schema(struct), offline=True)
    schema.pop("$defs", None)
    schema.pop("$ref", None)
    schema.pop("title", None)
    return schema
