"""`@guard.tool`: a function registered as a tool, every call of it authorized first.

The same for an embedded and a remote Guard: both are `ToolDecorator`s, and all the decorator
needs of them is `register_tool` and `authorize`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar

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

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    handle, decision = authorize(args, kwargs)
                    try:
                        result = await fn(*args, **kwargs)
                    except Exception as exc:
                        handle.report(decision, _failure(exc))
                        raise
                    handle.report(decision, result)
                    return result

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                handle, decision = authorize(args, kwargs)
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    handle.report(decision, _failure(exc))
                    raise
                handle.report(decision, result)
                return result

            return guarded

        return decorate


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
