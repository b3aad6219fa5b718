"""Tether beside its peers, on one scenario (scenario.py), in one run.

    .venv/bin/python benchmarks/peers/run.py [--rounds 1600] [--repeat 2] [--quick] [--json F]

The peers are installed here on first use, each into its own virtual environment under
benchmarks/peers/.venvs (ignored by git; `--reinstall` makes them again), at the versions
below. Each engine runs in a process of its own (drivers/): raw cedarpy with parsed policies,
the floor for any engine on Cedar; Tether with everything on (task token, session state,
durable hash-chained record); Microsoft's agent-governance-toolkit with its audit log to a
file and in memory; tollgate; casbin. The engines take turns, `--repeat` times, so that the
machine's drift falls on all of them; each figure is the median of its runs' medians.

Then Tether alone at scale: the same scenario with 10, 100, 1,000 and 10,000 policies in the
bundle (filler policies for other agents, beside the scenario's seven; raw cedarpy beside it
on the same bundle), and tasks of 10, 100 and 1,000 calls.

Targets (issue 10): Tether at most 1.5x raw cedarpy at the median, and at least 3x faster
than agent-governance-toolkit with its audit on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
# name: (what pip installs, driver, its arguments)
PEERS: dict[str, tuple[str, str, list[str]]] = {
    "agt": ("agent-governance-toolkit[core]==4.1.0", "agt.py", []),
    "agt-memory": ("agent-governance-toolkit[core]==4.1.0", "agt.py", ["--memory-audit"]),
    "tollgate": ("tollgate==1.4.0", "tollgate_engine.py", []),
    "casbin": ("pycasbin==2.8.0", "casbin_engine.py", []),
}
# In Tether's own venv: Tether as it ships, Tether with the record committed after the answer
# (`async` durability: what the durable commit costs), and raw cedarpy.
OURS = {
    "tether": ("tether_engine.py", []),
    "tether-async": ("tether_engine.py", ["--durability", "async"]),
    "cedarpy": ("cedarpy_raw.py", []),
}
POLICY_COUNTS = (10, 100, 1_000, 10_000)
TASK_LENGTHS = (10, 100, 1_000)
TARGET_CEDARPY_RATIO = 1.5
TARGET_AGT_SPEEDUP = 3.0


def python_for(name: str, reinstall: bool, out: Console) -> str:
    if name in OURS:
        return sys.executable
    requirement = PEERS[name][0]
    folder = VENVS / requirement.split("[")[0].split("=")[0]
    stamp = folder / ".installed"
    if reinstall or not stamp.exists() or stamp.read_text() != requirement:
        out.print(f"installing {requirement} into {folder.relative_to(HERE.parent.parent)}")
        venv.create(folder, with_pip=True, clear=True)
        pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, requirement], check=True)
        stamp.write_text(requirement)
    return str(folder / "bin" / "python")


def drive(python: str, driver: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, str(HERE / "drivers" / driver), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"{driver} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def compare(rounds: int, repeat: int, reinstall: bool, out: Console) -> dict[str, Any]:
    engines = [*OURS, *PEERS]
    pythons = {name: python_for(name, reinstall, out) for name in engines}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    for turn in range(repeat):
        for name in engines:
            out.print(f"  turn {turn + 1}/{repeat}: {name}", highlight=False)
            driver, extra = OURS[name] if name in OURS else PEERS[name][1:]
            runs[name].append(drive(pythons[name], driver, "--rounds", str(rounds), *extra))
    figures = {}
    for name, results in runs.items():
        first = results[0]
        figures[name] = {
            **{k: first[k] for k in ("engine", "version", "setup", "native", "glue")},
            "median_us": statistics.median(r["median_us"] for r in results),
            "p99_us": statistics.median(r["p99_us"] for r in results),
            "decisions": sum(r["decisions"] for r in results),
            "correct": sum(r["correct"] for r in results),
            "wrong": {k: v for r in results for k, v in r["wrong"].items()},
        }
    return figures


def scale(rounds: int, out: Console) -> dict[str, Any]:
    by_policies = {}
    for count in POLICY_COUNTS:
        out.print(f"  {count:,} policies", highlight=False)
        by_policies[count] = {
            name: drive(
                sys.executable, OURS[name][0], "--rounds", str(rounds), "--policies", str(count)
            )
            for name in ("tether", "cedarpy")
        }
    by_length = {}
    for length in TASK_LENGTHS:
        out.print(f"  tasks of {length:,} calls", highlight=False)
        tasks = max(3, rounds * 13 // length)
        by_length[length] = drive(
            sys.executable, OURS["tether"][0], "--task-length", str(length), "--rounds", str(tasks)
        )
    return {"policies": by_policies, "task_length": by_length}


def report(figures: dict[str, Any], scaled: dict[str, Any], out: Console) -> None:
    tether = figures["tether"]["median_us"]
    table = Table(title="one scenario, every engine (µs per decision)")
    for column in ("engine", "version", "median", "p99", "x Tether", "correct"):
        table.add_column(column, justify="left" if column in ("engine", "version") else "right")
    for f in figures.values():
        table.add_row(
            f["engine"], f["version"], f"{f['median_us']:.1f}", f"{f['p99_us']:.1f}",
            f"{f['median_us'] / tether:.2f}", f"{f['correct']:,}/{f['decisions']:,}",
        )  # fmt: skip
    out.print(table)
    for f in figures.values():
        native = ", ".join(f["native"]) or "-"
        glue = "; ".join(f["glue"]) or "none"
        out.print(f"- {f['engine']}: {f['setup']}. Native: {native}. Glue: {glue}.")
    cedar = figures["cedarpy"]["median_us"]
    agt = figures["agt"]["median_us"]
    out.print(
        f"Tether / raw cedarpy: {tether / cedar:.2f}x (target <= {TARGET_CEDARPY_RATIO}x: "
        f"{'met' if tether / cedar <= TARGET_CEDARPY_RATIO else 'missed'}); "
        f"agent-governance-toolkit (audit to file) / Tether: {agt / tether:.2f}x (target >= "
        f"{TARGET_AGT_SPEEDUP}x: {'met' if agt / tether >= TARGET_AGT_SPEEDUP else 'missed'})"
    )
    table = Table(title="Tether at scale (µs per decision)")
    for column in ("policies", "Tether median", "Tether p99", "raw cedarpy median", "correct"):
        table.add_column(column, justify="right")
    for count, pair in scaled["policies"].items():
        t, c = pair["tether"], pair["cedarpy"]
        table.add_row(
            f"{count:,}", f"{t['median_us']:.1f}", f"{t['p99_us']:.1f}", f"{c['median_us']:.1f}",
            f"{t['correct']:,}/{t['decisions']:,}",
        )  # fmt: skip
    out.print(table)
    table = Table(title="Tether by task length (µs per decision)")
    for column in ("calls a task", "median", "p99", "median of the task's last tenth"):
        table.add_column(column, justify="right")
    for length, f in scaled["task_length"].items():
        table.add_row(
            f"{length:,}",
            f"{f['median_us']:.1f}",
            f"{f['p99_us']:.1f}",
            f"{f['late_median_us']:.1f}",
        )
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1600, help="tasks of 13 calls per run")
    parser.add_argument("--repeat", type=int, default=2, help="turns each engine takes")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    parser.add_argument("--reinstall", action="store_true", help="make the peers' venvs again")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rounds, repeat = (30, 1) if args.quick else (args.rounds, args.repeat)
    out = Console()
    out.print(f"{rounds:,} tasks of 13 calls per run, {repeat} turns each")
    figures = compare(rounds, repeat, args.reinstall, out)
    scaled = scale(max(30, rounds // 4), out)
    report(figures, scaled, out)
    if args.json:
        args.json.write_text(json.dumps({"engines": figures, "scale": scaled}, indent=2))
    wrong = {name: f["wrong"] for name, f in figures.items() if f["wrong"]}
    if wrong:
        out.print(f"[red]wrong answers[/]: {wrong}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
