"""Fixture MCP server for the `@modelcontextprotocol/conformance` server scenarios.

The conformance CLI (`conformance server --url ...`) connects to a server as an
MCP client and calls fixtures with fixed names, arguments and expected results.
This module serves exactly those fixtures on the low-level `mcp` 2.3.0 server
API, so the same scenarios can be run against it directly and through the
gateway.

Scenario -> fixture served here:

    server-initialize, ping        handshake and `ping` (SDK built-ins)
    logging-set-level              `logging/setLevel`, kept per session
    completion-complete            `completion/complete` (prompt arguments, template `id`)
    tools-list                     every tool has a name, description and inputSchema
    tools-call-simple-text         tool `test_simple_text`
    tools-call-image               tool `test_image_content` (1x1 PNG)
    tools-call-audio               tool `test_audio_content` (short silent WAV)
    tools-call-embedded-resource   tool `test_embedded_resource`
    tools-call-mixed-content       tool `test_multiple_content_types`
    tools-call-with-logging        tool `test_tool_with_logging` (3 info logs, 50 ms apart)
    tools-call-error               tool `test_error_handling` (result with isError: true)
    tools-call-with-progress       tool `test_tool_with_progress` (0, 50, 100 of 100)
    tools-call-sampling            tool `test_sampling` (`sampling/createMessage`)
    tools-call-elicitation         tool `test_elicitation` (`elicitation/create`)
    elicitation-sep1034-defaults   tool `test_elicitation_sep1034_defaults`
    elicitation-sep1330-enums      tool `test_elicitation_sep1330_enums`
    json-schema-2020-12            tool `json_schema_2020_12_tool` (keeps $schema, $defs,
                                   additionalProperties)
    server-sse-polling             tool `test_reconnection` (closes its SSE stream first when
                                   the transport offers that)
    server-sse-multiple-streams    concurrent POSTs on one session (SDK transport)
    resources-list                 resources with a uri, name and description
    resources-read-text            resource `test://static-text`
    resources-read-binary          resource `test://static-binary` (PNG blob)
    resources-templates-read       template `test://template/{id}/data`
    resources-(un)subscribe        `resources/subscribe`, `resources/unsubscribe` (listed URIs)
    prompts-list                   prompts with a name and description
    prompts-get-simple             prompt `test_simple_prompt`
    prompts-get-with-args          prompt `test_prompt_with_arguments` (arg1, arg2)
    prompts-get-embedded-resource  prompt `test_prompt_with_embedded_resource` (resourceUri)
    prompts-get-with-image         prompt `test_prompt_with_image`
    dns-rebinding-protection       Host/Origin validation, which `streamable_http_app`
                                   switches on for a loopback `host`

Logging and sampling are deprecated by the 2026-07-28 revision (SEP-2577) and
the SDK warns with `MCPDeprecationWarning` when they are used; the scenarios
target 2025-11-25, so this module uses them on purpose and silences that
warning for calls made from this module only.

Run it with `python upstream.py --port 8931` (streamable HTTP at
`http://127.0.0.1:8931/mcp`) or `python upstream.py --stdio`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import struct
import warnings
import wave
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, get_args

import anyio
import uvicorn
from mcp import MCPError, UriTemplate, types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types.jsonrpc import INVALID_PARAMS
from starlette.applications import Starlette

warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=re.escape(__name__) + "$")


SERVER_NAME = "tether-conformance-upstream"
STEP_DELAY_S = 0.05
"""Pause between the log and progress notifications the scenarios ask for."""

_LOG_LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)
"""Logging levels from least to most severe."""


def _png_1x1(red: int, green: int, blue: int) -> str:
    """Return a base64 PNG of one pixel of the given colour."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(bytes([0, red, green, blue]))  # filter byte + one pixel
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode("ascii")


def _silent_wav(milliseconds: int = 50, rate: int = 8000) -> str:
    """Return a base64 mono 16-bit PCM WAV of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * (rate * milliseconds // 1000))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


PNG = _png_1x1(255, 0, 0)
WAV = _silent_wav()


def _text(text: str) -> types.TextContent:
    return types.TextContent(text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(data=PNG, mime_type="image/png")


def _embedded(uri: str, mime_type: str, text: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(
        resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    )


# --------------------------------------------------------------------------- per-client state


@dataclass
class _ClientState:
    log_level: types.LoggingLevel = "info"
    subscriptions: set[str] = field(default_factory=set)


@dataclass
class _Clients:
    """Per-client state of one server run, keyed by the streamable-HTTP session id.

    stdio serves one client per run, under the empty key. Entries are kept for
    the whole run: this is a test fixture.
    """

    states: dict[str, _ClientState] = field(default_factory=dict)


Ctx = ServerRequestContext[_Clients, Any]
"""The context the low-level server passes to every handler."""


@asynccontextmanager
async def _lifespan(server: Server[_Clients]) -> AsyncIterator[_Clients]:
    yield _Clients()


def _client(ctx: Ctx) -> _ClientState:
    """The state of the client that sent this request."""
    request = ctx.request  # a Starlette request on HTTP, None on stdio
    key = request.headers.get("mcp-session-id", "") if request is not None else ""
    return ctx.lifespan_context.states.setdefault(key, _ClientState())


async def _log(ctx: Ctx, level: types.LoggingLevel, message: str) -> None:
    """Send a log notification on the request's stream if the client's level allows it."""
    if _LOG_LEVELS.index(level) >= _LOG_LEVELS.index(_client(ctx).log_level):
        await ctx.session.send_log_message(
            level, message, logger=SERVER_NAME, related_request_id=ctx.request_id
        )


# --------------------------------------------------------------------------- tools

ToolRun = Callable[[Ctx, Mapping[str, Any]], Awaitable[types.CallToolResult]]
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class _Tool:
    definition: types.Tool
    run: ToolRun


_TOOLS: dict[str, _Tool] = {}


def _tool(
    name: str, description: str, input_schema: dict[str, Any] | None = None
) -> Callable[[ToolRun], ToolRun]:
    """Register the decorated coroutine as the tool `name`."""

    def register(run: ToolRun) -> ToolRun:
        definition = types.Tool(
            name=name, description=description, input_schema=input_schema or NO_ARGS
        )
        _TOOLS[name] = _Tool(definition, run)
        return run

    return register


def _string_args(*names: str) -> dict[str, Any]:
    """An input schema of required string arguments."""
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


@_tool("test_simple_text", "Returns a fixed text block.")
async def _simple_text(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[_text("This is a simple text response for testing.")])


@_tool("test_image_content", "Returns a 1x1 red PNG image block.")
async def _image_content(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[_image()])


@_tool("test_audio_content", "Returns a short silent WAV audio block.")
async def _audio_content(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.AudioContent(data=WAV, mime_type="audio/wav")])


@_tool("test_embedded_resource", "Returns an embedded text resource.")
async def _embedded_resource(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    resource = _embedded(
        "test://embedded-resource", "text/plain", "This is an embedded resource content."
    )
    return types.CallToolResult(content=[resource])


@_tool("test_multiple_content_types", "Returns text, image and embedded resource blocks.")
async def _multiple_content_types(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    data = json.dumps({"test": "data", "value": 123}, separators=(",", ":"))
    resource = _embedded("test://mixed-content-resource", "application/json", data)
    return types.CallToolResult(content=[_text("Multiple content types test:"), _image(), resource])


@_tool("test_tool_with_logging", "Sends three info log notifications while it runs.")
async def _tool_with_logging(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(STEP_DELAY_S)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(STEP_DELAY_S)
    await _log(ctx, "info", "Tool execution completed")
    return types.CallToolResult(content=[_text("Tool with logging executed successfully")])


@_tool("test_error_handling", "Always fails with a tool error (isError: true).")
async def _error_handling(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[_text("This tool intentionally returns an error for testing")],
        is_error=True,
    )


@_tool(
    "test_tool_with_progress", "Reports progress 0, 50 and 100 of 100 when given a progress token."
)
async def _tool_with_progress(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(STEP_DELAY_S)
        await ctx.session.report_progress(progress, total=100)  # no-op without a progress token
    return types.CallToolResult(content=[_text("Tool with progress executed successfully")])


@_tool(
    "test_sampling",
    "Asks the client's LLM to answer `prompt` (sampling/createMessage).",
    _string_args("prompt"),
)
async def _sampling(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        return types.CallToolResult(
            content=[_text("The client does not support sampling")], is_error=True
        )
    message = types.SamplingMessage(role="user", content=_text(str(args["prompt"])))
    result = await ctx.session.create_message(
        [message], max_tokens=100, related_request_id=ctx.request_id
    )
    answer = (
        result.content.text
        if isinstance(result.content, types.TextContent)
        else f"<{result.content.type}>"
    )
    return types.CallToolResult(content=[_text(f"LLM response: {answer}")])


async def _elicit(
    ctx: Ctx, message: str, schema: dict[str, Any], reply_prefix: str
) -> types.CallToolResult:
    """Ask the client for input with `schema` and report its answer as text."""
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return types.CallToolResult(
            content=[_text("The client does not support elicitation")], is_error=True
        )
    result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    content = json.dumps(result.content)
    return types.CallToolResult(
        content=[_text(f"{reply_prefix}: action={result.action}, content={content}")]
    )


@_tool(
    "test_elicitation",
    "Asks the user for a username and email (elicitation/create).",
    _string_args("message"),
)
async def _elicitation(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    return await _elicit(ctx, str(args["message"]), schema, "User response")


@_tool(
    "test_elicitation_sep1034_defaults",
    "Elicits a form whose fields all carry defaults (SEP-1034).",
)
async def _elicitation_defaults(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Name", "default": "John Doe"},
            "age": {"type": "integer", "description": "Age", "default": 30},
            "score": {"type": "number", "description": "Score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "Status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verified", "default": True},
        },
    }
    return await _elicit(ctx, "Please review the defaults", schema, "Elicitation completed")


@_tool(
    "test_elicitation_sep1330_enums", "Elicits a form with every enum schema variant (SEP-1330)."
)
async def _elicitation_enums(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    def titled(prefix: str, titles: tuple[str, ...]) -> list[dict[str, str]]:
        return [
            {"const": f"{prefix}{i}", "title": title} for i, title in enumerate(titles, start=1)
        ]

    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": titled("value", ("First Option", "Second Option", "Third Option")),
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": titled("value", ("First Choice", "Second Choice", "Third Choice"))
                },
            },
        },
    }
    return await _elicit(ctx, "Please pick some options", schema, "Elicitation completed")


JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        },
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


@_tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", JSON_SCHEMA_2020_12)
async def _json_schema_2020_12(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[_text(f"Received: {json.dumps(dict(args), sort_keys=True)}")]
    )


@_tool(
    "test_reconnection",
    "Closes its SSE stream before answering, when the transport supports it (SEP-1699).",
)
async def _reconnection(ctx: Ctx, args: Mapping[str, Any]) -> types.CallToolResult:
    # `close_sse_stream` is only offered on streamable HTTP with an event store,
    # for clients at 2025-11-25 or later; otherwise the answer rides the stream.
    if ctx.close_sse_stream is not None:
        await ctx.close_sse_stream()
        await anyio.sleep(STEP_DELAY_S)
    return types.CallToolResult(content=[_text("Reconnection test completed")])


async def list_tools(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[tool.definition for tool in _TOOLS.values()])


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    tool = _TOOLS.get(params.name)
    if tool is None:
        raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
    missing = [
        name
        for name in tool.definition.input_schema.get("required", [])
        if name not in (params.arguments or {})
    ]
    if missing:
        raise MCPError(INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
    return await tool.run(ctx, params.arguments or {})


# --------------------------------------------------------------------------- resources

STATIC_TEXT = types.TextResourceContents(
    uri="test://static-text",
    mime_type="text/plain",
    text="This is the content of the static text resource.",
)
STATIC_BINARY = types.BlobResourceContents(
    uri="test://static-binary", mime_type="image/png", blob=PNG
)
WATCHED = types.TextResourceContents(
    uri="test://watched-resource",
    mime_type="text/plain",
    text="A resource clients may subscribe to.",
)
_RESOURCES: dict[
    str, tuple[types.Resource, types.TextResourceContents | types.BlobResourceContents]
] = {
    contents.uri: (
        types.Resource(
            uri=contents.uri, name=name, description=description, mime_type=contents.mime_type
        ),
        contents,
    )
    for contents, name, description in (
        (STATIC_TEXT, "static-text", "A static text resource"),
        (STATIC_BINARY, "static-binary", "A static binary resource (1x1 PNG)"),
        (WATCHED, "watched-resource", "A resource for subscribe and unsubscribe"),
    )
}
DATA_TEMPLATE = UriTemplate.parse("test://template/{id}/data")


async def list_resources(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=[resource for resource, _ in _RESOURCES.values()])


async def list_resource_templates(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    template = types.ResourceTemplate(
        uri_template=str(DATA_TEMPLATE),
        name="template-data",
        description="JSON data for the given id",
        mime_type="application/json",
    )
    return types.ListResourceTemplatesResult(resource_templates=[template])


async def read_resource(
    ctx: Ctx, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    if params.uri in _RESOURCES:
        return types.ReadResourceResult(contents=[_RESOURCES[params.uri][1]])
    match = DATA_TEMPLATE.match(params.uri)
    if match is not None:
        item_id = str(match["id"])
        data = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
        contents = types.TextResourceContents(
            uri=params.uri, mime_type="application/json", text=json.dumps(data)
        )
        return types.ReadResourceResult(contents=[contents])
    raise MCPError(INVALID_PARAMS, f"Resource not found: {params.uri}")


async def subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    if params.uri not in _RESOURCES:
        raise MCPError(INVALID_PARAMS, f"Resource not found: {params.uri}")
    _client(ctx).subscriptions.add(params.uri)
    return types.EmptyResult()


async def unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    _client(ctx).subscriptions.discard(params.uri)
    return types.EmptyResult()


# --------------------------------------------------------------------------- prompts

_PROMPTS: dict[str, types.Prompt] = {
    prompt.name: prompt
    for prompt in (
        types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
        types.Prompt(
            name="test_prompt_with_arguments",
            description="A prompt with two required arguments",
            arguments=[
                types.PromptArgument(name="arg1", description="First test argument", required=True),
                types.PromptArgument(
                    name="arg2", description="Second test argument", required=True
                ),
            ],
        ),
        types.Prompt(
            name="test_prompt_with_embedded_resource",
            description="A prompt that embeds a resource",
            arguments=[
                types.PromptArgument(name="resourceUri", description="URI to embed", required=True)
            ],
        ),
        types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
    )
}


def _user(content: types.ContentBlock) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


async def list_prompts(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=list(_PROMPTS.values()))


async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    prompt = _PROMPTS.get(params.name)
    if prompt is None:
        raise MCPError(INVALID_PARAMS, f"Unknown prompt: {params.name}")
    args = params.arguments or {}
    missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in args]
    if missing:
        raise MCPError(INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
    if prompt.name == "test_simple_prompt":
        messages = [_user(_text("This is a simple prompt for testing."))]
    elif prompt.name == "test_prompt_with_arguments":
        messages = [
            _user(_text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"))
        ]
    elif prompt.name == "test_prompt_with_embedded_resource":
        resource = _embedded(
            args["resourceUri"], "text/plain", "Embedded resource content for testing."
        )
        messages = [_user(resource), _user(_text("Please process the embedded resource above."))]
    else:  # test_prompt_with_image
        messages = [_user(_image()), _user(_text("Please analyze the image above."))]
    return types.GetPromptResult(description=prompt.description, messages=messages)


# --------------------------------------------------------------------------- completion and logging

_COMPLETIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("test_prompt_with_arguments", "arg1"): ("paris", "park", "party", "test", "testing"),
    ("test_prompt_with_arguments", "arg2"): ("world", "word", "work"),
    (str(DATA_TEMPLATE), "id"): ("1", "2", "3", "123"),
}


async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
    ref = params.ref.name if isinstance(params.ref, types.PromptReference) else params.ref.uri
    candidates = _COMPLETIONS.get((ref, params.argument.name), ())
    values = [value for value in candidates if value.startswith(params.argument.value)]
    return types.CompleteResult(
        completion=types.Completion(values=values, total=len(values), has_more=False)
    )


async def set_logging_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    _client(ctx).log_level = params.level
    return types.EmptyResult()


# --------------------------------------------------------------------------- server


def build_server() -> Server[_Clients]:
    """Return the low-level server with every conformance fixture registered."""
    return Server(
        SERVER_NAME,
        version="1.0.0",
        lifespan=_lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_logging_level,
    )


def build_http_app(host: str = "127.0.0.1", path: str = "/mcp") -> Starlette:
    """Return the streamable-HTTP ASGI app.

    `host` only selects DNS-rebinding protection: for a loopback host the SDK
    accepts loopback Host/Origin headers alone.
    """
    return build_server().streamable_http_app(streamable_http_path=path, host=host)


async def serve_stdio() -> None:
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=int, help="serve streamable HTTP on this port (path /mcp)")
    mode.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)"
    )
    args = parser.parse_args(argv)
    if args.stdio:
        anyio.run(serve_stdio)
        return
    uvicorn.run(build_http_app(args.host), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
