"""The gateway over stdio, for clients that start their MCP servers as commands (Claude
Desktop and the like): one gateway process per agent and task.

The gateway starts the task itself, as the agent, for the user who runs it: the token never
leaves the process, and every call of the client is decided in that task. Nothing but MCP may
be written to stdout, so everything else (the upstreams' stderr included) goes to stderr.
"""

from __future__ import annotations

import anyio
from mcp.server.stdio import stdio_server

from tether.gateway.config import GatewayConfig
from tether.gateway.proxy import Caller, Context, Gateway
from tether.sdk import Guard
from tether.sdk.guard import TaskHandle


def gateway_for_task(guard: Guard, config: GatewayConfig, task: TaskHandle) -> Gateway:
    def identify(_: Context) -> Caller:
        token, proof = task.credential()
        assert token is not None  # a task this Guard started always has one
        return Caller(token, proof, task.claims)

    return Gateway(guard, config, identify)


async def serve_stdio(guard: Guard, config: GatewayConfig, task: TaskHandle) -> None:
    """Serve the client on stdin/stdout until it closes them."""
    gateway = gateway_for_task(guard, config, task)
    server = gateway.server()
    async with anyio.create_task_group() as tasks:
        await gateway.start(tasks)
        async with stdio_server() as (read, write):
            await server.run(read, write, Gateway.initialization_options(server))
        await gateway.close()
        tasks.cancel_scope.cancel()
