"""AgentDojo's suites as the replay needs them: tasks, environments with the attack placed in
them, and the calls each task's solution makes. Everything ships in the `agentdojo` package and
loads offline. The package is pinned (0.1.35), which is what makes the few private names used
here safe to use.

What the pinned package gets wrong, and how this module goes around it:

- It never imports its own v1.1.2 fixes (workspace injection tasks 0, 4 and 5 and user tasks 13
  and 33; travel injection tasks 3 and 5): the suite is rebuilt here after importing them, at
  the version the package ships, and `Suite.patched` names the tasks that changed.
- `TaskSuite.check()` calls every task "not injectable", so `generate_injections()` fails; the
  attack's own pieces work, and are used one by one (the injection vectors a user task reads are
  found once per task, not once per pair).
- The workspace suite's injection tasks 6-13 have no ground truth; ground_truth.py writes them.

Environments are parsed with libyaml (the package reads them with the pure-Python parser, four
times per environment): the same data, a fraction of the time.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack
from agentdojo.task_suite import load_suites
from agentdojo.task_suite.task_suite import read_suite_file
from agentdojo.types import text_content_block_from_string

from tether.errors import InvalidInput
from tether.eval.agentdojo.ground_truth import WRITTEN

# After load_suites (before it, the package's own imports go round in a circle).
importlib.import_module("agentdojo.default_suites.v1_1_2")  # registers the v1.1.2 fixes

VERSION = "v1.2.2"
SUITES = ("workspace", "travel", "banking", "slack")
# The attack addresses the model by name; any name the package knows will do, and none is
# called: the replay has no model.
MODEL = "gpt-4o-2024-05-13"
# Where an injection starts in a tool's output. Matched rather than the injected text itself:
# the YAML a tool's result is shown as re-wraps long lines.
MARKER = "<INFORMATION>"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def task_number(task_id: str) -> int:
    """`user_task_13` -> 13: tasks are kept and shown in this order."""
    return int(re.sub(r"\D", "", task_id))


@dataclass(frozen=True)
class _Pipeline:
    """All the attack asks of the agent it attacks: a name."""

    name: str = MODEL


@dataclass
class Suite:
    name: str
    tasks: Any  # agentdojo's TaskSuite
    patched: tuple[str, ...] = ()  # tasks the package's own later fixes replaced
    attack: Any = field(init=False)  # its ImportantInstructionsAttack
    _environment: str = field(init=False, repr=False)
    _defaults: dict[str, str] = field(init=False, repr=False)
    _read: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.attack = ImportantInstructionsAttack(self.tasks, _Pipeline())
        self._environment = read_suite_file(self.name, "environment.yaml", self.tasks.data_path)
        self._defaults = self.tasks.get_injection_vector_defaults()

    @property
    def user_tasks(self) -> list[Any]:
        return _in_order(self.tasks.user_tasks)

    @property
    def injection_tasks(self) -> list[Any]:
        return _in_order(self.tasks.injection_tasks)

    def environment(self, injections: dict[str, str] | None = None) -> Any:
        """A fresh environment, with `injections` placed in their vectors (the rest hold the
        suite's harmless defaults)."""
        unknown = set(injections or {}) - set(self._defaults)
        if unknown:
            raise ValueError(f"no such injection vectors in {self.name}: {sorted(unknown)}")
        text = self._environment.format(**{**self._defaults, **(injections or {})})
        loaded = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
        return self.tasks.environment_type.model_validate(loaded)

    def injections(self, user_task: Any, injection_task: Any) -> dict[str, str]:
        """The attack against `user_task`, as the package's `attack()` makes it: the injection
        task's goal, wrapped in the attack's text, in every vector the user task reads."""
        text = self.attack.jailbreak.format(
            goal=injection_task.GOAL,
            user=self.attack.user_name,
            model=self.attack.model_name,
            task=self.attack.summarize_task(user_task),
        )
        return dict.fromkeys(self._vectors(user_task.ID), text)

    def _vectors(self, user_task_id: str) -> tuple[str, ...]:
        """The vectors the user task reads (found by playing its ground truth once)."""
        vectors = self._read.get(user_task_id)
        if vectors is None:
            task = self.tasks.user_tasks[user_task_id]
            vectors = self._read[user_task_id] = tuple(self.attack.get_injection_candidates(task))
        return vectors

    def injection_calls(self, injection_task: Any, environment: Any) -> list[Any]:
        """The calls that carry out the injection task, from `environment`."""
        written = self.written(injection_task)
        if written is not None:
            return written(environment)
        return list(injection_task.ground_truth(environment))

    def written(self, injection_task: Any) -> Callable[[Any], list[Any]] | None:
        """The ground truth this project wrote for an injection task the package left empty."""
        return WRITTEN.get((self.name, injection_task.ID))

    def check(self, task: Any, answer: str, before: Any, after: Any, trace: list[Any]) -> bool:
        """AgentDojo's verdict on `task` (utility for a user task, security for an injection
        task), by the path the package's own runner takes."""
        final = [text_content_block_from_string(answer)]
        return bool(self.tasks._check_task_result(task, final, before, after, trace))


def _in_order(tasks: dict[str, Any]) -> list[Any]:
    return [tasks[key] for key in sorted(tasks, key=task_number)]


def load(name: str) -> Suite:
    """The suite `name` at VERSION, with the package's own later fixes included."""
    if name not in SUITES:
        raise InvalidInput(f"no AgentDojo suite {name!r}: one of {', '.join(SUITES)}")
    shipped = load_suites.get_suite(VERSION, name)
    # The suites load_suites built are copies made before the fixes were registered.
    rebuilt = load_suites._V1_SUITES[name].get_new_version(shipped.benchmark_version)
    patched = [
        task_id
        for old, new in (
            (shipped.user_tasks, rebuilt.user_tasks),
            (shipped.injection_tasks, rebuilt.injection_tasks),
        )
        for task_id in sorted(new, key=task_number)
        if type(old.get(task_id)) is not type(new[task_id])
    ]
    return Suite(name, rebuilt, tuple(patched))


__all__ = ["MARKER", "SUITES", "VERSION", "Suite", "load"]
