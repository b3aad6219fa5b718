"""`@guard.tool`: a function registered as a tool, every call of it authorized first.

The same for an embedded and a remote Guard: both are `ToolDecorator`s, and all the decorator
needs of them is `register_tool` and `authorize`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from tether.model import Decision, Effect, Tool
from tether.sdk.errors import ApprovalRequired, Denied
from tether.sdk.handle import TaskHandleBase, current_task
from tether.sdk.signature import args_schema_of

P = ParamSpec("P")
R = TypeVar("R")


class Registers(Protocol):
    """What the decorator needs of a Guard."""

    def register_tool(
        self,
        workspace: str,
        name: str,
        *,
        effects: Iterable[str],
        args_schema: Mapping[str, Any] | None = None,
        sinks: Iterable[str] = (),
        output: str = "trusted",
        labels: Iterable[str] = (),
        risk_tier: str = "low",
        description: str = "",
    ) -> Tool: ...

    def authorize(
        self,
        task_id: str | None,
        tool: str,
        args: Any,
        *,
        workspace: str | None = None,
        token: str | None = None,
        proof: str | None = None,
        proven: bool = False,
    ) -> Decision: ...


class ToolDecorator:
    """Gives a Guard its `tool` decorator."""

    def tool(
        self: Registers,
        *,
        workspace: str,
        effects: Iterable[str],
        name: str | None = None,
        sinks: Iterable[str] = (),
        output: str = "trusted",
        labels: Iterable[str] = (),
        risk_tier: str = "low",
        args_schema: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register a function as a tool and enforce every call of it.

        Inside `with guard.task(...)` a call authorizes itself, runs only when allowed, and
        reports its result to the task; otherwise it raises Denied or ApprovalRequired. Outside
        a task it is denied. The argument schema comes from the type hints unless given.
        """
        guard = self
        effects, sinks, labels = tuple(effects), tuple(sinks), tuple(labels)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            _refuse_streams(fn)
            tool_name = name or fn.__name__
            guard.register_tool(
                workspace,
                tool_name,
                effects=effects,
                args_schema=args_schema or args_schema_of(fn),
                sinks=sinks,
                output=output,
                labels=labels,
                risk_tier=risk_tier,
                description=description if description is not None else inspect.getdoc(fn) or "",
            )
            signature = inspect.signature(fn)

            def authorize(
                args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[TaskHandleBase, Decision]:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                handle = current_task()
                task_id = handle.id if handle is not None else None
                decision = guard.authorize(
                    task_id, tool_name, dict(bound.arguments), workspace=workspace
                )
                _raise_unless_allowed(decision)
                assert handle is not None  # an allowed call always has a task
                return handle, decision

            if _is_async(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    # Off the event loop, as the adapters decide (_adapters.py): a remote
                    # Guard's round trip must not stall the agent's other coroutines. The
                    # thread gets a copy of this context, so `current_task()` is the same.
                    handle, decision = await asyncio.to_thread(authorize, args, kwargs)
                    pending = cast("Awaitable[Any]", fn(*args, **kwargs))
                    return await _reported(handle, decision, pending)

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                handle, decision = authorize(args, kwargs)
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    handle.report(decision, _failure(exc))
                    raise
                if inspect.isawaitable(result):
                    # What the agent reads is what this resolves to: report that, once the
                    # caller awaits it, never the unawaited object.
                    return _reported(handle, decision, result)  # type: ignore[return-value]
                handle.report(decision, result)
                return result

            return guarded

        return decorate


def _refuse_streams(fn: Callable[..., Any]) -> None:
    """A tool's result is reported to its task when the call returns; a generator's content
    comes later, piece by piece, even after the task has ended, and no detector would read
    it. So a tool returns its content whole."""
    for code in (fn, type(fn).__call__):
        if inspect.isgeneratorfunction(code) or inspect.isasyncgenfunction(code):
            name = getattr(fn, "__name__", repr(fn))
            raise TypeError(
                f"{name}: a tool cannot be a generator (its output would be read after the "
                "call was reported, unchecked): return the content instead"
            )


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` gives a coroutine: an `async def`, or an object whose `__call__`
    is one (which `iscoroutinefunction(fn)` does not see)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def _reported(handle: TaskHandleBase, decision: Decision, pending: Awaitable[Any]) -> Any:
    """Await what an allowed call returned, then report it to the task (in a thread: a remote
    Guard's report is an HTTP request): the agent gets it only once the task has heard."""
    try:
        result = await pending
    except Exception as exc:
        await asyncio.to_thread(handle.report, decision, _failure(exc))
        raise
    await asyncio.to_thread(handle.report, decision, result)
    return result


def _failure(exc: Exception) -> str:
    """What a failed tool call told the agent: its error text is content the task has read
    (an HTTP error page can carry an attacker's instructions as well as any page)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def _raise_unless_allowed(decision: Decision) -> None:
    if decision.effect is Effect.APPROVAL_REQUIRED:
        raise ApprovalRequired(decision)
    if decision.effect is not Effect.ALLOW:
        raise Denied(decision)
