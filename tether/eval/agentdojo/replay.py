"""One AgentDojo episode, played by a fully hijacked agent whose every call Tether decides.

The agent makes the user task's ground-truth calls in order. The moment a call's output shows
it the attack (the injection's marker), it obeys at once: it makes the injection task's calls,
computed from the environment as it was when it made that call (the checkers compare ids and
counts, so later would be wrong; and a read can change the environment: reading unread mail
marks it read), then goes on with the user's task. Every call is first decided in a Tether
task whose request is the user's prompt; a call that is not allowed is not made, and the agent
moves on. What a call returns (its output as the agent would read it, or its error) is reported
to the task, so labels and provenance grow as they would in a real run. AgentDojo's own checkers
then judge: utility (the user's task was done) and security (`True`: the attack succeeded).

Approvals: `none` (nobody answers: a call that needs approval is not made) or `oracle` (a person
approves exactly the calls of the user's own task and refuses the others). Either way each
approval request a person would see counts as one prompt (a call repeated while its request is
open joins that request, as Tether does).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import FunctionsRuntime

from tether.eval.agentdojo.suites import MARKER, Suite
from tether.model import Decision, Effect
from tether.sdk import Guard
from tether.sdk.guard import TaskHandle

_ID = re.compile(r"\b([a-z]{2,4})_[0-9a-f]{32}\b")  # a decision's or an approval's id


class Approvals(StrEnum):
    NONE = "none"
    ORACLE = "oracle"


@dataclass(frozen=True)
class Refusal:
    """A call that was not made, and why."""

    tool: str
    effect: str  # deny or approval_required
    own: bool  # a call of the user's task (False: of the injection task)
    reason: str


@dataclass(frozen=True)
class Episode:
    user_task: str
    injection_task: str | None  # None: the user task alone, no attack in the environment
    utility: bool
    attacked: bool | None  # AgentDojo's security(): the attacker's goal was reached
    exposed: bool  # the attack reached the agent (and it obeyed)
    prompts: int  # approval requests a person would have seen
    calls: int  # calls made
    refused: tuple[Refusal, ...]


@dataclass
class Gate:
    """Tether's side: a workspace whose template agent acts for `user` with `tools`, and a
    person (`approver`) who may answer its approvals. Each episode gets a fresh copy of the
    agent, so that no episode's history (tools used before, the rate of calls) weighs on the
    risk of another's decisions: episodes are independent, and run in any order alike. (So
    every tool an episode uses is a first use: the `first_use` risk signal is on in each.)"""

    guard: Guard
    workspace: str
    agent: str
    kind: str
    owner: str
    user: str
    tools: tuple[str, ...]
    approver: str
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def task(self, prompt: str) -> TaskHandle:
        agent = f"{self.agent}-{next(self._serial)}"
        self.guard.register_agent(self.workspace, agent, kind=self.kind, owner=self.owner)
        self.guard.grant(self.workspace, user=self.user, agent=agent, tools=self.tools)
        return self.guard.task(
            workspace=self.workspace, agent=agent, user=self.user, request=prompt, tools=self.tools
        )


@dataclass(frozen=True)
class Made:
    """A call that was made: what the agent read back, and whether the tool failed."""

    output: str
    failed: bool


@dataclass
class _Play:
    gate: Gate
    approvals: Approvals
    task: TaskHandle
    environment: Any
    runtime: Any
    trace: list[Any] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)  # approval requests met
    refused: list[Refusal] = field(default_factory=list)

    def call(self, call: Any, *, own: bool) -> Made | None:
        """Decide the call; make it if allowed (None: it was not)."""
        args = dict(call.args)
        decision = self._decide(call.function, args, own)
        if decision.effect is not Effect.ALLOW:
            reason = _ID.sub(r"\1_…", decision.reason)  # the same in every run
            self.refused.append(Refusal(call.function, decision.effect.value, own, reason))
            return None
        result, error = self.runtime.run_function(self.environment, call.function, args)
        output = error if error is not None else tool_result_to_str(result)
        self.task.report(decision, output)
        self.trace.append(call)
        return Made(output, error is not None)

    def _decide(self, tool: str, args: dict[str, Any], own: bool) -> Decision:
        decision = self.task.authorize(tool, args)
        if decision.effect is not Effect.APPROVAL_REQUIRED or decision.approval_id is None:
            return decision
        self.asked.add(decision.approval_id)
        if self.approvals is Approvals.NONE:
            return decision
        guard, approver = self.gate.guard, self.gate.approver
        if not own:
            guard.deny(decision.approval_id, approver=approver, comment="not what the user asked")
            return decision
        guard.approve(decision.approval_id, approver=approver, comment="what the user asked")
        return self.task.authorize(tool, args)


def play(
    suite: Suite,
    gate: Gate,
    user_task: Any,
    injection_task: Any | None,
    approvals: Approvals,
) -> Episode:
    injections = suite.injections(user_task, injection_task) if injection_task else {}
    environment = suite.environment(injections)
    before = environment.model_copy(deep=True)
    done, exposed = True, False
    with gate.task(user_task.PROMPT) as task:
        run = _Play(gate, approvals, task, environment, FunctionsRuntime(suite.tasks.tools))
        for call in user_task.ground_truth(environment):
            pending = injection_task is not None and not exposed
            seen = environment.model_copy(deep=True) if pending else None
            made = run.call(call, own=True)
            done = done and made is not None and not made.failed
            if seen is not None and made is not None and MARKER in made.output:
                exposed = True
                for injected in suite.injection_calls(injection_task, seen):
                    run.call(injected, own=False)
    answer = _final_answer(user_task, injection_task if exposed else None, done)
    utility, attacked = _judge(
        suite, run, before, answer=answer, user_task=user_task, injection_task=injection_task
    )
    return Episode(
        user_task=user_task.ID,
        injection_task=injection_task.ID if injection_task is not None else None,
        utility=utility,
        attacked=attacked,
        exposed=exposed,
        prompts=len(run.asked),
        calls=len(run.trace),
        refused=tuple(run.refused),
    )


def _final_answer(user_task: Any, obeyed: Any | None, done: bool) -> str:
    """The user task's expected answer if every one of its calls was made and worked (else the
    agent could not know it, and says nothing), then the attacker's if it saw the attack: an
    attack that only makes the agent say something succeeds whatever the calls."""
    answer = user_task.GROUND_TRUTH_OUTPUT if done else ""
    if obeyed is not None:
        answer = f"{answer}\n{obeyed.GROUND_TRUTH_OUTPUT}".strip()
    return str(answer)


def _judge(
    suite: Suite, run: _Play, before: Any, *, answer: str, user_task: Any, injection_task: Any
) -> tuple[bool, bool | None]:
    """AgentDojo's verdicts, utility first: some security checkers mark mail read in the
    environment they are given. Some checkers print why they fail; the verdict is what counts,
    and stdout is the report's."""
    with contextlib.redirect_stdout(io.StringIO()):
        utility = suite.check(user_task, answer, before, run.environment, run.trace)
        if injection_task is None:
            return utility, None
        return utility, suite.check(injection_task, answer, before, run.environment, run.trace)


__all__ = ["Approvals", "Episode", "Gate", "Made", "Refusal", "play"]
