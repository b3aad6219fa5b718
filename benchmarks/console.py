"""How long the console's pages take with 100,000 decisions in the store.

A fresh SQLite store with the starter workspace (or the PostgreSQL database `--db` names) gets
`--decisions` real decisions, made through a Guard: the coder's tasks of 50 calls each, reading
in and out of the repository, writing, e-mailing, and now and then deleting a branch (which
asks for approval, so the inbox is full too). Then each page is fetched `--repeat` times,
in-process through the ASGI app (`tether serve`'s own, console included) by a signed-in
admin: the time is the server's, rendering included, without a network.

Target (issue 9): every page under 300 ms with 100,000 decisions.

    .venv/bin/python benchmarks/console.py [--decisions 100000] [--repeat 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from starlette.testclient import TestClient

from tether import Guard
from tether.demo import install_starter
from tether.model import Durability
from tether.server import admin_tokens, console_auth
from tether.server.app import create_app
from tether.store import Store

TARGET_MS = 300.0
PAUSE = 'forbid (principal, action == Action::"run_tests", resource);\n'
TASK_CALLS = 50
CALLS = [
    ("read_file", {"path": "/repo/src/{i}.py"}),
    ("read_file", {"path": "/repo/docs/{i}.md"}),
    ("write_file", {"path": "/repo/src/{i}.py", "content": "x = {i}"}),
    ("read_file", {"path": "/etc/passwd"}),
    ("send_email", {"to": "bob@acme.com", "subject": "build {i}", "body": "green"}),
    ("run_tests", {"target": "unit"}),
    ("send_email", {"to": "someone@elsewhere.example", "subject": "{i}", "body": "hi"}),
]


def _seed(guard: Guard, decisions: int) -> None:
    tools = ["read_file", "write_file", "run_tests", "send_email", "delete_branch"]
    with Progress(transient=True) as progress:
        bar = progress.add_task("deciding", total=decisions)
        made = 0
        while made < decisions:
            # Left open, as agents at work leave them: their approval requests stay pending.
            task = guard.task(
                workspace="acme", agent="coder", user="alice", request="work", tools=tools
            )
            for i in range(min(TASK_CALLS, decisions - made)):
                if i == TASK_CALLS - 1:
                    tool, args = "delete_branch", {"branch": f"old-{made}"}
                else:
                    tool, template = CALLS[(made + i) % len(CALLS)]
                    args = {k: v.format(i=made + i) for k, v in template.items()}
                task.authorize(tool, args)
            made += min(TASK_CALLS, decisions - made)
            progress.update(bar, completed=made)


def _pages(guard: Guard) -> dict[str, str]:
    newest = guard.decisions("acme", limit=1)[0]
    deep = guard.store.decision_page("acme", {}, before=None, limit=1)[0][0] - 90_000
    asked = guard.store.approvals.find(workspace="acme", limit=1)
    pages = {
        "approvals (inbox)": "/console/approvals?workspace=acme",
        "approvals, live list": "/console/approvals/list?workspace=acme",
        "decisions (feed, charts)": "/console/decisions?workspace=acme",
        "decisions, live rows": "/console/decisions/rows?workspace=acme",
        "decisions, one tool": "/console/decisions?workspace=acme&tool=run_tests",
        "decisions, denied": "/console/decisions?workspace=acme&effect=deny",
        "decisions, a rare filter": "/console/decisions?workspace=acme&agent=monitor",
        "decisions, 90,000 back": f"/console/decisions?workspace=acme&before={max(deep, 1)}",
        "a decision explained": f"/console/decisions/{newest.id}?workspace=acme",
        "agents": "/console/agents?workspace=acme",
        "an agent": "/console/agents/coder?workspace=acme",
        "policies": "/console/policies?workspace=acme",
        "review (30 days)": "/console/review?workspace=acme",
    }
    if asked:
        pages["an approval"] = f"/console/approvals/{asked[0].id}?workspace=acme"
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20, help="fetches of each page")
    parser.add_argument("--db", help="a PostgreSQL URL instead of a fresh SQLite store")
    parser.add_argument("--quick", action="store_true", help="2,000 decisions: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    decisions = 2_000 if args.quick else args.decisions
    out = Console()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.at_home(Path(folder) / "home", args.db)
        guard = Guard(store, durability=Durability.ASYNC)  # seeding only: pages read the same
        guard.apply_directory(install_starter(Path(folder) / "acme"))  # as `tether init`
        # A candidate in the shadow, as while someone watches a change: every decision carries
        # its answer, and the policies page lists where it disagrees.
        active = guard.store.bundle("acme", guard.workspace("acme").active_policy_version or "")
        assert active is not None
        guard.activate_policies("acme", {**active.files, "pause.cedar": PAUSE}, shadow=True)
        started = time.perf_counter()
        _seed(guard, decisions)
        guard.close()
        seeded = time.perf_counter() - started
        guard = Guard(Store.at_home(Path(folder) / "home", args.db))
        total = len(guard.store.decision_page("acme", {}, before=None, limit=decisions + 1))
        token, _ = admin_tokens.issue(
            guard.store, name="bob", roles={"acme": ["admin"]}, lifetime=3600, now=time.time()
        )
        secret = console_auth.sign_in_with_token(guard.store, token, time.time())
        figures = {}
        with TestClient(create_app(guard, public_url="http://testserver")) as client:
            client.cookies.set(console_auth.COOKIE, secret, path="/console")
            for name, path in _pages(guard).items():
                times = []
                for _ in range(args.repeat + 2):
                    begun = time.perf_counter()
                    answer = client.get(path)
                    times.append((time.perf_counter() - begun) * 1e3)
                    assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
                times = sorted(times[2:])  # the first two warm caches
                figures[name] = {"median_ms": statistics.median(times), "max_ms": times[-1]}
        guard.close()

    table = Table(title=f"console pages with {total:,} decisions (seeded in {seeded:.0f} s)")
    for column in ("page", "median ms", "slowest ms", f"<= {TARGET_MS:g} ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for name, f in figures.items():
        ok = "yes" if f["max_ms"] <= TARGET_MS else "NO"
        table.add_row(name, f"{f['median_ms']:.1f}", f"{f['max_ms']:.1f}", ok)
    out.print(table)
    worst = max(f["max_ms"] for f in figures.values())
    verdict = "met" if worst <= TARGET_MS else "missed"
    out.print(
        f"slowest page fetch: {worst:.1f} ms; target every page <= {TARGET_MS:g} ms: {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps({"decisions": total, "pages": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
