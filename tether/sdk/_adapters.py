"""What the framework adapters (langchain.py, openai_agents.py) share, and nothing that imports a
framework: deciding one call of a framework's tool in the task it runs in, telling the task what
the call returned, and the text the model reads when a call may not run.

The adapters follow `@guard.tool` (decorator.py): decide first, run only on allow, report what
the agent read. They differ from it in one way: a framework's tool already has a name and an
argument schema the model sees, so the adapters take both from the tool, never from Python
signatures, and decide the arguments the tool will run with: the model's, validated by the
tool's own schema, as `@guard.tool` decides a call's arguments with its defaults applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from tether.model import Decision, Effect
from tether.sdk.decorator import _failure
from tether.sdk.errors import ApprovalRequired, Denied
from tether.sdk.handle import Decides, TaskHandleBase, current_task


@dataclass(frozen=True)
class Gate:
    """Where a wrapped tool's calls are decided.

    `task`: the task every call is decided in; None (the usual case) means the task the call runs
    in, `current_task()`, which `with guard.task(...)` sets and which asyncio tasks and LangChain's
    executors carry along. `guard`, `workspace`: who records the denial of a call made outside any
    task (the Guard's audit log keeps those too, as for `@guard.tool`); a task decides in its own
    workspace whatever `workspace` says. `wait`: how long a call that needs approval waits for a
    person's answer before it is refused (None: it is refused at once, naming the approval).
    """

    guard: Decides
    workspace: str
    task: TaskHandleBase | None = None
    wait: float | None = None

    def decide(self, tool: str, args: Any) -> Allowed:
        """Decide one call of `tool`; raises Denied (or ApprovalRequired) unless it may run."""
        handle = self.task if self.task is not None else current_task()
        if handle is None:
            decision = self.guard.authorize(None, tool, args, workspace=self.workspace)
        else:
            # Arguments that are not an object (a JSON array, a bare string) go as they are:
            # the decision point refuses them on the record, as it does for any bad request.
            decision = handle.authorize(tool, cast("Mapping[str, Any]", args), wait=self.wait)
        if decision.effect is Effect.APPROVAL_REQUIRED:
            raise ApprovalRequired(decision)
        if decision.effect is not Effect.ALLOW:
            raise Denied(decision)
        assert handle is not None  # an allowed call always has a task
        return Allowed(handle, decision)

    async def decide_async(self, tool: str, args: Any) -> Allowed:
        """`decide` off the event loop: a remote Guard answers over HTTP, and with `wait` a call
        blocks until a person answers; neither may stall the agent's other calls. The thread
        gets a copy of this context, so `current_task()` is the same there."""
        return await asyncio.to_thread(self.decide, tool, args)


@dataclass(frozen=True)
class Allowed:
    """An allowed call: once the tool has run, tell its task what the agent read."""

    handle: TaskHandleBase
    decision: Decision

    def returned(self, output: Any) -> None:
        self.handle.report(self.decision, output)

    def failed(self, error: Exception) -> None:
        """The tool raised: its error text is what the agent reads (decorator.py, `_failure`)."""
        self.handle.report(self.decision, _failure(error))

    async def returned_async(self, output: Any) -> None:
        await asyncio.to_thread(self.returned, output)

    async def failed_async(self, error: Exception) -> None:
        await asyncio.to_thread(self.failed, error)


def denial_text(denied: Denied) -> str:
    """What the model reads instead of the tool's output: why the call was refused and which
    decision says so; for a call that needs approval, also the approval request a person answers
    (the same call made again once they approved it runs)."""
    decision = denied.decision
    text = str(denied)
    if isinstance(denied, ApprovalRequired) and decision.approval_id is not None:
        text += f"; approval request {decision.approval_id} is waiting for an answer"
    return text
