"""A soak: `tether serve` (two workers, SQLite, `commit` durability) under a moderate, steady load
of mixed calls for ten minutes (TETHER_SOAK_SECONDS changes it, for a try on a laptop; CI runs
the ten). Every call is answered as the starter's policies say, none is an error, the
service's memory levels off instead of growing with the calls, and afterwards every decision
answered is in the log and the log verifies.

Agents call as agents do: a task token by exchange, a DPoP proof signed per call, the
allowed read's result reported back, the task ended after a few dozen calls and a new one
started. An auditor reads the decision log and the metrics meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from served import free_port, serve, serve_log, starter_home
from served import stop as stop_serving
from test_cli import run_cli
from test_server import Agent, Server

from tether.server import admin_tokens
from tether.store import DB_FILE, Store

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]  # the service on its home's SQLite file
SECONDS = float(os.environ.get("TETHER_SOAK_SECONDS", "600"))
RATE = 100.0  # calls a second over all callers: moderate (the knee: docs/evidence/load.md)
CALLERS = 4
CALLS_PER_TASK = 40
SAMPLE_EVERY = 2.0  # seconds between readings of the service's memory
# (tool, arguments, the starter's answer): an allowed read, a traversal, mail in and out
CALLS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("read_file", {"path": "/repo/src/app.py"}, "allow"),
    ("read_file", {"path": "/repo/../etc/passwd"}, "deny"),
    ("send_email", {"to": "team@acme.com", "subject": "status", "body": "green"}, "allow"),
    ("send_email", {"to": "eve@acme.com.evil.io", "subject": "status", "body": "x"}, "deny"),
)


def resident_mib(group: int) -> float:
    """The summed resident set of process group `group` (the server and its workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                total += int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # not a process, or one that ended meanwhile
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_ten_minutes_of_moderate_load_no_error_and_memory_levels_off(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key, grant = starter_home(home)
    with closing(Store.at_home(home)) as store:
        auditor, _ = admin_tokens.issue(
            store, name="audra", roles={"*": ["auditor"]}, lifetime=SECONDS + 600,
            now=time.time(),
        )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(url, home, "", "", "", "", key, grant)
    child = serve(home, port, "--workers", "2", "--durability", "commit",
                  "--rate", "100000", "--burst", "100000")  # fmt: skip
    errors: list[str] = []
    answered: list[str] = []
    effects: Counter[str] = Counter()
    memory: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()
    started = time.monotonic()

    def fail(what: str) -> None:
        with lock:
            errors.append(what)

    def caller(n: int) -> None:
        every = CALLERS / RATE
        due = time.monotonic() + n * every / CALLERS
        agent = Agent(server)
        calls = CALLS_PER_TASK  # start a task first
        while not stop.is_set():
            due += every
            time.sleep(max(0.0, due - time.monotonic()))
            doing = "ending a task"
            try:
                if calls == CALLS_PER_TASK:
                    if agent.task_id:
                        ended = agent.post(f"/v1/tasks/{agent.task_id}/end", None)
                        if ended.status_code != 200:
                            fail(f"a task not ended: {ended.status_code} {ended.text[:200]}")
                    doing = "starting a task"
                    if (started_task := agent.start()).status_code != 200:
                        fail(f"no task: {started_task.status_code} {started_task.text[:200]}")
                        continue
                    calls = 0
                tool, args, expected = CALLS[calls % len(CALLS)]
                calls += 1
                doing = f"{tool} {args}"
                response = agent.authorize(tool, args)
                if response.status_code != 200 or response.json()["effect"] != expected:
                    fail(f"{doing}: {response.status_code} {response.text[:200]}")
                    continue
                decision = response.json()["decision_id"]
                with lock:
                    answered.append(decision)
                    effects[expected] += 1
                if tool == "read_file" and expected == "allow":
                    doing = "reporting"
                    report = agent.post(f"/v1/tasks/{agent.task_id}/report",
                                        {"decision_id": decision, "output": "print('hi')"})  # fmt: skip
                    if report.status_code != 200:
                        fail(f"report: {report.status_code} {report.text[:200]}; "
                             f"{second_look(agent, decision)}")  # fmt: skip
            except Exception as error:
                fail(f"{doing}: {error!r}")

    def second_look(agent: Agent, decision: str) -> str:
        """What a refused report finds a moment later: the record as this test reads it from
        the store itself, and the same report sent again (a record that shows up late, or
        not at all, tells a read that missed a commit from one lost)."""
        time.sleep(0.5)
        with closing(Store.at_home(home)) as store:
            record = store.decision(decision)
        again = agent.post(f"/v1/tasks/{agent.task_id}/report",
                           {"decision_id": decision, "output": "print('hi')"})  # fmt: skip
        return f"then the store has it: {record is not None}, sent again: {again.status_code}"

    def reader() -> None:
        with httpx.Client(base_url=url, timeout=10,
                          headers={"Authorization": f"Bearer {auditor}"}) as http:  # fmt: skip
            while not stop.wait(SAMPLE_EVERY):
                memory.append((time.monotonic() - started, resident_mib(child.pid)))
                try:
                    for path in ("/v1/workspaces/acme/decisions?limit=50", "/metrics"):
                        if (response := http.get(path)).status_code != 200:
                            fail(f"GET {path}: {response.status_code} {response.text[:200]}")
                except Exception as error:
                    fail(f"auditor: {error!r}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    threads.append(threading.Thread(target=reader))
    try:
        for thread in threads:
            thread.start()
        stop.wait(SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        stop_serving(child)

    print("memory (s, MiB):", [(round(t), round(m)) for t, m in memory])  # shown with -s
    with closing(Store.at_home(home)) as store:
        missing = [d for d in answered if store.decision(d) is None]
    with closing(sqlite3.connect(home / DB_FILE)) as database:  # not corrupted on the way
        integrity = database.execute("PRAGMA integrity_check").fetchall()
    logged = serve_log(home, port).read_text()[-1500:]
    after = (f"{len(missing)} answered decisions not in the log; integrity: {integrity[:5]}; "
             f"the service's log ends: {logged}")  # fmt: skip
    assert errors == [], f"{len(errors)} errors, the first: {errors[:5]}; {after}"
    assert missing == [] and integrity == [("ok",)], after
    # the load was what it says: most of the calls due were made and answered, half allowed
    assert len(answered) >= 0.9 * RATE * SECONDS, f"only {len(answered)} calls answered"
    assert abs(effects["allow"] - effects["deny"]) <= CALLERS  # each stopped mid-task
    assert_memory_levels_off(memory)
    verified = run_cli(home, "audit", "verify", timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def assert_memory_levels_off(memory: list[tuple[float, float]]) -> None:
    """The service's memory in the last fifth of the run is at most a little above what it was
    in the second fifth (the first is its warming up: caches filling, the replay window of DPoP
    proofs filling). A leak of a kilobyte a call would grow it by ~35 MiB over the 36,000 calls
    between the two, twice the allowance. (A run here: 421 MiB at most in the second fifth,
    426 in the last.)"""
    fifth = SECONDS / 5
    early = [m for t, m in memory if fifth <= t < 2 * fifth]
    late = [m for t, m in memory if t >= 4 * fifth]
    assert early and late, f"too few memory readings: {memory}"
    allowance = 16.0  # MiB: allocators keep some of what is freed; caches settle
    assert max(late) <= max(early) + allowance, (
        f"memory grew from {max(early):.0f} MiB to {max(late):.0f} MiB: {memory}"
    )
