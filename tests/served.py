"""`tether serve` inside the test's process: the HTTP API on a home's store (or, under
TETHER_TEST_POSTGRES, on the test's own database), served by uvicorn on 127.0.0.1 from a thread,
for remote Guards to speak to: a worker as tether/server/serving.py builds it, on the test's
clock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from joserfc.jwk import ECKey

from tether import Guard
from tether.identity import generate_key, register_key
from tether.server import admin_tokens
from tether.server.serving import Serving, build
from tether.store import Store

GRACE_SECONDS = 5  # as `tether gateway serve` gives open connections when it is stopped


@dataclass
class Served:
    url: str
    guard: Guard  # the service's own: what a test inspects on the service's side
    admin_token: str  # alice's, admin of every workspace

    def token(self, name: str, roles: dict[str, list[str]]) -> str:
        """Another admin token (bob's, say, to approve as bob)."""
        token, _ = admin_tokens.issue(
            self.guard.store, name=name, roles=roles, lifetime=3600, now=time.time()
        )
        return token


def serve_in_thread(make_app: Callable[[str], Any]) -> tuple[str, Any, Callable[[], None]]:
    """Serve the ASGI app `make_app(url)` gives, from a thread, on a free port of 127.0.0.1:
    its URL, the app, and how to stop it (its lifespan ends with it)."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    app = make_app(url)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_SECONDS
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        listening.close()
        # Stopped: a server left running would go on acting (on an upstream, on a store)
        # after its test has moved on.
        assert not thread.is_alive(), f"{url} did not stop"

    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise AssertionError(f"{url} did not start")
        time.sleep(0.01)
    return url, app, stop


@contextmanager
def served(home: Path, *, clock: Callable[[], float] = time.time) -> Iterator[Served]:
    # Tests make calls as fast as they can: the service's rate limit is tested on its own.
    url, app, stop = serve_in_thread(
        lambda url: build(Serving(home=str(home), public_url=url, rate=1e6, burst=1e6), clock=clock)
    )
    guard: Guard = app.state.guard
    try:
        token, _ = admin_tokens.issue(
            guard.store, name="alice", roles={"*": ["admin"]}, lifetime=3600, now=time.time()
        )
        yield Served(url, guard, token)
    finally:
        stop()  # its shutdown closes the Guard


# -- `tether serve` in a process of its own (crash, outage and replica tests) --------------------

STARTER = Path(__file__).resolve().parent.parent / "tether" / "starter" / "acme"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(
    home: Path, port: int, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`tether serve` in a process group of its own, answering on 127.0.0.1:`port` (`env`:
    variables beside the CLI's bare environment)."""
    from test_cli import cli_env  # noqa: PLC0415 - test_cli imports conftest, which imports this

    # Its errors go to a file: a pipe nobody reads fills up (a traceback per 5xx) and stops it.
    errors = serve_log(home, port)
    with errors.open("w") as sink:
        child = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "--home", str(home), "serve", "--port",
             str(port), *options],
            stdout=subprocess.DEVNULL, stderr=sink, text=True, env={**cli_env(), **(env or {})},
            start_new_session=True,  # its own process group: the kill reaches its workers too
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(child, signal.SIGKILL)
    pytest.fail(f"tether serve did not start: {errors.read_text()[-2000:]}")


def serve_log(home: Path, port: int) -> Path:
    """Where `serve` puts what `tether serve` on `home` and `port` writes to its stderr."""
    return home.parent / f"serve-{port}.stderr"


def stop(child: subprocess.Popen[str], how: signal.Signals = signal.SIGTERM) -> None:
    """Stop `tether serve`'s whole process group; killed if it has not stopped in 60 s."""
    if child.poll() is None:
        os.killpg(child.pid, how)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def starter_home(home: Path, db: str | None = None) -> tuple[ECKey, str]:
    """The starter workspace on `home` (or the database `db`), the coder's key registered:
    the key and alice's grant to the coder, for an agent calling over HTTP."""
    key = generate_key()
    with Guard(Store.at_home(home, db)) as guard:
        guard.apply_directory(STARTER)
        register_key(guard.store, workspace="acme", agent="coder",
                     jwk=key.as_dict(private=False), now=time.time())  # fmt: skip
        grant = next(g for g in guard.store.credentials.grants("acme") if g.agent == "coder").id
    return key, grant
