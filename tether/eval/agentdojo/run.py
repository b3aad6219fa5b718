"""A whole suite: every user task alone, then every (user task, injection task) pair, in each
approval mode asked for, on a new Tether store.

The oracle mode differs from `none` only from the first call that needs approval on, so only
the episodes that met one in `none` are played again: the rest would make the same calls to the
same decisions. (Even an episode whose only such calls are the injection's is played again: a
person's refusal is not the same as no answer to the calls that follow, which Tether then
refuses without asking again.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tether.eval.agentdojo import suites
from tether.eval.agentdojo.folder import prepare
from tether.eval.agentdojo.replay import Approvals, Episode, Gate, play
from tether.eval.agentdojo.report import Summary, summarize


@dataclass(frozen=True)
class Result:
    suite: str
    patched: tuple[str, ...]  # tasks the package's own later fixes replaced (suites.py)
    summaries: tuple[Summary, ...]
    episodes: dict[Approvals, tuple[Episode, ...]]


def evaluate(
    suite: suites.Suite,
    folder: Path,
    *,
    approvals: Sequence[Approvals] = (Approvals.NONE, Approvals.ORACLE),
    baseline: bool = True,
    allow_all: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Result:
    written = [t.ID for t in suite.injection_tasks if suite.written(t) is not None]
    pairs = [(u, i) for u in suite.user_tasks for i in suite.injection_tasks]
    with tempfile.TemporaryDirectory(prefix="tether-eval-") as home:
        gate = prepare(Path(home), folder, baseline=baseline, allow_all=allow_all)
        try:
            first = _play_all(suite, gate, [(u, None) for u in suite.user_tasks] + pairs, progress)
            episodes = {Approvals.NONE: first}
            if Approvals.ORACLE in approvals:
                episodes[Approvals.ORACLE] = _again_with_oracle(suite, gate, first, progress)
        finally:
            gate.guard.close()
    alone = len(suite.user_tasks)
    summaries = tuple(
        summarize(suite.name, mode, played[:alone], played[alone:], written)
        for mode, played in episodes.items()
        if mode in approvals
    )
    return Result(
        suite.name,
        suite.patched,
        summaries,
        {m: tuple(e) for m, e in episodes.items() if m in approvals},
    )


def _play_all(
    suite: suites.Suite,
    gate: Gate,
    episodes: list[tuple[object, object | None]],
    progress: Callable[[str], None],
) -> list[Episode]:
    played = []
    for n, (user_task, injection_task) in enumerate(episodes, 1):
        played.append(play(suite, gate, user_task, injection_task, Approvals.NONE))
        if n % 50 == 0 or n == len(episodes):
            progress(f"{suite.name}: {n}/{len(episodes)} episodes")
    return played


def _again_with_oracle(
    suite: suites.Suite, gate: Gate, first: list[Episode], progress: Callable[[str], None]
) -> list[Episode]:
    users = {t.ID: t for t in suite.user_tasks}
    injections = {t.ID: t for t in suite.injection_tasks}
    again = []
    for episode in first:
        if not episode.prompts:
            again.append(episode)
            continue
        injection = injections[episode.injection_task] if episode.injection_task else None
        again.append(play(suite, gate, users[episode.user_task], injection, Approvals.ORACLE))
    replayed = sum(a is not e for a, e in zip(again, first, strict=True))
    progress(f"{suite.name}: {replayed} episodes played again, with the oracle")
    return again


__all__ = ["Result", "evaluate"]
