"""The `tether` command, run as a real process: exit codes, output, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STARTER

from tether import cli

pytestmark = (
    pytest.mark.sqlite
)  # module-scoped homes: on PostgreSQL they need a database per module

ROOT = STARTER.parent.parent.parent


def cli_env() -> dict[str, str]:
    """A bare environment for the CLI, keeping the store the test runs on (TETHER_DB)."""
    kept = {"TETHER_DB": os.environ["TETHER_DB"]} if "TETHER_DB" in os.environ else {}
    return {"PATH": "/usr/bin:/bin", "COLUMNS": "200", **kept}


def run_cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=cli_env(),
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "home"
    result = run_cli(home, "init")
    assert result.returncode == 0, result.stderr
    assert "workspace acme" in result.stdout
    return home


def test_init_twice_is_a_clear_error(initialised: Path) -> None:
    assert "already exists" in one_line_error(run_cli(initialised, "init"))


@pytest.mark.parametrize(
    ("tool", "args", "code", "effect"),
    [
        ("send_email", {"to": "bob@acme.com", "subject": "hi"}, 0, "allow"),
        ("send_email", {"to": "eve@evil.io", "subject": "hi"}, 3, "deny"),
        ("delete_branch", {"branch": "old"}, 4, "approval_required"),
    ],
)
def test_check_decides_records_and_exits_by_effect(
    initialised: Path, tool: str, args: dict[str, str], code: int, effect: str
) -> None:
    result = run_cli(
        initialised,
        "check",
        "acme",
        "coder",
        tool,
        "--user",
        "alice",
        "--args",
        json.dumps(args),
        "--json",
    )
    assert result.returncode == code, result.stderr
    decision = json.loads(result.stdout)
    assert decision["effect"] == effect and decision["tool"] == tool
    assert decision["decision_id"].startswith("dec_")


def test_check_explains_in_words(initialised: Path) -> None:
    result = run_cli(
        initialised,
        "check",
        "acme",
        "coder",
        "read_file",
        "--user",
        "alice",
        "--args",
        '{"path": "/etc/passwd"}',
    )
    assert result.returncode == 3
    assert "deny read_file for coder in acme" in result.stdout
    assert "files outside /repo are off limits (repo-paths-only)" in result.stdout


def test_check_with_bad_input_is_one_line(initialised: Path) -> None:
    assert "--args is not valid JSON" in one_line_error(
        run_cli(
            initialised, "check", "acme", "coder", "read_file", "--user", "alice", "--args", "{nope"
        )
    )
    assert "agent 'ghost' is not registered" in one_line_error(
        run_cli(initialised, "check", "acme", "ghost", "read_file", "--user", "alice")
    )
    # bob is a user of acme but has delegated nothing to coder: no task, no decision.
    assert "user 'bob' has not delegated ['read_file'] to agent 'coder'" in one_line_error(
        run_cli(initialised, "check", "acme", "coder", "read_file", "--user", "bob")
    )


def test_policy_validate_reports_file_line_and_id(initialised: Path, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bad.cedar").write_text(
        '\n@id("typo")\npermit (principal, action == Action::"read_file", resource)\n'
        'when { context.args.pth == "/repo" };\n'
    )
    result = run_cli(initialised, "policy", "validate", str(policies), "--workspace", "acme")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bad.cedar:4 [typo]: attribute `args.pth`" in result.stderr
    assert "did you mean `path`?" in result.stderr
    installed = initialised / "workspaces" / "acme" / "policies"
    ok = run_cli(initialised, "policy", "validate", str(installed), "-w", "acme")
    assert ok.returncode == 0 and "valid: 17 policies" in ok.stdout  # 9 of acme's, 8 baseline


def test_policy_test_passes_and_fails(initialised: Path, tmp_path: Path) -> None:
    installed = initialised / "workspaces" / "acme"
    passing = run_cli(initialised, "policy", "test", str(installed / "policies"))
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "14 passed, 0 failed" in passing.stdout

    # The pack's tests come with it: a workspace that edits a rule can re-run them.
    pack = run_cli(initialised, "policy", "test", str(installed / "policies" / "baseline"))
    assert pack.returncode == 0, pack.stdout + pack.stderr
    assert "17 passed, 0 failed" in pack.stdout

    copy = tmp_path / "acme"
    shutil.copytree(installed, copy)
    tests = copy / "policies" / "tests.yaml"
    tests.write_text(tests.read_text().replace("expect: approval_required", "expect: allow"))
    failing = run_cli(initialised, "policy", "test", str(copy / "policies"))
    assert failing.returncode == 1
    assert "FAIL" in failing.stdout and "2 failed" in failing.stdout  # both step-up cases


def test_policy_fmt(initialised: Path, tmp_path: Path) -> None:
    file = tmp_path / "p.cedar"
    file.write_text("// keep me\npermit(principal,action,resource) when {context.args.x==1};")
    assert run_cli(initialised, "policy", "fmt", str(file), "--check").returncode == 1
    assert file.read_text().startswith("// keep me\npermit(principal")  # --check writes nothing
    assert run_cli(initialised, "policy", "fmt", str(file)).returncode == 0
    assert (
        "permit (principal, action, resource)" in file.read_text()
        and "// keep me" in file.read_text()
    )
    assert run_cli(initialised, "policy", "fmt", str(file), "--check").returncode == 0
    assert (
        run_cli(initialised, "policy", "fmt", str(STARTER / "policies"), "--check").returncode == 0
    )
    assert run_cli(initialised, "policy", "fmt", str(ROOT / "policies"), "--check").returncode == 0


def test_administration_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "workspace", "add", "beta").returncode == 0
    added = run_cli(
        home, "agent", "add", "beta", "bot", "--kind", "coder", "--owner", "ops@beta.io"
    )
    assert "spiffe://tether.local/ws/beta/agent/bot" in added.stdout
    schema = '{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}'
    assert (
        run_cli(
            home, "tool", "add", "beta", "search", "--effect", "read", "--schema", schema
        ).returncode
        == 0
    )
    assert "search" in run_cli(home, "tool", "list", "beta").stdout
    assert "bot" in run_cli(home, "agent", "list", "beta").stdout
    assert "beta" in run_cli(home, "workspace", "list").stdout
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "p.cedar").write_text("permit (principal, action, resource);")
    assert run_cli(home, "policy", "activate", str(policies), "-w", "beta").returncode == 0
    # A user (the command line adds them with `apply`) delegates the tool to the agent.
    users = tmp_path / "beta"
    users.mkdir()
    (users / "workspace.yaml").write_text("name: beta\nusers:\n  - {name: carol}\n")
    assert run_cli(home, "apply", str(users)).returncode == 0
    check = ("check", "beta", "bot", "search", "--user", "carol", "--args", '{"q": "x"}')
    assert "has not delegated" in one_line_error(run_cli(home, *check))
    granted = run_cli(
        home, "grant", "add", "beta", "--user", "carol", "--agent", "bot", "--tool", "search"
    )
    assert granted.returncode == 0, granted.stderr
    assert "carol -> bot: search" in granted.stdout
    assert run_cli(home, *check).returncode == 0
    assert run_cli(home, "agent", "suspend", "beta", "bot").returncode == 0
    assert "suspended" in one_line_error(run_cli(home, *check))
    assert run_cli(home, "agent", "resume", "beta", "bot").returncode == 0
    bad = run_cli(
        home,
        "tool",
        "add",
        "beta",
        "blob",
        "--effect",
        "write",
        "--schema",
        '{"type":"object","properties":{"m":{"type":"object"}}}',
    )
    assert "cannot be typed" in one_line_error(bad)


def test_unexpected_errors_are_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("TETHER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 70
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: disk on fire)" in err and "Traceback" not in err


def test_demo_plays_the_story(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether.cli", "demo", "--home", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "220"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "policy planner-reads-and-plans",
        "tool write_file is outside this task's scope",
        "policy repo-paths-only",
        "policy email-stays-inside",
        "approval required (admin)",
        "tether approvals approve apr_",
        "the same call, approved",
        "policy monitor-never-writes",
        "agent coder was suspended",
        "policy baseline-sink-provenance",
        "(to=untrusted)",
        "policy baseline-lethal-trifecta",
        "21 decisions recorded",
    ):
        assert expected in out, expected


def test_the_demo_will_not_play_in_a_home_it_did_not_make(tmp_path: Path) -> None:
    """Playing it rewrites workspace acme and resumes its agents: in a deployment's home, that
    would lift a suspension (the kill switch) without a word."""
    initialised = tmp_path / "home"
    assert run_cli(initialised, "init").returncode == 0
    assert run_cli(initialised, "agent", "suspend", "acme", "planner").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "tether.cli", "demo", "--home", str(initialised)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "220"},
    )
    assert result.returncode != 0 and "is not a demo's home" in result.stderr, result
    listed = run_cli(initialised, "agent", "list", "acme")
    assert "suspended" in listed.stdout, listed.stdout


def test_policy_test_against_a_workspace_uses_its_agents_and_name(
    initialised: Path, tmp_path: Path
) -> None:
    policies = tmp_path / "ws-policies"
    policies.mkdir()
    (policies / "p.cedar").write_text(
        '@id("in-acme") permit (principal in Workspace::"acme", action == Action::"read_file", resource);\n'
    )
    (policies / "tests.yaml").write_text(
        "tests:\n"
        "  - {name: acme agents read, agent: planner, tool: read_file, args: {path: /x},"
        " expect: allow, reasons: [in-acme]}\n"
    )
    result = run_cli(initialised, "policy", "test", str(policies), "--workspace", "acme")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
