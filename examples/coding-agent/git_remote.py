"""A small MCP server for what the reference git server leaves out: pushing a branch to the
repository's `origin`, and deleting a branch there. It stands in for a code host's MCP server.

    python git_remote.py   (stdio)
"""

from __future__ import annotations

import subprocess
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

SCHEMA = {
    "type": "object",
    "properties": {"repo_path": {"type": "string"}, "branch": {"type": "string"}},
    "required": ["repo_path", "branch"],
}
TOOLS = [
    types.Tool(
        name="git_push",
        description="Push a branch to origin.",
        input_schema=SCHEMA,
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=False, open_world_hint=True
        ),
    ),
    types.Tool(
        name="git_delete_branch",
        description="Delete a branch on origin and here.",
        input_schema=SCHEMA,
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=True, open_world_hint=True
        ),
    ),
]


def _git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"git {args[0]} failed")
    return (done.stdout + done.stderr).strip()


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    repo, branch = str(args.get("repo_path", "")), str(args.get("branch", ""))
    try:
        if params.name == "git_push":
            text = _git(repo, "push", "origin", branch)
        elif params.name == "git_delete_branch":
            _git(repo, "push", "origin", "--delete", branch)
            text = _git(repo, "branch", "-D", branch)
        else:
            raise RuntimeError(f"no tool {params.name}")
    except RuntimeError as exc:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=str(exc))], is_error=True
        )
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def main() -> None:
    server = Server("git-remote", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
