"""The OpenAPI 3.1 document, made from the endpoint table and the Structs its endpoints take and
give (msgspec writes their JSON Schemas), so the document cannot drift from the service."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from tether.server.endpoints import Endpoint

PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def document(endpoints: Iterable[Endpoint], server: str) -> dict[str, Any]:
    endpoints = list(endpoints)
    types = [t for e in endpoints for t in (e.body, e.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "security": _security(e),
            "x-tether-auth": e.auth if e.role is None else f"{e.auth}:{e.role}",
            "responses": {
                str(e.status): _response(by_type.get(e.response)),
                "default": {
                    "description": "A problem (RFC 9457)",
                    "content": {"application/problem+json": {"schema": PROBLEM}},
                },
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", e.path)
        ] + [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in e.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[e.body]}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tether", "version": "1"},
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer"},
                "agent": {"type": "http", "scheme": "dpop"},
            },
        },
    }


def _security(endpoint: Endpoint) -> list[dict[str, list[str]]]:
    if endpoint.auth in ("agent", "admin"):
        return [{endpoint.auth: []}]
    return []


def _response(schema: Any) -> dict[str, Any]:
    if schema is None:
        return {"description": "OK"}
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}
