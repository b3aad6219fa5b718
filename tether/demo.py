"""`tether demo`: one workspace, three agents, different runtime policies, one scripted story.

Every call goes through the real pipeline and is recorded in the demo's store; the table shows
what Tether decided and why.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.model import Decision
from tether.sdk import Guard

STARTER = Path(__file__).parent / "starter" / "acme"
COLOURS = {"allow": "green", "deny": "red", "approval_required": "yellow"}


@dataclass(frozen=True)
class Act:
    agent: str
    request: str
    tools: tuple[str, ...]
    calls: tuple[tuple[str, dict[str, Any]], ...]
    note: str


ACTS = (
    Act(
        "planner",
        "Plan the fix for issue #42: the parser crashes on empty input",
        ("read_file", "create_ticket"),
        (
            ("read_file", {"path": "/repo/src/parser.py"}),
            ("create_ticket", {"title": "Parser crashes on empty input", "priority": "high"}),
            ("write_file", {"path": "/repo/src/parser.py", "content": "..."}),
        ),
        "the planner's task grants reading and planning, not writing",
    ),
    Act(
        "coder",
        "Fix the parser crash and tell bob@acme.com when it is done",
        ("read_file", "write_file", "run_tests", "send_email", "delete_branch"),
        (
            ("read_file", {"path": "/repo/src/parser.py"}),
            ("write_file", {"path": "/repo/src/parser.py", "content": "def parse(s): ..."}),
            ("read_file", {"path": "/repo/../etc/passwd"}),
            ("run_tests", {"target": "tests/test_parser.py"}),
            ("send_email", {"to": "bob@acme.com", "subject": "Parser fixed"}),
            ("send_email", {"to": "eve@acme.com.evil.io", "subject": "Parser fixed"}),
            ("delete_branch", {"branch": "fix/old-parser"}),
            ("read_secret", {"name": "prod-database"}),
        ),
        "the coder works in the repository; policies stop the rest",
    ),
    Act(
        "monitor",
        "Watch the deploy of the parser fix",
        ("read_logs", "write_file"),
        (
            ("read_logs", {"service": "api", "lines": 200}),
            ("write_file", {"path": "/repo/NOTES.md", "content": "deploy looks fine"}),
        ),
        "the task grants write_file, but a monitor's policy never lets it write",
    ),
)


def run_demo(home: Path | None, console: Console) -> None:
    home = home or Path(tempfile.mkdtemp(prefix="tether-demo-"))
    with Guard.embedded(home=home) as guard:
        workspace = guard.apply_directory(STARTER)
        for agent in ("planner", "coder", "monitor"):
            guard.resume_agent(workspace, agent)  # a re-run starts from a clean slate

        table = Table(title="Tether demo: workspace acme, three agents, one story")
        table.add_column("#", justify="right")
        table.add_column("agent")
        table.add_column("call", overflow="fold")
        table.add_column("decision", no_wrap=True)
        table.add_column("why")
        count = 0
        for act in ACTS:
            table.add_section()
            table.add_row(
                "",
                f"[bold]{act.agent}[/]",
                f"[italic]{escape(act.request)}[/]",
                "",
                f"[dim]{act.note}[/]",
            )
            with guard.task(
                workspace=workspace,
                agent=act.agent,
                user="alice",
                request=act.request,
                tools=act.tools,
            ) as task:
                for tool, args in act.calls:
                    count += 1
                    table.add_row(
                        str(count),
                        act.agent,
                        _call(tool, args),
                        *_shown(task.authorize(tool, args)),
                    )

        table.add_section()
        table.add_row("", "[bold]coder[/]", "[italic]the owner pulls the kill switch[/]", "", "")
        with guard.task(
            workspace=workspace, agent="coder", user="alice", request="Tidy up", tools=["read_file"]
        ) as task:
            call = ("read_file", {"path": "/repo/README.md"})
            count += 1
            table.add_row(str(count), "coder", _call(*call), *_shown(task.authorize(*call)))
            guard.suspend_agent(workspace, "coder")
            table.add_row("", "owner", "[italic]tether agent suspend acme coder[/]", "", "")
            count += 1
            table.add_row(str(count), "coder", _call(*call), *_shown(task.authorize(*call)))
        console.print(table)
        recorded = len(guard.store.decisions(workspace=workspace, limit=10_000))

    console.print(
        f"\n{recorded} decisions recorded in [bold]{home / 'tether.db'}[/] "
        f"(policies: {STARTER / 'policies'})"
    )
    tether = "tether" if shutil.which("tether") else str(Path(sys.executable).parent / "tether")
    console.print("Next:")
    console.print(f"  {tether} --home {home} agent list acme")
    example = '{"path": "/repo/README.md"}'
    console.print(f"  {tether} --home {home} check acme planner read_file --args '{example}'")
    console.print(f"  {tether} policy test {STARTER / 'policies'}")


def _call(tool: str, args: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return escape(f"{tool}({shown})")


def _shown(decision: Decision) -> tuple[str, str]:
    colour = COLOURS[decision.effect.value]
    label = decision.effect.value.replace("_", " ")
    if decision.approver_roles:
        label += f" ({', '.join(decision.approver_roles)})"
    first = decision.reasons[0]
    where = f"policy {first.policy}" if first.policy else f"{first.stage.value} stage"
    return f"[{colour}]{label}[/]", escape(f"{where}: {decision.reason}")
