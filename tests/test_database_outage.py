"""PostgreSQL goes away under `tether serve`, and comes back. On a cluster this test makes
itself (initdb into a temporary folder, its own port: never the machine's shared server):
while the database is down every call is refused, with a reason, and none is allowed without
its record; once it is back the service decides again by itself, and every decision a client
was answered is in the log."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from served import free_port, serve, starter_home, stop
from test_server import Agent, Server

from tether.store import Store

BIN = next(Path("/usr/lib/postgresql").glob("*/bin"), Path("/nonexistent"))
pytestmark = pytest.mark.sqlite  # runs once: it brings its own PostgreSQL


class Cluster:
    """A PostgreSQL cluster of the test's own, run as the postgres user (initdb refuses root)."""

    def __init__(self) -> None:
        # Not under pytest's own folder: the postgres user cannot enter root's (mode 0700).
        self.folder, self.port = Path(tempfile.mkdtemp(prefix="tether-pg-")), free_port()
        folder = self.folder
        shutil.chown(folder, "postgres", "postgres")
        self._as_postgres(
            BIN / "initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres"
        )

    def _as_postgres(self, *command: str | Path) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            BIN / "pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-w",
            "-l", str(self.folder / "log"), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """As a crash or an outage would: no clean shutdown of the clients' connections."""
        self._as_postgres(
            BIN / "pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop"
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0 or not (BIN / "initdb").exists():
        pytest.fail("this test needs root (to run initdb as postgres) and PostgreSQL's binaries")
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already down
            made.stop()
        shutil.rmtree(made.folder, ignore_errors=True)


def test_an_outage_is_refused_with_a_reason_and_the_service_recovers_by_itself(
    cluster: Cluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    key, grant = starter_home(home, cluster.url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = serve(home, port, "--db", cluster.url)
    try:
        agent = Agent(Server(url, home, "", "", "", "", key, grant))
        assert agent.start().status_code == 200
        allowed: list[str] = []

        def call(i: int) -> httpx.Response:
            response = agent.authorize("read_file", {"path": f"/repo/{i}.py"})
            if response.status_code == 200 and response.json()["effect"] == "allow":
                allowed.append(response.json()["decision_id"])
            return response

        assert call(0).json()["effect"] == "allow"
        cluster.stop()
        during = [call(i) for i in range(1, 6)]
        for response in during:  # refused, and said why: a deny, or the service unavailable
            assert response.status_code in (200, 503), response.text
            assert "Traceback" not in response.text
            if response.status_code == 200:
                decision = response.json()
                assert decision["effect"] == "deny", decision
                assert decision["reasons"][0]["text"]
            else:
                assert response.json()["detail"]
        assert len(allowed) == 1
        cluster.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # back by itself: nobody restarts tether serve
            response = call(100 + len(allowed))
            if response.status_code == 200 and response.json()["effect"] == "allow":
                break
            time.sleep(0.5)
        assert len(allowed) == 2, "the service did not decide again once the database was back"
    finally:
        stop(child)
    store = Store.at_home(home, cluster.url)
    try:
        assert [d for d in allowed if store.decision(d) is None] == []
    finally:
        store.close()
