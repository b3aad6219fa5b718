"""The decision benchmark still runs, and Tether agrees with raw Cedar on every decision in it.

Figures are not asserted here (timing assertions are flaky on shared machines); `make bench`
reports them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "decision.py"


def test_quick_benchmark_runs_and_agrees_with_cedar(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--policies",
            "10",
            "100",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # 1 means a disagreement
    assert "median <= 100 us at 1,000 policies" not in result.stdout  # not run at this size
    assert figures.exists() and '"disagreements"' in figures.read_text()
