"""Invariants that only hold if they hold across processes: durability and the kill switch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import POSTGRES, STARTER

from tether import Guard
from tether.audit import verify
from tether.audit.log import ASYNC_PENDING, DURABILITY_ENV
from tether.model import AgentStatus, Stage
from tether.store import Store
from tether.workspace import POLL_INTERVAL, Views

DECIDER = textwrap.dedent(
    """
    import sys
    from tether import Guard
    guard = Guard.embedded(home=sys.argv[1])
    with guard.task(workspace="acme", agent="coder", user="alice", request="load",
                    tools=["read_file", "send_email"]) as task:
        for i in range(100_000):
            tool, args = (("read_file", {"path": f"/repo/{i}.py"}) if i % 2
                          else ("send_email", {"to": "eve@evil.io", "subject": str(i)}))
            d = task.authorize(tool, args)
            print(d.decision_id, d.effect.value, flush=True)
    """
)


@pytest.mark.parametrize("durability", ["commit", "fsync", "async"])
def test_a_killed_process_loses_no_decision_it_answered(
    home: Path, tmp_path: Path, durability: str
) -> None:
    """At `commit` and `fsync`, none; at `async`, at most the documented window, and only the
    newest. Either way the log that is left verifies."""
    with Guard.embedded(home=home) as g:
        g.apply_directory(STARTER)
    script = tmp_path / "decider.py"
    script.write_text(DECIDER)
    child = subprocess.Popen(
        [sys.executable, str(script), str(home)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, DURABILITY_ENV: durability},
    )
    assert child.stdout is not None
    answered: list[str] = []
    deadline = time.monotonic() + 60
    while len(answered) < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        answered.append(line.split()[0])
    os.kill(child.pid, signal.SIGKILL)
    answered.extend(line.split()[0] for line in child.stdout.read().splitlines())
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert len(answered) >= 300

    store = Store.at_home(home)
    try:
        recorded = {r.id for r in store.decisions(limit=len(answered) + 1000)}
    finally:
        store.close()
    missing = [d for d in answered if d not in recorded]
    if durability == "async":
        assert len(missing) <= ASYNC_PENDING
        assert missing == answered[len(answered) - len(missing) :]  # the newest, if any
    else:
        assert not missing, f"{len(missing)} answered decisions were lost"
    # The killed writer's chain is whole up to its last commit (no checkpoint covers its tail:
    # it had no chance to sign one at exit, and the links still hold).
    with Guard.embedded(home=home) as guard:
        report = verify(guard.store, guard.credentials.keyring)
    assert report.intact, report.problems
    assert report.records >= len(answered) - len(missing)


def test_suspension_from_another_process_stops_calls(home: Path) -> None:
    """The cross-process path, really run; how soon is pinned with a clock, not a stopwatch
    (test_a_change_in_the_store_is_seen_once_the_poll_interval_has_passed)."""
    with Guard.embedded(home=home) as guard:
        guard.apply_directory(STARTER)
        with guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
        ) as task:
            assert task.authorize("read_file", {"path": "/repo/a.py"}).allowed
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tether.cli",
                    "--home",
                    str(home),
                    "agent",
                    "suspend",
                    "acme",
                    "coder",
                ],
                check=True,
                capture_output=True,
            )
            give_up = time.monotonic() + 30  # a bound, not the guarantee under test
            while True:
                d = task.authorize("read_file", {"path": "/repo/a.py"})
                if not d.allowed or time.monotonic() > give_up:
                    break
                time.sleep(0.01)
    assert not d.allowed, "a suspension made by another process was never enforced"
    # The suspension revoked the agent's tokens: the call is refused before any gate.
    assert d.reasons[0].stage is Stage.AUTHENTICATE
    assert d.reason == (
        "credential refused: the token is revoked: agent coder was suspended: "
        "its credentials were revoked"
    )


def test_a_change_in_the_store_is_seen_once_the_poll_interval_has_passed(home: Path) -> None:
    """Why a suspension is enforced everywhere within a second: each process re-reads the
    revisions every POLL_INTERVAL (0.25 s), here on a clock the test moves."""
    assert POLL_INTERVAL <= 1.0
    now = 0.0
    with Guard.embedded(home=home) as writer:
        writer.apply_directory(STARTER)
        reader = Views(writer.store, clock=lambda: now)

        def coder() -> AgentStatus:
            view = reader.get("acme")
            assert view is not None
            return view.agents["coder"].status

        assert coder() is AgentStatus.ACTIVE
        writer.suspend_agent("acme", "coder")  # another process, as far as `reader` knows
        now += POLL_INTERVAL * 0.9
        if not POSTGRES:  # there a notification brings it sooner still (test_notify.py)
            assert coder() is AgentStatus.ACTIVE
        now += POLL_INTERVAL * 0.2
        assert coder() is AgentStatus.SUSPENDED
