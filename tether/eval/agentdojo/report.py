"""What a run of a suite adds up to, per approval mode: the figures AgentDojo's papers report
(utility without and under attack, attack success rate), and what they cost in approvals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tether.eval.agentdojo.replay import Approvals, Episode
from tether.eval.agentdojo.suites import task_number


@dataclass(frozen=True)
class Summary:
    suite: str
    approvals: Approvals
    user_tasks: int
    pairs: int
    utility: float  # user tasks done, run alone
    utility_under_attack: float  # pairs whose user task was done
    asr: float  # pairs where the attacker's goal was reached
    attacks_succeeded: int
    prompts_per_task: float  # approval prompts per user task, run alone
    prompts_per_pair: float
    # The pairs whose injection task's calls this project wrote (ground_truth.py), apart, and
    # the ASR over the others, whose calls are the package's own:
    written: tuple[str, ...]
    written_pairs: int
    written_succeeded: int
    asr_package_ground_truths: float


def summarize(
    suite: str,
    approvals: Approvals,
    alone: Sequence[Episode],
    attacked: Sequence[Episode],
    written: Iterable[str] = (),
) -> Summary:
    ours = tuple(written)
    succeeded = [e for e in attacked if e.attacked]
    theirs = [e for e in attacked if e.injection_task not in ours]
    return Summary(
        suite=suite,
        approvals=approvals,
        user_tasks=len(alone),
        pairs=len(attacked),
        utility=_mean(e.utility for e in alone),
        utility_under_attack=_mean(e.utility for e in attacked),
        asr=_mean(bool(e.attacked) for e in attacked),
        attacks_succeeded=len(succeeded),
        prompts_per_task=_mean(e.prompts for e in alone),
        prompts_per_pair=_mean(e.prompts for e in attacked),
        written=ours,
        written_pairs=len(attacked) - len(theirs),
        written_succeeded=sum(e.injection_task in ours for e in succeeded),
        asr_package_ground_truths=_mean(bool(e.attacked) for e in theirs),
    )


def _mean(values: Iterable[int]) -> float:
    seen = list(values)
    return sum(seen) / len(seen) if seen else 0.0


COLUMNS = (
    ("approvals", 9),
    ("user tasks", 10),
    ("pairs", 5),
    ("utility", 7),
    ("utility under attack", 20),
    ("ASR", 14),
    ("prompts/task", 12),
    ("prompts/pair", 12),
)


def table(title: str, summaries: Sequence[Summary]) -> str:
    """The summaries as a plain-text table (one row per approval mode)."""
    lines = [title, "  ".join(name.rjust(width) for name, width in COLUMNS)]
    for s in summaries:
        cells = (
            s.approvals.value,
            str(s.user_tasks),
            str(s.pairs),
            f"{s.utility:.1%}",
            f"{s.utility_under_attack:.1%}",
            f"{s.asr:.1%} ({s.attacks_succeeded})",
            f"{s.prompts_per_task:.2f}",
            f"{s.prompts_per_pair:.2f}",
        )
        lines.append(
            "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
        )
    for s in summaries:
        if s.written_pairs:
            lines.append(
                f"{s.approvals.value}: ASR {s.asr_package_ground_truths:.1%} over the"
                f" {s.pairs - s.written_pairs} pairs whose injection calls are AgentDojo's own;"
                f" {s.written_succeeded} of the {s.written_pairs} pairs whose injection calls"
                f" Tether wrote ({_tasks(s.written)}) succeeded"
            )
    return "\n".join(lines)


def _tasks(ids: Sequence[str]) -> str:
    """'injection tasks 6-13', from their ids."""
    numbers = sorted(task_number(i) for i in ids)
    contiguous = numbers == list(range(numbers[0], numbers[-1] + 1))
    shown = f"{numbers[0]}-{numbers[-1]}" if contiguous else ", ".join(map(str, numbers))
    return f"injection task{'s' if len(numbers) > 1 else ''} {shown}"


def as_json(summary: Summary, episodes: Sequence[Episode]) -> dict[str, Any]:
    return {**asdict(summary), "episodes": [asdict(e) for e in episodes]}


__all__ = ["Summary", "as_json", "summarize", "table"]
