"""Reading the decision log from the command line: query, export, explain, tail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from test_cli import run_cli

from tether import Guard
from tether.audit import record_hash
from tether.model import DecisionRecord
from tether.store import Store

pytestmark = (
    pytest.mark.sqlite
)  # a module-scoped home: on PostgreSQL it needs a database per module

MAIL = [
    ("bob@acme.com", 0),
    ("eve@evil.io", 3),
    ("carol@acme.com", 0),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("audit-cli") / "home"
    assert run_cli(home, "init").returncode == 0
    for to, code in MAIL:
        args = json.dumps({"to": to, "subject": "hi"})
        result = run_cli(
            home, "check", "acme", "coder", "send_email", "--user", "alice", "--args", args
        )
        assert result.returncode == code, result.stderr
    return home


def test_query_filters(home: Path) -> None:
    denied = run_cli(home, "audit", "query", "--tool", "send_email", "--effect", "deny", "--json")
    records = [json.loads(line) for line in denied.stdout.splitlines()]
    assert [json.loads(r["args"])["to"] for r in records] == ["eve@evil.io"]
    table = run_cli(home, "audit", "query", "--agent", "coder", "--since", "1h")
    assert table.returncode == 0 and table.stdout.count("send_email") == 3


def test_export_writes_every_record_with_its_chain(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    assert run_cli(home, "audit", "export", str(target), "--workspace", "acme").returncode == 0
    records = [
        msgspec.json.decode(line, type=DecisionRecord) for line in target.read_text().splitlines()
    ]
    assert len(records) == 3 and [json.loads(r.args)["to"] for r in records] == [
        to for to, _ in MAIL
    ]
    assert all(r.hash == record_hash(r) for r in records)


def test_explain_shows_what_decided_and_why(home: Path) -> None:
    denied = json.loads(
        run_cli(home, "audit", "query", "--effect", "deny", "--json").stdout.splitlines()[0]
    )
    shown = run_cli(home, "audit", "explain", denied["id"])
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "deny" in out and "eve@evil.io" in out and "(matches the record)" in out
    assert "forbid" in out or "permit" in out  # the deciding policy's text
    assert '"args"' in out  # the context the policies saw
    assert "no decision 'dec_nope'" in run_cli(home, "audit", "explain", "dec_nope").stderr


def test_tail_prints_decisions_as_they_are_made(home: Path) -> None:
    store = Store.at_home(home)
    end = store.audit.last_seq()  # where the log ends now: tail starts there, however slow
    store.close()
    command = ["audit", "tail", "--count", "2", "--interval", "0.1", "--after", str(end)]
    tail = subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "--home", str(home), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    try:
        for path in ("/repo/a", "/repo/b"):
            run_cli(
                home,
                "check",
                "acme",
                "coder",
                "read_file",
                "--user",
                "alice",
                "--args",
                json.dumps({"path": path}),
            )
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all("read_file" in line and "allow" in line for line in lines)


def test_agent_written_control_characters_are_shown_not_obeyed(home: Path) -> None:
    with (
        Guard.embedded(home=home) as guard,
        guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
        ) as task,
    ):
        task.authorize("\x1b]0;pwned\x07\x1b[2Jx\rFAKE allow", {})
    store = Store.at_home(home)
    before_it = store.audit.last_seq() - 1
    store.close()
    for command in (
        ["audit", "query", "--limit", "1"],
        ["audit", "tail", "--count", "1", "--after", str(before_it)],
    ):
        shown = run_cli(home, *command).stdout
        assert "\x1b" not in shown and "\\x1b" in shown, command
