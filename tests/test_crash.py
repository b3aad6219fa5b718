"""SIGKILL `tether serve` (its whole process group: the server and its workers) in the middle of
a bounded load on 127.0.0.1: every decision a client was answered is in the log after the
restart, and `tether audit verify` passes. This is what `commit` durability promises."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from served import free_port, serve, starter_home
from served import stop as stop_serving
from test_cli import run_cli
from test_server import Agent, Server

from tether.store import Store

pytestmark = pytest.mark.sqlite  # the service on its home's SQLite file
CALLERS = 4
LOADED = ("--workers", "2", "--rate", "100000", "--burst", "100000")
CALLS_BEFORE_KILL = 300  # answered calls, at least, before the kill (bounded: it stops itself)


def test_every_answered_decision_survives_a_sigkill_and_the_log_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key, grant = starter_home(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(url, home, "", "", "", "", key, grant)
    child = serve(home, port, *LOADED)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def call(n: int) -> None:
        agent = Agent(server)
        if agent.start().status_code != 200:
            return
        i = 0
        while not stop.is_set() and i < 5000:
            try:
                response = agent.authorize("read_file", {"path": f"/repo/{n}/{i}.py"})
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200:
                with lock:
                    answered.append(response.json()["decision_id"])
            i += 1

    callers = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
    try:
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 60
        while len(answered) < CALLS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # mid-load: calls are in flight
        child.wait(timeout=30)
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert len(answered) >= CALLS_BEFORE_KILL
    restarted = serve(home, port, *LOADED)  # it opens the store as it was left, and answers
    stop_serving(restarted)
    store = Store.at_home(home)
    try:
        missing = [d for d in answered if store.decision(d) is None]
    finally:
        store.close()
    assert missing == [], f"{len(missing)} of {len(answered)} answered decisions were lost"
    verified = run_cli(home, "audit", "verify", timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
