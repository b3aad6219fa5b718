"""The JSON Schema -> Cedar mapping: each shape tools use, and each refusal, with its reason."""

from __future__ import annotations

from typing import Any

import pytest

from tether.catalogue import ArgumentError, Catalogue, compile_tool
from tether.catalogue.json_schema import args_type, resolve, to_cedar
from tether.errors import CatalogueError, InvalidInput
from tether.model import Tool


def typed(schema: dict[str, Any]) -> dict[str, Any]:
    """The Cedar schema fragment of an argument schema."""
    return args_type(resolve(schema)).to_schema()


def tool(name: str = "t", schema: dict[str, Any] | None = None, **kw: Any) -> Tool:
    kw.setdefault("effects", ("read",))
    return Tool(workspace="acme", name=name, args_schema=schema or {"type": "object"}, **kw)


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or []}


def test_scalars_and_required() -> None:
    schema = obj(
        {
            "s": {"type": "string", "format": "email"},
            "i": {"type": "integer"},
            "b": {"type": "boolean"},
        },
        ["s"],
    )
    assert typed(schema) == {
        "type": "Record",
        "attributes": {
            "s": {"type": "String", "required": True},
            "i": {"type": "Long", "required": False},
            "b": {"type": "Boolean", "required": False},
        },
    }


def test_numbers_are_decimals_and_enums_strings() -> None:
    attrs = typed(obj({"n": {"type": "number"}, "e": {"enum": ["a", "b"]}}))["attributes"]
    assert attrs["n"] == {"type": "Extension", "name": "decimal", "required": False}
    assert attrs["e"] == {"type": "String", "required": False}


def test_arrays_are_sets_and_nested_objects_records() -> None:
    schema = obj(
        {
            "tags": {"type": "array", "items": {"type": "string"}},
            "to": obj({"name": {"type": "string"}, "port": {"type": "integer"}}, ["name"]),
        }
    )
    attrs = typed(schema)["attributes"]
    assert attrs["tags"] == {"type": "Set", "element": {"type": "String"}, "required": False}
    assert attrs["to"]["attributes"]["name"] == {"type": "String", "required": True}
    assert attrs["to"]["attributes"]["port"] == {"type": "Long", "required": False}


@pytest.mark.parametrize(
    "nullable",
    [
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"oneOf": [{"type": "null"}, {"type": "string"}]},
    ],
)
def test_nullable_required_argument_becomes_optional(nullable: dict[str, Any]) -> None:
    assert typed(obj({"x": nullable}, ["x"]))["attributes"]["x"] == {
        "type": "String",
        "required": False,
    }


def test_integer_or_number_is_decimal() -> None:
    attrs = typed(obj({"x": {"type": ["integer", "number"]}}))["attributes"]
    assert attrs["x"]["name"] == "decimal"


def test_union_of_simple_types_is_a_tagged_record() -> None:
    attrs = typed(obj({"x": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}))["attributes"]
    assert attrs["x"] == {
        "type": "Record",
        "attributes": {
            "integer": {"type": "Long", "required": False},
            "string": {"type": "String", "required": False},
        },
        "required": False,
    }


def test_local_refs_are_inlined() -> None:
    schema = {
        "$defs": {"addr": obj({"host": {"type": "string"}}, ["host"])},
        **obj({"a": {"$ref": "#/$defs/addr"}}),
    }
    assert typed(schema)["attributes"]["a"]["attributes"]["host"]["type"] == "String"


def test_tool_without_properties_takes_no_arguments() -> None:
    assert typed({"type": "object"}) == {"type": "Record", "attributes": {}}


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (obj({"meta": {"type": "object"}}), "argument `meta`"),
        (obj({"m": {"type": "object", "additionalProperties": {"type": "string"}}}), "map"),
        (
            {
                "$defs": {"n": obj({"next": {"$ref": "#/$defs/n"}})},
                **obj({"n": {"$ref": "#/$defs/n"}}),
            },
            "recursive",
        ),
        (obj({"t": {"type": "array", "prefixItems": [{"type": "string"}]}}), "prefixItems"),
        (obj({"t": {"type": "array"}}), "items"),
        (obj({"x": {"anyOf": [{"type": "string"}, obj({"a": {"type": "string"}})]}}), "union"),
        (obj({"x": {"not": {"type": "string"}}}), "`not`"),
        (obj({"__extn": {"type": "string"}}), "reserved"),
        (obj({"x": {}}), "no type"),
        (obj({"x": {"type": "null"}}), "only be null"),
        ({"type": "string"}, "must describe an object"),
        ({"type": "strin"}, "not valid JSON Schema"),
        (obj({"x": {"$ref": "https://example.com/s.json"}}), "$ref"),
    ],
)
def test_untypable_schemas_are_refused_with_the_reason(
    schema: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(CatalogueError, match=None) as info:
        compile_tool(tool(schema=schema))
    assert fragment in str(info.value)
    assert "tool 't'" in str(info.value)


def test_values_convert_to_cedar_json() -> None:
    compiled = compile_tool(
        tool(
            schema=obj(
                {
                    "amount": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "note": {"type": ["string", "null"]},
                    "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                }
            )
        )
    )
    assert compiled.cedar_args({"amount": 12, "tags": ["a"], "note": None, "id": 7}) == {
        "amount": {"__extn": {"fn": "decimal", "arg": "12.0"}},
        "tags": ["a"],
        "id": {"integer": 7},
    }
    assert compiled.cedar_args({"amount": 0.1234})["amount"]["__extn"]["arg"] == "0.1234"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"amount": 0.12345}, "more than 4 decimal places"),
        ({"amount": 1e20}, "outside the range"),
        ({"n": 2**63}, "64-bit"),
        ({"surprise": 1}, "`surprise`: not declared"),
        ({"n": "3"}, 'is not of type "integer"'),
        ([], "must be a JSON object"),
    ],
)
def test_values_policies_cannot_see_faithfully_are_refused(args: Any, fragment: str) -> None:
    compiled = compile_tool(
        tool(schema=obj({"amount": {"type": "number"}, "n": {"type": "integer"}}))
    )
    with pytest.raises(ArgumentError) as info:
        compiled.cedar_args(args)
    assert fragment in str(info.value)


def test_booleans_are_not_integers() -> None:
    with pytest.raises(ArgumentError):
        to_cedar(args_type(obj({"n": {"type": "integer"}})), {"n": True})


def test_sinks_must_be_declared_arguments() -> None:
    with pytest.raises(CatalogueError, match=r"sink arguments \['url'\]"):
        compile_tool(tool(schema=obj({"to": {"type": "string"}}), sinks=("url",)))


def test_tool_needs_an_effect_and_a_plain_name() -> None:
    with pytest.raises(CatalogueError, match="declares no effects"):
        compile_tool(tool(effects=()))
    with pytest.raises(InvalidInput, match="tool name"):
        compile_tool(tool(name="send\u0435mail"))  # Cyrillic "е": a confusable
    with pytest.raises(InvalidInput, match="effect"):
        compile_tool(tool(effects=("Exfil!",)))


def test_tool_named_like_an_effect_group_is_refused() -> None:
    with pytest.raises(CatalogueError, match="also effect names"):
        Catalogue({"read": compile_tool(tool("read")), "x": compile_tool(tool("x"))})


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = obj({"x": schema})
    return schema


def test_deeply_nested_arguments_type_and_too_deep_schemas_are_refused() -> None:
    assert compile_tool(tool(schema=obj({"x": nested(20)})))
    for depth in (40, 3000):  # Cedar reads its schema on a bounded stack; 3000 breaks Python's
        with pytest.raises(CatalogueError, match="nests deeper than 64 levels"):
            compile_tool(tool(schema=obj({"x": nested(depth)})))


def test_a_schema_that_inlines_exponentially_is_refused_at_once() -> None:
    # Each definition refers to the next twice: inlined, 2**40 copies of the last.
    defs = {
        f"d{i}": obj({"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}})
        for i in range(40)
    }
    defs["d40"] = {"type": "string"}
    schema = {**obj({"x": {"$ref": "#/$defs/d0"}}), "$defs": defs}
    with pytest.raises(CatalogueError, match="too large"):
        compile_tool(tool(schema=schema))


@pytest.mark.parametrize("draft", [None, "http://json-schema.org/draft-07/schema#"])
def test_format_is_an_annotation_whatever_the_draft(draft: str | None) -> None:
    schema = obj({"to": {"type": "string", "format": "email"}})
    if draft is not None:
        schema["$schema"] = draft
    assert compile_tool(tool(schema=schema)).cedar_args({"to": "not an address"}) == {
        "to": "not an address"
    }
