"""A Model for the OpenAI Agents SDK's Runner that plays a script instead of calling an LLM:
each turn it makes the tool calls the script gives, and once the script is done it answers with
the tool outputs it was sent, so a test (or an example) can read what the model read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agents import ModelResponse, Usage
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


class ScriptedModel(Model):
    """`turns`: for each turn, the calls `(tool name, arguments)` the model makes."""

    def __init__(self, turns: Sequence[Sequence[tuple[str, dict[str, Any]]]]) -> None:
        self._turns = list(turns)
        self._made = 0
        self._outputs: dict[str, str] = {}  # call id -> output, as the model was sent them

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        given = args[1] if len(args) > 1 else kwargs["input"]
        if isinstance(given, list):  # the whole conversation so far, each turn
            for item in given:
                if isinstance(item, dict) and item.get("type") == "function_call_output":
                    self._outputs.setdefault(str(item["call_id"]), str(item["output"]))
        if self._turns:
            calls = self._turns.pop(0)
            output: list[Any] = []
            for name, arguments in calls:
                self._made += 1
                output.append(
                    ResponseFunctionToolCall(
                        type="function_call",
                        id=f"fc_{self._made}",
                        call_id=f"call_{self._made}",
                        name=name,
                        arguments=json.dumps(arguments),
                        status="completed",
                    )
                )
            return ModelResponse(output=output, usage=Usage(), response_id=None)
        text = ResponseOutputText(type="output_text", text=" | ".join(self.seen), annotations=[])
        message = ResponseOutputMessage(
            type="message", id="msg_final", role="assistant", status="completed", content=[text]
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    @property
    def seen(self) -> list[str]:
        """Every tool output the model was sent, in order."""
        return list(self._outputs.values())

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")
