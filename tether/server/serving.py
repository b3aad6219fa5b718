"""Running the service: one process, or several workers on one port, each a full replica.

The server is granian (HTTP in Rust, the application on each worker's event loop): measured
beside uvicorn in benchmarks/http_api.py, it decided 2,236-2,315 calls a second where uvicorn
decided 1,873-2,413, with a lower p99. It starts a worker by importing an application factory,
so what a worker needs to build its Guard (home, database, public URL, durability, limits)
travels in one environment variable.
Every worker keeps task state in the store (`shared_tasks`), since any of them may get any call
of a task; and reads the same store, so a change made through one reaches the others as it
reaches other replicas (docs/deployment.md).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import msgspec
from starlette.applications import Starlette

from tether.credentials import Settings
from tether.model import Durability
from tether.pdp import ProofRule
from tether.sdk import Guard
from tether.server.app import create_app
from tether.server.limits import RateLimits
from tether.server.metrics import SHARED_DIR_ENV
from tether.store import Store

CONFIG_ENV = "TETHER_SERVE_CONFIG"
STOP_SECONDS = 5


class Serving(msgspec.Struct, frozen=True):
    home: str
    public_url: str
    db: str | None = None  # a database URL instead of the home's store
    durability: Durability | None = None
    rate: float = 100.0
    burst: float = 200.0


def build(config: Serving, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The application of one worker, with a Guard of its own on the shared store (closed when
    the application stops; `app.state.guard`)."""
    store = _store(config)
    public = config.public_url.rstrip("/")
    guard = Guard(
        store,
        clock=clock,
        credential_settings=Settings(token_url=f"{public}/v1/token"),
        proofs=ProofRule(htm="POST", htu=f"{public}/v1/authorize", required=True),
        durability=config.durability,
        shared_tasks=True,
    )
    limits = RateLimits(rate=config.rate, burst=config.burst)
    app = create_app(guard, public_url=public, limits=limits, close_guard=True)
    app.state.guard = guard
    return app


def _store(config: Serving) -> Store:
    return Store.at_home(config.home, config.db)


def from_environment() -> Starlette:
    """The server's factory for each worker.

    What the worker has made by now (its modules, the policies, the app) lives as long as the
    worker: frozen out of the collector's sight, so that a full collection scans only what
    calls leave behind. Without it, full collections of this heap paused a worker for about
    100 ms every few seconds under load (seen with gc.callbacks), the p99 of every call due
    meanwhile."""
    app = build(msgspec.json.decode(os.environ[CONFIG_ENV], type=Serving))
    gc.collect()
    gc.freeze()
    return app


def run(config: Serving, *, host: str, port: int, workers: int = 1) -> None:
    """Serve until interrupted."""
    from granian import Granian  # noqa: PLC0415 - only serving needs the server
    from granian.constants import Interfaces  # noqa: PLC0415

    _store(config).close()  # made and migrated once, before the workers race to
    os.environ[CONFIG_ENV] = msgspec.json.encode(config).decode()
    made = None
    if workers > 1 and not os.environ.get(SHARED_DIR_ENV):  # workers' metrics, added up
        made = os.environ[SHARED_DIR_ENV] = tempfile.mkdtemp(prefix="tether-metrics-")
    try:
        Granian(
            f"{__name__}:from_environment",
            factory=True,
            address=host,
            port=port,
            workers=workers,
            interface=Interfaces.ASGI,
            log_enabled=False,  # Tether logs what it decides; the server's own lines are noise
            # A worker that has not stopped this long after a stop signal is killed: one
            # still starting when the signal came could otherwise hold the stop up for ever
            # (seen: 1 in 4 runs of test_replicas on PostgreSQL).
            workers_kill_timeout=STOP_SECONDS,
        ).serve()
    finally:
        if made is not None:  # this run's own: its counts died with its workers
            shutil.rmtree(made, ignore_errors=True)
