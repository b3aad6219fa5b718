"""The gateway over stdio, for clients that start their MCP servers as commands (Claude
Desktop and the like): one gateway process per agent and task.

The gateway starts the task itself, as the agent, for the user who runs it: the token never
leaves the process, and every call of the client is decided in that task. Nothing but MCP may
be written to stdout, so everything else (the upstreams' stderr included) goes to stderr.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from mcp.server.stdio import stdio_server

from tether.gateway.config import GatewayConfig
from tether.gateway.proxy import Caller, Context, Gateway
from tether.sdk import Guard
from tether.sdk.guard import TaskHandle


async def serve_stdio(
    guard: Guard, config: GatewayConfig, open_task: Callable[[], TaskHandle]
) -> None:
    """Connect to the upstreams (importing the tools of any seen for the first time), start the
    task (`open_task`: its tools may be ones just imported), and serve the client on stdin and
    stdout until it closes them; the task ends with it."""
    opened: list[TaskHandle] = []

    def identify(_: Context) -> Caller:
        task = opened[0]
        token = task.token  # renewed as it nears expiry
        guard.credentials.authenticate(token)  # raises once the task is revoked or ended
        return Caller(token, task.claims)

    gateway = Gateway(guard, config, identify)
    server = gateway.server()
    refused: Exception | None = None
    async with anyio.create_task_group() as tasks:
        await gateway.start(tasks)
        try:  # raised in here, it would leave wrapped in an exception group, unclear
            opened.append(await anyio.to_thread.run_sync(open_task))
        except Exception as exc:  # no grant, an unknown tool, ...: said as it is, below
            refused = exc
        else:
            try:
                async with stdio_server() as (read, write):
                    await server.run(read, write, Gateway.initialization_options(server))
            finally:
                opened[0].end()
        await gateway.close()
        tasks.cancel_scope.cancel()
    if refused is not None:
        raise refused
