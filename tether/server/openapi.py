"""The OpenAPI 3.1 document, made from the endpoint table and the Structs its endpoints take and
give (msgspec writes their JSON Schemas), so the document cannot drift from the service."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from tether.names import SEGMENT_SCHEMA, TOOL_SCHEMA
from tether.server.endpoints import QUERY, Endpoint

PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "error": {"type": "string", "description": "an OAuth error code (a refused credential)"},
        "problems": {"type": "array", "description": "each problem of a policy bundle, located"},
        "retry_after": {"type": "number", "description": "seconds (429)"},
        "decision": {"type": "object", "description": "the decision recorded (a refused call)"},
    },
    "required": ["type", "title", "status", "detail"],
}
STRING = {"type": "string"}
# Path parameters that are names hold to the names' rules (tether/names.py); ids are strings.
PATH = {
    "workspace": {"type": "string", **SEGMENT_SCHEMA},
    "agent": {"type": "string", **SEGMENT_SCHEMA},
    "tool": {"type": "string", **TOOL_SCHEMA},
}
REFUSALS = {
    400: "The request is malformed, or breaks a rule of what it names",
    401: "No credential, or one that is refused",
    403: "The admin token holds no role that may do this in the workspace",
    404: "What the path names does not exist (or is in a workspace the token cannot see)",
    409: "The request conflicts with what is there now",
    413: "The body is over 1 MiB",
    429: "Past the agent's rate: try again after Retry-After seconds",
    503: "The store does not answer, or the request took too long: try again later",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
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
                str(e.status): _response(e.media_type, by_type.get(e.response)),
                **{str(status): _problem(status) for status in refusals(e)},
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": PATH.get(name, STRING)}
            for name in re.findall(r"{(\w+)}", e.path)
        ] + [
            {"name": name, "in": "query", "required": False, "schema": QUERY[name]}
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
            "schemas": {**components, "Problem": PROBLEM},
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


def refusals(endpoint: Endpoint) -> list[int]:
    """The statuses an endpoint may refuse a request with, from what it takes and who may call
    it: each is a problem document."""
    statuses = {413, 503}  # any request may carry a body, read (and refused past 1 MiB) first
    if endpoint.body is not None or endpoint.query:
        statuses |= {400}
    if endpoint.auth != "none":
        statuses |= {401}
    if endpoint.auth == "admin":
        statuses |= {403}
        if endpoint.method != "GET":  # a change: to what changed meanwhile, or already is
            statuses |= {409}
    if "{" in endpoint.path:
        statuses |= {404}
    if endpoint.auth in ("agent", "token"):
        statuses |= {429}
    return sorted(statuses)


def _problem(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": f"{REFUSALS[status]}: a problem (RFC 9457)",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if status in HEADERS:
        answer["headers"] = HEADERS[status]
    return answer


def _response(media_type: str, schema: Any) -> dict[str, Any]:
    if media_type != "application/json":
        return {"description": "OK", "content": {media_type: {"schema": STRING}}}
    if schema is None:
        return {"description": "OK"}
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}
