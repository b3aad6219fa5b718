"""LangChain tools whose every call Tether decides first.

    from tether.sdk.langchain import guard_tools, register_tool

    register_tool(guard, send_email, workspace="acme", effects=["external"], sinks=["to"])
    tools = guard_tools(guard, [send_email, search], workspace="acme")
    with guard.task(workspace="acme", agent="coder", user="alice", request=..., tools=[...]):
        ...  # hand `tools` to the model and the agent loop (bind_tools, ToolNode, ...)

`guard_tools` wraps any `BaseTool` (a `@tool` function, a `StructuredTool`, a subclass) in a
`GuardedTool` with the same name, description and schema, so the model is shown exactly what it
was shown before. A call is decided with the arguments the tool will run with: the model's,
validated by the tool's own schema (defaults filled in, values normalised), and the tool runs
with that validated input. A value the model sends for an injected argument (other than the
tool call's id, which LangChain fills) is refused; the application gives those itself, by
invoking with the arguments. A call runs only when allowed, and its task is told what the model
will read (the ToolMessage content), or the error text if it raised.

A refused call raises `ToolDenied`, a `ToolException`: LangChain's own way for a tool to say that
it failed in a way the model should hear about. Guarded tools handle it by default
(`handle_tool_error=True`), so the model reads why, in a ToolMessage with status "error", and the
agent loop goes on; pass `handle_tool_error=False` to have it raised instead. A call that needs
approval names its approval request, so the person or the agent can follow it up.

Only this module imports LangChain (`pip install 'tether[langchain]'`); `tether.sdk` never does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from tether.model import Tool
from tether.sdk._adapters import Gate, denial_text
from tether.sdk.decorator import Registers
from tether.sdk.errors import Denied
from tether.sdk.handle import Decides, TaskHandleBase

try:
    from langchain_core.messages import ToolMessage
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool, InjectedToolCallId, ToolException
    from langchain_core.tools.base import (
        ArgsSchema,
        _is_injected_arg_type,
        get_all_basemodel_annotations,
    )
    from langchain_core.utils.function_calling import convert_to_openai_function
    from langchain_core.utils.pydantic import TypeBaseModel
    from pydantic import BaseModel, PrivateAttr
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tether.sdk.langchain needs LangChain: pip install 'tether[langchain]'"
    ) from exc
try:  # what LangGraph's ToolNode fills itself, when LangGraph is there
    from langgraph.prebuilt import InjectedState, InjectedStore, ToolRuntime

    LOOP_FILLED: tuple[type, ...] = (InjectedToolCallId, InjectedState, InjectedStore, ToolRuntime)
except ImportError:  # pragma: no cover - depends on the environment
    LOOP_FILLED = (InjectedToolCallId,)

__all__ = ["GuardedTool", "ToolDenied", "args_schema", "guard_tool", "guard_tools", "register_tool"]

DeniedHandler = bool | str | Callable[[ToolException], Any]


class ToolDenied(ToolException):
    """Tether did not allow the call (`denied.decision` says why and names its record). Its
    message is what the model reads when the tool handles it."""

    def __init__(self, denied: Denied) -> None:
        super().__init__(denial_text(denied))
        self.denied = denied


class GuardedTool(BaseTool):
    """`wrapped`, with every call decided by Tether first (see the module's docstring).

    Everything the model and the agent loop see (name, description, schemas, `return_direct`,
    `response_format`) is the wrapped tool's; the wrapped tool validates, runs and formats the
    call itself, with its own callbacks and its own error handling. `handle_tool_error` here
    concerns refused calls only: the wrapped tool's own errors are handled as it says.
    """

    wrapped: BaseTool
    _gate: Gate = PrivateAttr()

    def __init__(self, wrapped: BaseTool, gate: Gate, **fields: Any) -> None:
        """`fields`: other BaseTool fields; `handle_tool_error` is True unless given."""
        fields.setdefault("handle_tool_error", True)
        super().__init__(
            wrapped=wrapped,
            name=wrapped.name,
            description=wrapped.description,
            args_schema=wrapped.args_schema,
            return_direct=wrapped.return_direct,
            response_format=wrapped.response_format,
            tags=wrapped.tags,
            metadata=wrapped.metadata,
            extras=wrapped.extras,
            **fields,
        )
        self._gate = gate

    # -- what the model and the agent loop see: the wrapped tool's -------------------------------

    @property
    def tool_call_schema(self) -> ArgsSchema:
        return self.wrapped.tool_call_schema

    @property
    def args(self) -> dict[str, Any]:
        return self.wrapped.args

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.wrapped.get_input_schema(config)

    @functools.cached_property
    def _injected_args_keys(self) -> frozenset[str]:
        # Agent loops (LangGraph's ToolNode) ask a tool which arguments they must inject.
        return self.wrapped._injected_args_keys  # LangChain's own hook

    # -- a call ------------------------------------------------------------------------------------

    def run(
        self,
        tool_input: str | dict[str, Any],
        *args: Any,
        tool_call_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Decide the call; run the wrapped tool only if it is allowed, then report its output."""
        runs, decided = _prepared(self.wrapped, tool_input, tool_call_id)
        try:
            call = self._gate.decide(self.name, decided)
        except Denied as denied:
            return self._refused(denied, tool_call_id)
        try:
            result = self.wrapped.run(runs, *args, tool_call_id=tool_call_id, **kwargs)
        except Exception as exc:
            call.failed(exc)
            raise
        call.returned(_read(result))
        return result

    async def arun(
        self,
        tool_input: str | dict[str, Any],
        *args: Any,
        tool_call_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """`run` for `ainvoke`: the decision is made off the event loop (see Gate)."""
        runs, decided = _prepared(self.wrapped, tool_input, tool_call_id)
        try:
            call = await self._gate.decide_async(self.name, decided)
        except Denied as denied:
            return self._refused(denied, tool_call_id)
        try:
            result = await self.wrapped.arun(runs, *args, tool_call_id=tool_call_id, **kwargs)
        except Exception as exc:
            await call.failed_async(exc)
            raise
        await call.returned_async(_read(result))
        return result

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """Never called: `run` and `arun` hand the whole call to the wrapped tool."""
        raise NotImplementedError("a GuardedTool runs its calls through run() and arun()")

    def _refused(self, denied: Denied, tool_call_id: str | None) -> Any:
        """A refused call as LangChain reports a failed one: the handled error as the output (a
        ToolMessage with status "error" when the call came as a ToolCall), or raised."""
        error = ToolDenied(denied)
        handle = self.handle_tool_error
        if not handle:
            raise error
        if handle is True:
            content: Any = str(error)
        elif isinstance(handle, str):
            content = handle
        else:
            content = handle(error)
        if tool_call_id is None:
            return content
        return ToolMessage(content, tool_call_id=tool_call_id, name=self.name, status="error")


def guard_tool(
    guard: Decides,
    tool: BaseTool,
    *,
    workspace: str,
    task: TaskHandleBase | None = None,
    wait: float | None = None,
    handle_tool_error: DeniedHandler = True,
) -> GuardedTool:
    """`tool`, with every call decided by Tether first.

    `guard`: an embedded or remote Guard; `workspace`: where the tool is catalogued (a call made
    outside any task is denied and recorded there). `task`: decide every call in this task
    instead of the one the call runs in (`current_task()`). `wait`: seconds a call that needs
    approval waits for a person's answer. `handle_tool_error`: what a refused call gives the
    model, as for any LangChain tool (True: the reason; False: raise `ToolDenied`)."""
    if isinstance(tool, GuardedTool):
        raise TypeError(f"tool {tool.name!r} is guarded already")
    gate = Gate(guard, workspace, task=task, wait=wait)
    return GuardedTool(tool, gate, handle_tool_error=handle_tool_error)


def guard_tools(
    guard: Decides,
    tools: Iterable[BaseTool],
    *,
    workspace: str,
    task: TaskHandleBase | None = None,
    wait: float | None = None,
    handle_tool_error: DeniedHandler = True,
) -> list[GuardedTool]:
    """`guard_tool` for each of `tools`, in order."""
    return [
        guard_tool(
            guard,
            tool,
            workspace=workspace,
            task=task,
            wait=wait,
            handle_tool_error=handle_tool_error,
        )
        for tool in tools
    ]


def args_schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON Schema of `tool`'s arguments exactly as the model is shown it (what
    `bind_tools` sends): the arguments a call is decided with, so the catalogue's schema."""
    schema: dict[str, Any] = convert_to_openai_function(tool)["parameters"]
    return schema


def register_tool(
    guard: Registers,
    tool: BaseTool,
    *,
    workspace: str,
    effects: Iterable[str],
    sinks: Iterable[str] = (),
    output: str = "trusted",
    labels: Iterable[str] = (),
    risk_tier: str = "low",
) -> Tool:
    """Catalogue `tool` in `workspace` under its own name, with its description and the schema
    the model sees (`args_schema`). What the tool does (`effects`, `sinks`, `output`, ...) is
    for the person who catalogues it to say: a framework's tool does not say it (see
    `Guard.register_tool`)."""
    if isinstance(tool, GuardedTool):
        tool = tool.wrapped
    return guard.register_tool(
        workspace,
        tool.name,
        effects=effects,
        args_schema=args_schema(tool),
        sinks=sinks,
        output=output,
        labels=labels,
        risk_tier=risk_tier,
        description=tool.description,
    )


def _prepared(
    tool: BaseTool, tool_input: str | dict[str, Any], tool_call_id: str | None
) -> tuple[str | dict[str, Any], dict[str, Any]]:
    """What `tool` will run with, and the arguments that call is decided with: the same.

    The input is validated first by the tool's own schema (`_parse_input`, as LangChain does
    when it runs the tool), which may normalise values (`str_strip_whitespace`, validators)
    and fills in the defaults the model left out; the call is decided on that, as JSON, and
    the tool is handed that validated input, not the model's. What the model sent beyond it
    (an argument the schema does not declare, a value for an injected argument) is decided
    too, so the catalogue refuses it on the record. Input the schema refuses is decided as
    sent: the tool refuses it again before it runs, its own way."""
    given = _given(tool, tool_input)
    sent = _model_args(tool, given, from_model=tool_call_id is not None)
    try:
        parsed = tool._parse_input(dict(given), tool_call_id)  # LangChain's own validation
    except Exception:
        return tool_input, sent
    if not isinstance(parsed, dict):  # pragma: no cover - a dict in gives a dict out
        return tool_input, sent
    validated = to_jsonable_python(tool._filter_injected_args(parsed))
    return parsed, {**sent, **validated}


def _given(tool: BaseTool, tool_input: str | dict[str, Any]) -> dict[str, Any]:
    """The input as arguments: a bare string goes to the first argument, as LangChain passes
    it (so it is validated, and its siblings' defaults applied, like any other call)."""
    if isinstance(tool_input, str):
        names = list(tool.args)
        return {names[0]: tool_input} if names else {}
    return dict(tool_input)


def _model_args(tool: BaseTool, given: dict[str, Any], *, from_model: bool) -> dict[str, Any]:
    """The arguments of a call as its caller sent them. From a model's tool call, only what
    the agent loop fills itself (`_loop_filled`) is left out: a value the model sends for an
    argument the application injects must not reach the tool, so it stays, and the catalogue,
    which does not declare it, refuses the call. From the application's own call (bare
    arguments), the injected arguments are its own, and are left out of the decision."""
    if from_model:
        own = _loop_filled(tool)
        return {k: v for k, v in given.items() if k not in own}
    return tool._filter_injected_args(given)  # LangChain's own rule


def _loop_filled(tool: BaseTool) -> frozenset[str]:
    """The arguments the agent loop fills itself, whatever the model sent for them: the tool
    call's id (InjectedToolCallId, LangChain's), and LangGraph's state, store and runtime
    (InjectedState, InjectedStore, ToolRuntime), which its ToolNode sets after dropping what
    the model sent for any injected argument. A generic InjectedToolArg is no loop's to fill:
    a model's value for it is refused."""
    names = {"tool_call_id"} & set(tool._injected_args_keys)
    schema = tool.args_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        for name, kind in get_all_basemodel_annotations(schema).items():
            if any(_is_injected_arg_type(kind, injected_type=t) for t in LOOP_FILLED):
                names.add(name)
    return frozenset(names)


def _read(result: Any) -> Any:
    """What the model reads of a tool's result: a ToolMessage's content (its artifact goes to
    the application, not to the model); any other result as it is."""
    return result.content if isinstance(result, ToolMessage) else result
