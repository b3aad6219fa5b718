"""The decision benchmark still runs, and Tether agrees with raw Cedar on every decision in it.

Figures are not asserted here (timing assertions are flaky on shared machines); `make bench`
reports them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks measure the embedded SQLite store; each makes its own.
pytestmark = pytest.mark.sqlite

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "decision.py"


def quick_run(script: str, figures: Path, *args: str) -> dict[str, object]:
    """Run `benchmarks/<script> --quick ARGS --json FIGURES`; its figures, once it exited 0."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARK.parent / script), "--quick", *args, "--json", str(figures)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, object] = json.loads(figures.read_text())
    return found


def test_quick_benchmark_runs_and_agrees_with_cedar(tmp_path: Path) -> None:
    # it exits 1 on a disagreement with raw Cedar
    results: Any = quick_run("decision.py", tmp_path / "figures.json", "--policies", "10", "100")[
        "results"
    ]
    assert sorted((r["workload"], r["policies"]) for r in results) == [
        ("bounded", 10),
        ("bounded", 100),
        ("proportional", 10),
        ("proportional", 100),
    ]
    for r in results:
        assert r["disagreements"] == {"tether_vs_whole": 0, "docs_vs_fast": 0, "slice_vs_whole": 0}
        assert r["latency"]["tether"]["n"] == r["timed_per_variant"] > 0


def test_quick_credentials_benchmark_runs(tmp_path: Path) -> None:
    results: Any = quick_run("credentials.py", tmp_path / "credentials.json")["results"]
    assert set(results) == {
        "raw ES256 sign",
        "raw ES256 verify",
        "exchange",
        "token + DPoP proof",
        "cached token",
    }
    assert all(r["n"] == 100 and r["median_us"] > 0 for r in results.values())


def test_quick_audit_benchmark_runs_and_the_log_verifies(tmp_path: Path) -> None:
    # it exits 1 unless verify finds the log intact
    results: Any = quick_run("audit.py", tmp_path / "audit.json", "--writers", "2")["results"]
    # three levels, each: one writer (five times as many: ALONE_LONGER), two threads, two
    # processes, 300 records per writer
    assert results["records"] == 3 * (5 + 2 + 2) * 300
    assert set(results["appends"]) == {"commit", "fsync", "async"}
    assert all(v > 0 for level in results["appends"].values() for v in level.values())
    assert results["verify"] > 0


def test_quick_http_benchmark_runs_and_every_call_is_answered(tmp_path: Path) -> None:
    # it exits 1 if any call was not answered 200
    results: Any = quick_run("http_api.py", tmp_path / "http.json", "--connections", "4")["results"]
    assert set(results) == {
        "ceiling: GET /healthz",
        "authorize, proofs made ahead",
        "authorize, a proof signed per call",
    }
    assert all(r["calls"] == 300 and r["failed"] == 0 and r["rate"] > 0 for r in results.values())


def test_quick_load_run_answers_every_call_it_offers(tmp_path: Path) -> None:
    """Two short steps against one and two workers (SQLite: the PostgreSQL runs need the
    shared server, which `make bench` uses); it exits 1 if any call was not answered 200."""
    runs: Any = quick_run("load.py", tmp_path / "load.json", "--no-pg", "--out", str(tmp_path))[
        "runs"
    ]
    assert set(runs) == {"SQLite, 1 worker", "SQLite, 2 workers"}
    for run in runs.values():
        assert [s["offered"] for s in run["steps"]] == [50, 100]
        assert [s["answered"] for s in run["steps"]] == [50, 100]  # one-second steps
        assert all(s["not_200"] == 0 and s["p99_ms"] > 0 for s in run["steps"])
        assert run["memory_mib"] and min(run["memory_mib"]) > 10  # the service's processes
    assert {p.name for p in tmp_path.glob("load*")} >= {
        "load.md",
        "load-throughput.png",
        "load-latency.png",
        "load-memory.png",
    }


def test_quick_gateway_benchmark_runs(tmp_path: Path) -> None:
    """Every path answers every call (the benchmark asserts each result is no error)."""
    figures: Any = quick_run("gateway.py", tmp_path / "gateway.json")
    paths = {"direct", "gateway", "gateway_eliciting", "passthrough"}
    assert set(figures) == paths | {
        "added_median_ms",
        "added_eliciting_median_ms",
        "added_passthrough_median_ms",
        "cpu_per_call_ms",
        "steal_percent",
    }
    assert 0 <= figures["steal_percent"] <= 100
    assert all(figures[path]["median_ms"] > 0 for path in paths)
    cpu = figures["cpu_per_call_ms"]
    assert set(cpu) == paths - {"direct"} | {"upstream"} and all(v > 0 for v in cpu.values())


def test_quick_console_benchmark_fetches_every_page(tmp_path: Path) -> None:
    """Every page answers 200 on a seeded store (the benchmark asserts each fetch)."""
    figures: Any = quick_run("console.py", tmp_path / "console.json")
    assert figures["decisions"] == 2_000
    assert {"approvals (inbox)", "decisions (feed, charts)", "review (30 days)"} <= set(
        figures["pages"]
    )
    assert "an approval" in figures["pages"]


@pytest.mark.parametrize("driver", ["tether_engine.py", "cedarpy_raw.py"])
def test_the_peers_scenario_is_decided_right_by_tether_and_by_raw_cedar(
    driver: str, tmp_path: Path
) -> None:
    """Every call of the peers' scenario (benchmarks/peers/scenario.py) gets the expected
    answer; the peers themselves are installed by `make bench` only (their own venvs)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARK.parent / "peers" / "drivers" / driver), "--rounds", "5"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["wrong"] == {}
    assert figures["correct"] == figures["decisions"] == 5 * 13
