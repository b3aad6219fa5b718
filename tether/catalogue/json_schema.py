"""JSON Schema → Cedar types, and argument values → Cedar values.

A policy must see every argument a tool receives, typed, so that `context.args.recipent` fails
validation instead of silently never matching. This module maps the JSON Schema shapes real tools
use onto Cedar types, and refuses (with the path and the reason) anything it cannot type; it never
half-types a schema. The mapping is documented in docs/policy-guide.md ("How arguments are typed"):

| JSON Schema | Cedar |
|---|---|
| `string` (any `format`, `enum` of strings) | `String` |
| `integer` | `Long` |
| `number` | `decimal` (at most 4 fractional digits; a value that needs more is refused) |
| `boolean` | `Bool` |
| `array` with `items` | `Set<items>` (order and duplicates are not kept) |
| `object` with `properties` | record; `required` properties are required attributes |
| `null` in a union, or `type: [T, "null"]` | the attribute is optional; a null value is absent |
| `anyOf`/`oneOf`/`type` list of `integer` and `number` | `decimal` |
| `anyOf`/`oneOf`/`type` list of other simple types | record `{string?, integer?, number?,
  boolean?}` with the one present |
| local `$ref`/`$defs` | inlined; a recursive schema is refused |

Arguments not declared in `properties` are refused at decision time whatever
`additionalProperties` says: a policy cannot reason about what it cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

import jsonschema_rs

from tether.errors import CatalogueError

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DECIMAL_LIMIT = Decimal("922337203685477.5807")
DECIMAL_PLACES = 4

# Keys that Cedar's JSON value format reserves: an argument named like this could smuggle an
# extension value or an entity reference into the context.
RESERVED_KEYS = frozenset({"__extn", "__entity", "__expr"})

# A schema as it will be used, with its `$ref`s inlined, must stay small and shallow: the inlined
# form of a few `$defs` that each refer to the next twice is exponential (a tool catalogue can come
# from a third-party MCP server), and Cedar reads its schema on a bounded stack.
MAX_SCHEMA_NODES = 20_000  # values in the inlined schema
MAX_SCHEMA_DEPTH = 64  # nesting of the inlined schema, as JSON

_SCALAR_JSON_TYPES = ("string", "integer", "number", "boolean")
_UNSUPPORTED_KEYWORDS = (
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "prefixItems",
    "dependentSchemas",
    "unevaluatedProperties",
    "propertyNames",
)


@dataclass(frozen=True)
class CedarType:
    """A Cedar type for an argument, with what is needed to convert values to it.

    `kind` is one of String, Long, decimal, Boolean, Set, Record, Union. A Union is our encoding
    of a JSON union of scalars: a Cedar record with one optional attribute per JSON type.
    """

    kind: str
    element: CedarType | None = None
    attributes: dict[str, tuple[CedarType, bool]] = field(default_factory=dict)
    members: dict[str, CedarType] = field(default_factory=dict)

    def to_schema(self) -> dict[str, Any]:
        """This type as a fragment of a Cedar JSON schema."""
        if self.kind == "decimal":
            return {"type": "Extension", "name": "decimal"}
        if self.kind == "Set":
            assert self.element is not None
            return {"type": "Set", "element": self.element.to_schema()}
        if self.kind == "Record":
            return {
                "type": "Record",
                "attributes": {
                    name: {**t.to_schema(), "required": required}
                    for name, (t, required) in self.attributes.items()
                },
            }
        if self.kind == "Union":
            return {
                "type": "Record",
                "attributes": {
                    name: {**t.to_schema(), "required": False} for name, t in self.members.items()
                },
            }
        return {"type": self.kind}

    @property
    def is_plain(self) -> bool:
        """True when a validated JSON value already is its Cedar value (no conversion needed)."""
        if self.kind in ("String", "Long", "Boolean"):
            return True
        if self.kind == "Set":
            assert self.element is not None
            return self.element.is_plain
        if self.kind == "Record":
            return all(t.is_plain and req for t, req in self.attributes.values())
        return False


STRING = CedarType("String")
LONG = CedarType("Long")
DECIMAL = CedarType("decimal")
BOOLEAN = CedarType("Boolean")
_BY_JSON_TYPE = {"string": STRING, "integer": LONG, "number": DECIMAL, "boolean": BOOLEAN}


class ArgumentError(ValueError):
    """An argument value that cannot be given to a policy; `path` names it (`to`, `items[2]`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"argument `{path}`: {message}" if path else message)


def resolve(schema: Any) -> dict[str, Any]:
    """The schema checked against the JSON Schema meta-schema, with local `$ref`s inlined.

    Nothing is fetched: a `$ref` to anything outside the schema is refused.
    """
    if not isinstance(schema, dict):
        raise CatalogueError("the argument schema must be a JSON object")
    _check_size(schema)
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        raise CatalogueError(
            f"the argument schema is not valid JSON Schema: {exc.message}"
        ) from exc
    try:
        resolved: dict[str, Any] = jsonschema_rs.dereference(schema, offline=True)
    except Exception as exc:  # ReferencingError and friends: refuse, naming the cause
        raise CatalogueError(
            f"the argument schema has a $ref that cannot be resolved: {exc}"
        ) from exc
    return resolved


def _check_size(schema: dict[str, Any]) -> None:
    """Refuse a schema whose inlined form is too large or too deep, before anything inlines it.

    Walks the schema as inlining would, following local `$ref`s, within the budgets: the cost is
    bounded by the budgets, never by what the schema would expand to. A `$ref` back into its own
    path (a recursive schema) is not followed: typing refuses it, naming the path. A `$ref` that
    does not resolve is left for `resolve` to refuse."""
    stack: list[tuple[Any, int, frozenset[str]]] = [(schema, 1, frozenset())]
    nodes = 0
    while stack:
        value, depth, followed = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise CatalogueError(
                f"the argument schema is too large: more than {MAX_SCHEMA_NODES} values once its "
                "$refs are inlined"
            )
        if depth > MAX_SCHEMA_DEPTH:
            raise CatalogueError(
                f"the argument schema nests deeper than {MAX_SCHEMA_DEPTH} levels once its $refs "
                "are inlined"
            )
        if isinstance(value, dict):
            stack.extend((child, depth + 1, followed) for child in value.values())
            ref = value.get("$ref")
            if isinstance(ref, str) and ref not in followed:
                target = _local_target(schema, ref)
                if target is not None:
                    stack.append((target, depth + 1, followed | {ref}))
        elif isinstance(value, list):
            stack.extend((child, depth + 1, followed) for child in value)


def _local_target(schema: dict[str, Any], ref: str) -> Any:
    """What a local `$ref` (`#/$defs/name`) points at in `schema`, or None."""
    if not ref.startswith("#"):
        return None
    value: Any = schema
    for part in unquote(ref[1:]).split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def args_type(schema: dict[str, Any]) -> CedarType:
    """The Cedar record type of a tool's (resolved) argument schema, or CatalogueError saying
    what cannot be typed and where."""
    kind = schema.get("type", "object" if "properties" in schema else None)
    if kind != "object":
        raise CatalogueError("the argument schema must describe an object (`type: object`)")
    return _object(schema, "", top_level=True)


def _fail(path: str, message: str) -> CatalogueError:
    where = f"argument `{path}`" if path else "the argument schema"
    return CatalogueError(f"{where} cannot be typed for policies: {message}")


def _type(schema: Any, path: str) -> tuple[CedarType, bool]:
    """(type, nullable) of one schema node."""
    if schema is True or schema == {}:
        raise _fail(path, "it has no type (any value is allowed); declare its type")
    if not isinstance(schema, dict):
        raise _fail(path, "its schema is not an object")
    if "$ref" in schema:
        raise _fail(path, "it is recursive; recursive schemas cannot be typed")
    for keyword in _UNSUPPORTED_KEYWORDS:
        if keyword in schema:
            raise _fail(path, f"the `{keyword}` keyword is not supported")
    if "allOf" in schema:
        members = schema["allOf"]
        if len(members) != 1:
            raise _fail(path, "`allOf` with several schemas is not supported; merge them")
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _type({**rest, **members[0]}, path)

    branches = _branches(schema, path)
    nullable = "null" in branches
    types = [t for t in branches.values() if t is not None]
    if not types:
        raise _fail(path, "it can only be null")
    if len(types) == 1:
        return types[0], nullable
    return _union(branches, path), nullable


def _branches(schema: dict[str, Any], path: str) -> dict[str, CedarType | None]:
    """The alternatives of a node, keyed by JSON type name; `null` maps to None when allowed."""
    alternatives = schema.get("anyOf", schema.get("oneOf"))
    if alternatives is not None:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        return _union_branches(alternatives, rest, path)
    declared = schema.get("type")
    if declared is None:
        if "enum" in schema or "const" in schema:
            values = schema.get("enum", [schema.get("const")])
            declared = sorted({_enum_value_type(v, path) for v in values})
        elif "properties" in schema:
            declared = "object"
        else:
            raise _fail(path, "it has no type; declare `type`")
    return {
        name: _declared_type(name, schema, path)
        for name in (declared if isinstance(declared, list) else [declared])
    }


def _union_branches(
    alternatives: list[Any], rest: dict[str, Any], path: str
) -> dict[str, CedarType | None]:
    merged: dict[str, CedarType | None] = {}
    for member in alternatives:
        sub = {**rest, **member} if isinstance(member, dict) else member
        if isinstance(sub, dict) and sub.get("type") == "null":
            merged["null"] = None
            continue
        t, nullable = _type(sub, path)
        if nullable:
            merged["null"] = None
        name = _json_name(t, path)
        earlier = merged.get(name)
        merged[name] = t if earlier is None else _merge_alternatives(earlier, t, path)
    return merged


def _merge_alternatives(a: CedarType, b: CedarType, path: str) -> CedarType:
    """One type for two alternatives of the same JSON type (`anyOf: [{required: [a]},
    {required: [b]}]`): records merge, an attribute required only if both require it."""
    if a == b:
        return a
    if a.kind != "Record" or b.kind != "Record":
        raise _fail(path, "alternatives of the same type with different shapes cannot be typed")
    attributes: dict[str, tuple[CedarType, bool]] = {}
    for name in [*a.attributes, *(n for n in b.attributes if n not in a.attributes)]:
        in_a, in_b = a.attributes.get(name), b.attributes.get(name)
        if in_a is not None and in_b is not None:
            sub_path = f"{path}.{name}" if path else name
            attributes[name] = (
                _merge_alternatives(in_a[0], in_b[0], sub_path),
                in_a[1] and in_b[1],
            )
        else:
            only = in_a if in_a is not None else in_b
            assert only is not None
            attributes[name] = (only[0], False)
    return CedarType("Record", attributes=attributes)


def _declared_type(name: str, schema: dict[str, Any], path: str) -> CedarType | None:
    if name == "null":
        return None
    if name in _BY_JSON_TYPE:
        return _BY_JSON_TYPE[name]
    if name == "array":
        return _array(schema, path)
    if name == "object":
        return _object(schema, path, top_level=False)
    raise _fail(path, f"unknown type {name!r}")


_JSON_NAME = {
    "String": "string",
    "Long": "integer",
    "decimal": "number",
    "Boolean": "boolean",
    "Set": "array",
    "Record": "object",
}


def _json_name(t: CedarType, path: str) -> str:
    if t.kind not in _JSON_NAME:
        raise _fail(path, "nested unions are not supported")
    return _JSON_NAME[t.kind]


def _json_type(value: Any) -> str:
    """The JSON Schema type name of a Python JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _enum_value_type(value: Any, path: str) -> str:
    name = _json_type(value)
    if name not in (*_SCALAR_JSON_TYPES, "null"):
        raise _fail(path, "`enum`/`const` values must be strings, numbers, booleans or null")
    return name


def _union(branches: dict[str, CedarType | None], path: str) -> CedarType:
    kinds = {name for name in branches if name != "null"}
    if kinds == {"integer", "number"}:
        return DECIMAL
    if not kinds <= set(_SCALAR_JSON_TYPES):
        raise _fail(path, "a union of objects or arrays cannot be typed; only simple types mix")
    return CedarType("Union", members={name: _BY_JSON_TYPE[name] for name in sorted(kinds)})


def _array(schema: dict[str, Any], path: str) -> CedarType:
    items = schema.get("items")
    if not isinstance(items, dict):
        raise _fail(path, "an array needs one `items` schema (tuples are not supported)")
    element, nullable = _type(items, f"{path}[]")
    if nullable:
        raise _fail(f"{path}[]", "array elements cannot be null")
    return CedarType("Set", element=element)


def _object(schema: dict[str, Any], path: str, *, top_level: bool) -> CedarType:
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        raise _fail(
            path, "a map with arbitrary keys (`additionalProperties` schema) cannot be typed"
        )
    if properties is None:
        # A tool with no arguments often omits `properties`; a nested free-form object is a map.
        if not (extra is False or (top_level and extra is None)):
            raise _fail(path, "an object without `properties` cannot be typed; declare them")
        properties = {}
    required = set(schema.get("required", ()))
    attributes: dict[str, tuple[CedarType, bool]] = {}
    for name, sub in properties.items():
        sub_path = f"{path}.{name}" if path else name
        if name in RESERVED_KEYS:
            raise _fail(sub_path, "this name is reserved by Cedar's JSON format")
        t, nullable = _type(sub, sub_path)
        attributes[name] = (t, name in required and not nullable)
    return CedarType("Record", attributes=attributes)


def to_cedar(t: CedarType, value: Any, path: str = "") -> Any:
    """A JSON value (already valid against the tool's schema) as a Cedar JSON value.

    Raises ArgumentError for anything a policy could not be shown faithfully: undeclared
    arguments, integers outside Cedar's 64-bit range, numbers needing more than 4 decimals.
    """
    return _CONVERTERS[t.kind](t, value, path)


def _string(t: CedarType, value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ArgumentError(path, "expected a string")
    return value


def _long(t: CedarType, value: Any, path: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 5.0 as an integer
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(path, "expected an integer")
    if not LONG_MIN <= value <= LONG_MAX:
        raise ArgumentError(path, "integer outside the 64-bit range policies can compare")
    return value


def _boolean(t: CedarType, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(path, "expected a boolean")
    return value


def _decimal(t: CedarType, value: Any, path: str) -> dict[str, Any]:
    return {"__extn": {"fn": "decimal", "arg": _decimal_text(value, path)}}


def _set(t: CedarType, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ArgumentError(path, "expected an array")
    assert t.element is not None
    return [to_cedar(t.element, v, f"{path}[{i}]") for i, v in enumerate(value)]


def _union_value(t: CedarType, value: Any, path: str) -> dict[str, Any]:
    name = _json_type(value)
    # 5 and 5.0 are one JSON number, and JSON Schema calls it an integer: it goes to the same
    # member either way, so a policy on `integer` cannot be sidestepped by writing 5.0.
    if name == "number" and isinstance(value, float) and value.is_integer():
        name = "integer" if "integer" in t.members else "number"
    elif name == "integer" and name not in t.members:
        name = "number"
    member = t.members.get(name)
    if member is None:
        allowed = ", ".join(sorted(t.members))
        raise ArgumentError(path, f"{name} is not one of the allowed types ({allowed})")
    return {name: to_cedar(member, value, path)}


def _record(t: CedarType, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ArgumentError(path, "expected an object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub_path = f"{path}.{key}" if path else str(key)
        declared = t.attributes.get(key)
        if declared is None:
            raise ArgumentError(sub_path, "not declared in the tool's argument schema")
        if item is None:
            if declared[1]:
                raise ArgumentError(sub_path, "is required and cannot be null")
            continue
        out[key] = to_cedar(declared[0], item, sub_path)
    for key, (_, required) in t.attributes.items():
        if required and key not in out:
            sub_path = f"{path}.{key}" if path else key
            raise ArgumentError(sub_path, "is required")
    return out


def _decimal_text(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentError(path, "expected a number")
    try:
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    except InvalidOperation as exc:  # nan and infinities
        raise ArgumentError(path, "not a finite number") from exc
    if not number.is_finite():
        raise ArgumentError(path, "not a finite number")
    if abs(number) > DECIMAL_LIMIT:
        raise ArgumentError(path, "number outside the range policies can compare")
    exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > DECIMAL_PLACES:
        raise ArgumentError(
            path, f"number has more than {DECIMAL_PLACES} decimal places, which policies cannot see"
        )
    places = max(1, -exponent)  # Cedar's decimal literal needs at least one fractional digit
    return format(number.quantize(Decimal(1).scaleb(-places)), "f")


_CONVERTERS = {
    "String": _string,
    "Long": _long,
    "Boolean": _boolean,
    "decimal": _decimal,
    "Set": _set,
    "Union": _union_value,
    "Record": _record,
}
