"""OpenAI Agents SDK function tools whose every call Tether decides first.

    from tether.sdk.openai_agents import guard_tools, register_tool

    register_tool(guard, send_email, workspace="acme", effects=["external"], sinks=["to"])
    agent = Agent(name="mailer", tools=guard_tools(guard, [send_email], workspace="acme"))
    with guard.task(workspace="acme", agent="coder", user="alice", request=..., tools=[...]):
        result = await Runner.run(agent, "...")

`guard_tools` copies each `FunctionTool` (one made with `@function_tool`, by hand, or by
`Agent.as_tool`) and puts Tether in front of its `on_invoke_tool`, the one entry point every call
of it goes through, the Runner's included: the copy keeps its name, description, schema and
settings, so the model is shown exactly what it was shown before. A call is decided with the
arguments the tool will run with: for a `@function_tool`, the model's JSON validated by the
tool's own parameter model (defaults filled in, values normalised), which the tool then runs
with, unparsed again; for a tool made another way, the JSON as sent. It runs only when allowed,
and its task is told what the model will read, which for a tool whose failure function turns an
error into a message is that message.

A refused call does not run, and the model reads why (`on_denied`, by default the reason and the
decision, and for a call that needs approval the approval request): the same way the SDK itself
answers a call a person rejected, so the run goes on and the model can adapt. `on_denied=None`
raises `Denied` instead, which ends the run. A guarded copy has no `__wrapped__`: calling the
bare function would skip Tether.

Tether decides in a thread: a remote Guard answers over HTTP, and with `wait` a call blocks until
a person answers, and neither may stall the event loop the Runner's other calls share. A tool's
`timeout_seconds`, if it has one, covers that wait too.

Only this module imports the SDK (`pip install 'tether[openai-agents]'`); `tether.sdk` never does.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from tether.model import Tool
from tether.sdk._adapters import Gate, denial_text
from tether.sdk.decorator import Registers
from tether.sdk.errors import Denied
from tether.sdk.handle import Decides, TaskHandleBase

try:
    from agents import FunctionTool
    from agents import Tool as AgentTool
    from agents._function_tool_arguments import PreparedFunctionArguments
    from agents.function_schema import FuncSchema
    from agents.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tether.sdk.openai_agents needs the OpenAI Agents SDK: pip install 'tether[openai-agents]'"
    ) from exc

__all__ = [
    "DeniedFunction",
    "args_schema",
    "denied_message",
    "guard_tool",
    "guard_tools",
    "is_guarded",
    "register_tool",
]

DeniedFunction = Callable[[ToolContext[Any], Denied], str | Awaitable[str]]
"""What the model reads when a call is refused; like the SDK's `failure_error_function`."""

_GUARDED = "__tether_guarded__"


def denied_message(ctx: ToolContext[Any], denied: Denied) -> str:
    """The default `on_denied`: why the call was refused, and which decision and approval
    request say so."""
    return denial_text(denied)


def guard_tool(
    guard: Decides,
    tool: FunctionTool,
    *,
    workspace: str,
    task: TaskHandleBase | None = None,
    wait: float | None = None,
    on_denied: DeniedFunction | None = denied_message,
) -> FunctionTool:
    """A copy of `tool` with every call decided by Tether first; `tool` itself is unchanged.

    `guard`: an embedded or remote Guard; `workspace`: where the tool is catalogued (a call made
    outside any task is denied and recorded there). `task`: decide every call in this task
    instead of the one the call runs in (`current_task()`, which the Runner's asyncio tasks
    inherit from the code that started the run). `wait`: seconds a call that needs approval
    waits for a person's answer. `on_denied`: what the model reads of a refused call; None
    raises `Denied` (or `ApprovalRequired`) instead."""
    if is_guarded(tool):
        raise TypeError(f"tool {tool.name!r} is guarded already")
    gate = Gate(guard, workspace, task=task, wait=wait)
    name = tool.name
    invoke = tool.on_invoke_tool  # bound to `tool`: its own failure handling stays as it was
    params = _params(invoke)

    async def on_invoke_tool(ctx: ToolContext[Any], arguments: str) -> Any:
        prepared, decided = _prepared(params, arguments)
        try:
            call = await gate.decide_async(name, decided)
        except Denied as denied:
            if on_denied is None:
                raise
            message = on_denied(ctx, denied)
            return await message if inspect.isawaitable(message) else message
        if prepared is not None:  # the tool runs with what was decided: no second parse
            ctx._function_tool_arguments = prepared
        try:
            result = await invoke(ctx, arguments)
        except Exception as exc:
            await call.failed_async(exc)
            raise
        await call.returned_async(result)
        return result

    setattr(on_invoke_tool, _GUARDED, True)
    guarded = copy.copy(tool)  # the SDK's own copy: rebinds what it binds to the tool
    guarded.on_invoke_tool = on_invoke_tool
    return guarded


def guard_tools(
    guard: Decides,
    tools: Iterable[FunctionTool],
    *,
    workspace: str,
    task: TaskHandleBase | None = None,
    wait: float | None = None,
    on_denied: DeniedFunction | None = denied_message,
) -> list[AgentTool]:
    """`guard_tool` for each of `tools`, in order; typed as `Agent(tools=...)` takes them."""
    return [
        guard_tool(guard, tool, workspace=workspace, task=task, wait=wait, on_denied=on_denied)
        for tool in tools
    ]


def is_guarded(tool: FunctionTool) -> bool:
    """Whether `tool` is a copy `guard_tool` made (so that it is not guarded twice)."""
    return bool(getattr(tool.on_invoke_tool, _GUARDED, False))


def args_schema(tool: FunctionTool) -> dict[str, Any]:
    """The JSON Schema of `tool`'s arguments exactly as the model is shown it: the arguments a
    call is decided with, so the catalogue's schema."""
    return copy.deepcopy(tool.params_json_schema)


def register_tool(
    guard: Registers,
    tool: FunctionTool,
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


_Params = tuple[FuncSchema, Callable[..., PreparedFunctionArguments]]


def _params(invoke: Any) -> _Params | None:
    """The parameter model of a `@function_tool` tool, and the SDK's own preparer of its
    arguments, or None for a tool made another way (by hand, `Agent.as_tool`: its invoker
    parses the JSON itself). The SDK keeps both in its invoker's approval hook, where it
    prepares arguments once to evaluate `needs_approval` and then runs with them: the same
    hook serves here to decide on exactly what will run."""
    hook = getattr(getattr(invoke, "_invoke_tool_impl", None), "__agents_prepare_arguments__", None)
    if hook is None:
        return None
    try:
        found = inspect.getclosurevars(hook).nonlocals
    except (TypeError, ValueError):  # pragma: no cover - another SDK's hook
        return None
    schema, preparer = found.get("schema"), found.get("_prepare_arguments")
    if not isinstance(schema, FuncSchema) or not callable(preparer):  # pragma: no cover
        return None
    return schema, preparer


def _prepared(
    params: _Params | None, arguments: str
) -> tuple[PreparedFunctionArguments | None, Any]:
    """The arguments the tool will run with, prepared as the SDK prepares them, and the
    arguments that call is decided with: the same.

    The model's JSON is validated by the tool's own parameter model, which may normalise
    values (`StringConstraints(strip_whitespace=True)`, validators) and fills in the defaults
    the model left out; the call is decided on that, as JSON, and the tool runs with those very
    values (no second parse). What the model sent beyond it is decided too, so the catalogue
    refuses an undeclared argument on the record. Arguments the model refuses, and the calls
    of a tool with no model here, are decided as sent: the tool refuses them again before it
    runs, or gets exactly that JSON."""
    sent = _model_args(arguments)
    if params is None or not isinstance(sent, dict):
        return None, sent
    schema, preparer = params
    try:
        parsed = schema.params_pydantic_model(**sent)
        args, kwargs = schema.to_call_args(parsed)
    except Exception:
        return None, sent
    prepared = PreparedFunctionArguments(
        owner=preparer, arguments=arguments, args=args, kwargs=kwargs
    )
    return prepared, {**sent, **parsed.model_dump(mode="json")}


def _model_args(arguments: str) -> Any:
    """The arguments the model sent, parsed as the SDK parses them (empty means none). What does
    not parse goes to the decision point as it is, which refuses it on the record."""
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
