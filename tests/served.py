"""`tether serve` inside the test's process: the HTTP API on a home's store (or, under
TETHER_TEST_POSTGRES, on the test's own database), served by uvicorn on 127.0.0.1 from a thread,
for remote Guards to speak to. Its Guard is made as tether/server/serving.py makes a worker's,
but on the test's clock."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from tether import Guard
from tether.credentials import Settings
from tether.pdp import ProofRule
from tether.server import admin_tokens
from tether.server.app import create_app
from tether.server.limits import RateLimits
from tether.store import Store


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


@contextmanager
def served(home: Path, *, clock: Callable[[], float] = time.time) -> Iterator[Served]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    guard = Guard(
        Store.at_home(home),
        clock=clock,
        credential_settings=Settings(token_url=f"{url}/v1/token"),
        proofs=ProofRule(htm="POST", htu=f"{url}/v1/authorize", required=True),
        shared_tasks=True,
    )
    # Tests make calls as fast as they can: the service's rate limit is tested on its own.
    app = create_app(guard, public_url=url, limits=RateLimits(rate=1e6, burst=1e6))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.01)
        token, _ = admin_tokens.issue(
            guard.store, name="alice", roles={"*": ["admin"]}, lifetime=3600, now=time.time()
        )
        yield Served(url, guard, token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listening.close()
        guard.close()
