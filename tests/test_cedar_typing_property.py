"""Property: the context the pipeline builds always matches the Cedar schema of the catalogue.

JSON Schemas are generated from the shapes json_schema.py documents as supported (strings with
and without `enum`, integers, numbers, booleans, arrays with `items`, nested objects with
`properties` and `required`, nullable types as type lists or `anyOf` with null, unions of simple
types, local `$defs`/`$ref`), values valid for each schema are generated from the schema itself,
and then:

- `compile_tool` accepts the schema;
- `cedar_args` accepts the value, unless a number in it cannot be held by Cedar (an integer
  outside 64 bits, a number outside `decimal`'s range or with more than 4 decimal places), in
  which case, and only then, it raises ArgumentError saying so;
- Cedar, given the generated schema, accepts the context `decision_context` builds from it (a
  context that does not match is NoDecision, "context ... is not valid");
- null is never passed on: a null optional attribute is absent;
- an argument the schema does not declare is refused.

Examples then pin each documented refusal of a schema, naming the argument path.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import cedarpy
import jsonschema_rs
import pytest
from conftest import sample_context
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from tether.catalogue import (
    ArgumentError,
    Catalogue,
    CompiledTool,
    compile_tool,
)
from tether.catalogue.json_schema import RESERVED_KEYS
from tether.errors import CatalogueError
from tether.model import Agent, Tool, Workspace
from tether.policy import parse_schema, workspace_entities

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    report_multiple_bugs=False,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DECIMAL_MIN, DECIMAL_MAX = Decimal("-922337203685477.5808"), Decimal("922337203685477.5807")
SCALARS = ("string", "integer", "number", "boolean")
UNREPRESENTABLE = (
    "outside the 64-bit range",
    "outside the range policies can compare",
    "more than 4 decimal places",
    "not a finite number",
)
WORKSPACE = Workspace(name="w", tenant="t", trust_domain="example.org", created_at=0.0)
AGENT = Agent("w", "alice", "coder", "ann", "spiffe://example.org/ws/w/agent/alice")
PERMIT_ALL = cedarpy.PolicySet.from_str("permit(principal, action, resource);")


# ---------------------------------------------------------------------------------------------
# what Cedar can hold (the documented rule, written here independently of json_schema.py)


def fits_long(value: int) -> bool:
    return LONG_MIN <= value <= LONG_MAX


def fits_decimal(value: int | float) -> bool:
    number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if not number.is_finite() or not DECIMAL_MIN <= number <= DECIMAL_MAX:
        return False
    exponent = number.normalize().as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -4


def representable(value: Any, types: frozenset[str]) -> bool:
    """Whether a scalar `value` of a node allowing the JSON `types` can be given to Cedar.

    Per the documented mapping: `integer` alone (or mixed with non-number types) is a Long;
    `number`, and `integer` mixed only with `number`, are decimals. A whole float is the same
    JSON number as the integer, so it is held wherever the integer would be.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    as_decimal = "integer" not in types or types == {"integer", "number"}
    if isinstance(value, float) and not (value.is_integer() and not as_decimal):
        return fits_decimal(value)
    return fits_decimal(value) if as_decimal else fits_long(int(value))


# ---------------------------------------------------------------------------------------------
# schemas


names = st.one_of(
    st.text(max_size=6),
    st.sampled_from(("$ref", "$id", "type", "properties", "null", "__cedar", "", "a b", "é")),
).filter(lambda n: n not in RESERVED_KEYS)


def json_key(value: Any) -> tuple[str, Any]:
    """Equality as JSON Schema's `enum` sees it (1 == 1.0, True != 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return type(value).__name__, value
    return "number", Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def decimal_floats() -> st.SearchStrategy[float]:
    return st.integers(0, 4).flatmap(
        lambda places: st.decimals(
            min_value=-(10**9), max_value=10**9, places=places, allow_nan=False
        ).map(float)
    )


enum_scalars = st.one_of(
    st.text(max_size=5),
    st.integers(-1000, 1000),
    decimal_floats(),
    st.booleans(),
)


@st.composite
def scalar_node(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("type", "type", "enum", "enum_typed", "const")))
    if kind == "type":
        json_type = draw(st.sampled_from(SCALARS))
        node: dict[str, Any] = {"type": json_type}
        if json_type == "string" and draw(st.booleans()):
            node["format"] = draw(st.sampled_from(("email", "uri", "date-time")))
        return node
    if kind == "enum_typed":
        values = draw(st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True))
        return {"type": "string", "enum": values}
    if kind == "const":
        return {"const": draw(enum_scalars)}
    values = draw(st.lists(enum_scalars, min_size=1, max_size=4, unique_by=json_key))
    return {"enum": values}


@st.composite
def union_node(draw: st.DrawFn) -> dict[str, Any]:
    types = draw(st.lists(st.sampled_from(SCALARS), min_size=2, max_size=4, unique=True))
    form = draw(st.sampled_from(("type", "anyOf", "oneOf")))
    if form == "oneOf" and {"integer", "number"} <= set(types):
        form = "anyOf"  # an integer matches both: no value of `integer` would be valid
    if form == "type":
        return {"type": types}
    return {form: [{"type": t} for t in types]}


def nullable(node: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """`node` that also allows null, in one of the ways schemas say it."""
    if "enum" in node:
        with_null = {**node, "enum": [*node["enum"], None]}
        if "type" in node:
            with_null["type"] = [node["type"], "null"]
        return with_null
    if isinstance(node.get("type"), list):
        return {**node, "type": [*node["type"], "null"]}
    for form in ("anyOf", "oneOf"):
        if form in node:
            return {form: [*node[form], {"type": "null"}]}
    if isinstance(node.get("type"), str) and draw(st.booleans()):
        return {**node, "type": [node["type"], "null"]}
    return {"anyOf": [node, {"type": "null"}]}


@st.composite
def node(draw: st.DrawFn, depth: int, defs: dict[str, Any], *, may_be_null: bool) -> dict[str, Any]:
    kinds = ["scalar", "scalar", "union"] + (["array", "object"] if depth > 0 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        out = draw(scalar_node())
    elif kind == "union":
        out = draw(union_node())
    elif kind == "array":
        items = draw(node(depth - 1, defs, may_be_null=False))
        out = {"type": "array", "items": items}
    else:
        out = draw(object_node(depth - 1, defs))
    if may_be_null and draw(st.booleans()):
        out = nullable(out, draw)
    if draw(st.integers(0, 4)) == 0:  # move it into $defs and refer to it
        name = f"d{len(defs)}"
        defs[name] = out
        out = {"$ref": f"#/$defs/{name}"}
        if draw(st.booleans()):
            out["description"] = "a reference"
    return out


@st.composite
def object_node(draw: st.DrawFn, depth: int, defs: dict[str, Any]) -> dict[str, Any]:
    properties = draw(st.dictionaries(names, node(depth, defs, may_be_null=True), max_size=4))
    out: dict[str, Any] = {"type": "object", "properties": properties}
    required = [n for n in properties if draw(st.booleans())]
    if required or draw(st.booleans()):
        out["required"] = required
    if draw(st.booleans()):
        out["additionalProperties"] = False
    return out


@st.composite
def argument_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A tool's argument schema (a JSON object schema), `$defs` included."""
    defs: dict[str, Any] = {}
    schema = draw(object_node(2, defs))
    if draw(st.integers(0, 5)) == 0:
        defs["args"] = schema
        schema = {"$ref": "#/$defs/args"}
    if defs:
        schema["$defs"] = defs
    if draw(st.booleans()):
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---------------------------------------------------------------------------------------------
# values valid for a schema, derived from it


def deref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def json_types(schema: dict[str, Any], root: dict[str, Any]) -> frozenset[str]:
    """The JSON types a value of `schema` can have (null included)."""
    schema = deref(schema, root)
    for form in ("anyOf", "oneOf"):
        if form in schema:
            return frozenset().union(*(json_types(b, root) for b in schema[form]))
    if "enum" in schema or "const" in schema:
        return frozenset(json_type(v) for v in schema.get("enum", [schema.get("const")]))
    declared = schema["type"]
    return frozenset(declared if isinstance(declared, list) else [declared])


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def integers() -> st.SearchStrategy[int]:
    """Mostly within 64 bits; the bounds (and just past them) are drawn often."""
    return st.one_of(st.integers(-1000, 1000), st.integers(LONG_MIN - 1, LONG_MAX + 1))


def numbers() -> st.SearchStrategy[int | float]:
    """JSON numbers: mostly with at most 4 decimals, some with more or out of range."""
    return st.one_of(
        decimal_floats(),
        decimal_floats(),
        st.integers(-(10**6), 10**6),
        st.integers(-(10**16), 10**16),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def values_for(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for `schema` (the subset of JSON Schema generated above)."""
    schema = deref(schema, root)
    for form in ("anyOf", "oneOf"):
        if form in schema:
            return st.one_of([values_for(b, root) for b in schema[form]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    declared = schema["type"]
    types = declared if isinstance(declared, list) else [declared]
    return st.one_of([typed_values(t, schema, root) for t in types])


def typed_values(json_type: str, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    if json_type == "null":
        return st.none()
    if json_type == "string":
        return st.text(max_size=8)
    if json_type == "integer":
        return integers()
    if json_type == "number":
        return numbers()
    if json_type == "boolean":
        return st.booleans()
    if json_type == "array":
        return st.lists(values_for(schema["items"], root), max_size=3)
    assert json_type == "object"
    return object_values(schema, root)


@st.composite
def object_values(draw: st.DrawFn, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    required = set(schema.get("required", ()))
    out = {}
    for name, sub in schema["properties"].items():
        if name in required or draw(st.booleans()):
            out[name] = draw(values_for(sub, root))
    return out


def check_representable(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether every number in `value` can be held by the Cedar type its schema maps to."""
    schema = deref(schema, root)
    if value is None:
        return True
    if isinstance(value, dict):
        properties = schema_of_object(schema, root)["properties"]
        return all(check_representable(v, properties[k], root) for k, v in value.items())
    if isinstance(value, list):
        items = schema_of_array(schema, root)["items"]
        return all(check_representable(v, items, root) for v in value)
    types = json_types(schema, root) - {"null"}
    return representable(value, types)


def schema_of_object(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    return branch_with(schema, root, "properties")


def schema_of_array(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    return branch_with(schema, root, "items")


def branch_with(schema: dict[str, Any], root: dict[str, Any], key: str) -> dict[str, Any]:
    """The (only) alternative of a possibly nullable node that has `key`."""
    schema = deref(schema, root)
    if key in schema:
        return schema
    for form in ("anyOf", "oneOf"):
        for branch in schema.get(form, ()):
            found = deref(branch, root)
            if key in found:
                return found
    raise AssertionError(f"no {key} in {schema}")


def nulls_in(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(nulls_in(v) for v in value.values())
    if isinstance(value, list):
        return any(nulls_in(v) for v in value)
    return False


@st.composite
def schemas_and_values(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = draw(argument_schemas())
    value = draw(values_for(schema, schema))
    return schema, value


# ---------------------------------------------------------------------------------------------
# the pipeline's side


def compiled(schema: dict[str, Any]) -> CompiledTool:
    return compile_tool(Tool(workspace="w", name="tool", args_schema=schema, effects=("read",)))


def cedar_check(tool: CompiledTool, args: Any, now: float = 1_700_000_000.0) -> Any:
    """Cedar's answer, with the catalogue's schema, to a request carrying these arguments."""
    schema = parse_schema(Catalogue({tool.name: tool}).cedar_schema())
    entities = workspace_entities(WORKSPACE, [AGENT], schema)
    catalogue = Catalogue({tool.name: tool})
    request = {
        "principal": {"type": "Agent", "id": AGENT.name},
        "action": {"type": "Action", "id": tool.name},
        "resource": {"type": "Workspace", "id": WORKSPACE.name},
        "context": sample_context(tool, catalogue, args, calls=3, now=now, converted=True),
    }
    return cedarpy.is_authorized(request, PERMIT_ALL, entities, schema)


def assert_accepted_by_cedar(tool: CompiledTool, args: Any) -> None:
    result = cedar_check(tool, args)
    assert result.diagnostics.errors == []
    assert result.decision is cedarpy.Decision.Allow


# ---------------------------------------------------------------------------------------------
# properties


UNION_OF_STRING_AND_NUMBER = (
    {"type": "object", "properties": {"v": {"type": ["string", "number"]}}},
    {"v": 5},
)


@SETTINGS
@example(UNION_OF_STRING_AND_NUMBER)
@given(schemas_and_values())
def test_the_context_of_any_valid_arguments_matches_the_cedar_schema(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    schema, value = case
    assert jsonschema_rs.validator_for(schema).is_valid(value), "generator bug: invalid value"
    tool = compiled(schema)
    if not check_representable(value, schema, schema):
        with pytest.raises(ArgumentError) as refused:
            tool.cedar_args(value)
        assert any(reason in str(refused.value) for reason in UNREPRESENTABLE), refused.value
        return
    args = tool.cedar_args(value)
    assert not nulls_in(args)
    assert_accepted_by_cedar(tool, args)


@SETTINGS
@given(schemas_and_values(), st.data())
def test_an_undeclared_argument_is_refused(
    case: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    schema, value = case
    tool = compiled(schema)
    try:
        tool.cedar_args(value)
    except ArgumentError:
        assume(False)  # refused already (a number out of range): the added key must be the cause
    value = copy.deepcopy(value)
    objects = [value, *nested_objects(value)]
    target = data.draw(st.sampled_from(objects))
    declared = declared_names(schema)
    key = data.draw(names.filter(lambda n: n not in declared))
    target[key] = data.draw(st.sampled_from(("x", 1, True, None, [], {})))
    with pytest.raises(ArgumentError):
        tool.cedar_args(value)


def nested_objects(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    children = value.values() if isinstance(value, dict) else value
    for child in children if isinstance(value, dict | list) else ():
        if isinstance(child, dict):
            found.append(child)
        found.extend(nested_objects(child))
    return found


def declared_names(schema: Any) -> set[str]:
    """Every property name declared anywhere in the schema."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, sub in schema.items():
            if key == "properties" and isinstance(sub, dict):
                found.update(sub)
            found |= declared_names(sub)
    elif isinstance(schema, list):
        for sub in schema:
            found |= declared_names(sub)
    return found


@SETTINGS
@given(st.data(), st.lists(names, max_size=3, unique=True), st.booleans())
def test_null_for_an_optional_attribute_is_absent(
    data: st.DataObject, others: list[str], required: bool
) -> None:
    defs: dict[str, Any] = {}
    inner = data.draw(node(1, defs, may_be_null=False))
    root: dict[str, Any] = {"$defs": defs}
    name = data.draw(names)
    properties = {n: {"type": "string"} for n in others if n != name}
    properties[name] = nullable(deref(inner, root), data.draw)
    schema = {
        "type": "object",
        "properties": properties,
        "required": [name] if required else [],
        **root,
    }
    value = {name: None, **{n: "s" for n in properties if n != name}}
    assert jsonschema_rs.validator_for(schema).is_valid(value)
    tool = compiled(schema)
    args = tool.cedar_args(value)
    assert name not in args
    assert_accepted_by_cedar(tool, args)


@SETTINGS
@given(st.integers(-(2**53), 2**53))
def test_an_integral_float_is_an_integer(number: int) -> None:
    """JSON Schema counts 5.0 as an integer (and a JSON client may send it so); it is a Long."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    value = {"n": float(number)}
    assert jsonschema_rs.validator_for(schema).is_valid(value)
    tool = compiled(schema)
    args = tool.cedar_args(value)
    assert args == {"n": number}
    assert_accepted_by_cedar(tool, args)


# ---------------------------------------------------------------------------------------------
# examples


def test_an_integer_is_a_valid_number_in_a_union() -> None:
    """`type: [string, number]` allows 5; it is the union's number, not refused."""
    schema, value = UNION_OF_STRING_AND_NUMBER
    tool = compiled(schema)
    args = tool.cedar_args(value)
    assert args == {"v": {"number": {"__extn": {"fn": "decimal", "arg": "5.0"}}}}
    assert_accepted_by_cedar(tool, args)


# Each shape, its values, and whether it is typed (True) or refused at registration (False).
ALTERNATIVE_SHAPES = {
    "required alternatives": (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        [{"a": "x"}, {"b": 1}],
        True,
    ),
    "arrays of different items": (
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "array", "items": {"type": "integer"}},
            ]
        },
        [["x"], [1]],
        False,  # Set<String> and Set<Long> have no common Cedar type
    ),
    "objects of different shapes": (
        {
            "anyOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        [{"a": "x"}, {"b": 1}],
        True,
    ),
}


@pytest.mark.parametrize("shape", sorted(ALTERNATIVE_SHAPES))
def test_alternatives_of_one_json_type_are_refused_or_all_accepted(shape: str) -> None:
    """`anyOf` branches of the same JSON type (objects, arrays) are typed as one, not the last.

    Either the schema is refused at registration, or every value valid for one of the branches
    is given to policies; typing the node as its last branch refuses the others' values.
    """
    node_schema, values, typed = ALTERNATIVE_SHAPES[shape]
    schema = {"type": "object", "properties": {"p": node_schema}}
    if not typed:
        _refused(schema)
        return
    tool = compiled(schema)
    for value in values:
        args = tool.cedar_args({"p": value})
        assert_accepted_by_cedar(tool, args)


def _refused(schema: dict[str, Any]) -> str:
    with pytest.raises(CatalogueError) as refused:
        compiled(schema)
    return str(refused.value)


def _wrapped(inner: dict[str, Any]) -> dict[str, Any]:
    """`inner` as the argument `outer.inner`, so the message must name the nested path."""
    return {
        "type": "object",
        "properties": {"outer": {"type": "object", "properties": {"inner": inner}}},
    }


REFUSED = {
    "free-form object": ({"type": "object"}, "`outer.inner`", "without `properties`"),
    "additionalProperties schema": (
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        "`outer.inner`",
        "additionalProperties",
    ),
    "tuple array": (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
        "`outer.inner`",
        "prefixItems",
    ),
    "array without items": ({"type": "array"}, "`outer.inner`", "items"),
    "object or string": (
        {"anyOf": [{"type": "object", "properties": {}}, {"type": "string"}]},
        "`outer.inner`",
        "union",
    ),
    "not": ({"type": "string", "not": {"const": "x"}}, "`outer.inner`", "`not`"),
    "reserved name": (
        {"type": "object", "properties": {"__extn": {"type": "string"}}},
        "`outer.inner.__extn`",
        "reserved",
    ),
    "no type": ({}, "`outer.inner`", "no type"),
}


@pytest.mark.parametrize("shape", sorted(REFUSED))
def test_a_shape_that_cannot_be_typed_is_refused_naming_its_path(shape: str) -> None:
    inner, path, why = REFUSED[shape]
    message = _refused(_wrapped(inner))
    assert path in message
    assert why in message
    assert "'tool'" in message


def test_a_recursive_schema_is_refused_naming_its_path() -> None:
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"value": {"type": "string"}, "next": {"$ref": "#/$defs/node"}},
            }
        },
    }
    message = _refused(schema)
    assert "`root.next`" in message
    assert "recursive" in message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": ["object", "null"], "properties": {}},
        {"anyOf": [{"type": "object", "properties": {}}, {"type": "string"}]},
    ],
)
def test_a_top_level_schema_that_is_not_an_object_is_refused(schema: dict[str, Any]) -> None:
    message = _refused(schema)
    assert "must describe an object" in message


def test_a_decimal_needing_more_than_four_places_is_refused() -> None:
    tool = compiled({"type": "object", "properties": {"x": {"type": "number"}}})
    with pytest.raises(ArgumentError) as refused:
        tool.cedar_args({"x": 0.00001})
    assert refused.value.path == "x"
    assert "more than 4 decimal places" in str(refused.value)
