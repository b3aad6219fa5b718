"""Change notifications between replicas on PostgreSQL: NOTIFY when writing, LISTEN in one thread.

Each process caches what every decision reads (workspace views, revocations) and asks the store
whether it changed at most every 0.25 s. On PostgreSQL a write that other processes cache also
runs `pg_notify('tether', '<kind>:<detail>')` in its own transaction (`notify`), so the message
goes out only if, and when, the change commits. Each store has one `Listener`: one dedicated
connection in autocommit that runs `LISTEN tether`, read by a daemon thread that hands every
message to the subscribers of its kind. They only mark themselves due, and re-read the store on
their next use, so a decision never waits for, or sees part of, a change being loaded.

Notifications make a change arrive in milliseconds; polling still bounds how late it can be, at
the same interval as without them. The poll is what the kill switch's "within a second"
(DESIGN.md section 6) rests on, because a lost notification can go unnoticed: a connection that a
NAT or proxy drops silently looks alive until TCP gives up on it. Polling is cheap enough to
keep: a cache polls only when a decision uses it (an idle process sends nothing), and a poll is
one small read (the workspaces' revisions, or the revocations past a number). When the
listener's connection drops, it reconnects with backoff; on losing it and on every
(re)connection it tells every subscriber that anything may have changed (`None`), since
messages sent while nobody listened are gone. (A process forked from one whose listener runs
has no listener, and polls.)

SQLite needs none of this (its processes share one machine, and poll): there the listener never
starts and `notify` writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

CHANNEL = "tether"

# The kinds of change, and what each message's detail names.
WORKSPACE = "workspace"  # a workspace's revision was bumped (agents, catalogue, policies): its name
REVOCATION = "revocation"  # a revocation was recorded: its kind
APPROVAL = "approval"  # an approval request changed status: its id

HEARTBEAT = 5.0  # an idle listener runs `SELECT 1` this often: idle connections get dropped
RECONNECT_FIRST = 0.25  # seconds before the first reconnection attempt, doubling up to:
RECONNECT_MAX = 5.0
MAX_DETAIL = 200  # NOTIFY payloads must stay under 8000 bytes; the detail is only a hint

log = logging.getLogger("tether.store.notify")

# Called with a message's detail, or None: "anything may have changed, re-read everything".
Subscriber = Callable[[str | None], None]


def notify(db: sa.Connection, kind: str, detail: str = "") -> None:
    """Tell every listening process, once this transaction commits, that `kind` changed."""
    if db.dialect.name == "postgresql":
        payload = f"{kind}:{detail[:MAX_DETAIL]}"
        db.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


class Listener:
    """The one connection of a store that listens, and the subscribers it tells.

    It starts with the first subscriber (a store opened for one command never connects) and
    only on PostgreSQL; `close` stops it."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None  # close() -> the thread
        self._pid: int | None = None  # of the listening backend, while connected

    @property
    def connected(self) -> bool:
        """Whether notifications are being received now (its LISTEN is in force)."""
        return self._pid is not None

    @property
    def backend_pid(self) -> int | None:
        """The server process that listens for this store, while connected (for operators and
        tests: `pg_terminate_backend` on it shows what happens when the listener is lost)."""
        return self._pid

    def subscribe(self, kind: str, subscriber: Subscriber) -> None:
        """Call `subscriber` (on the listener's thread: it must be quick and must not block)
        with the detail of every `kind` message, and with None when messages may have been
        missed. Does nothing on SQLite."""
        with self._lock:
            self._subscribers.setdefault(kind, []).append(subscriber)
            if self._enabled and self._thread is None and not self._stop.is_set():
                self._wake = socket.socketpair()
                self._thread = threading.Thread(
                    target=self._run, name="tether-listener", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is None or self._wake is None:
            return
        with contextlib.suppress(OSError):
            self._wake[1].send(b"x")
        thread.join(timeout)
        if not thread.is_alive():
            for end in self._wake:
                end.close()

    # -- the listening thread ------------------------------------------------------------------

    def _run(self) -> None:
        delay = RECONNECT_FIRST
        failing = False  # warn once when the connection goes, not at every attempt after
        while not self._stop.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._pid = connection.info.backend_pid
                    if failing:
                        log.warning("the change listener is connected again")
                    delay, failing = RECONNECT_FIRST, False
                    self._dispatch_all()  # whatever was sent before LISTEN took effect
                    self._listen(connection)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "the change listener has no connection (%s); changes made by other "
                    "processes arrive by polling until it has; next attempt in %.2f s",
                    _first_line(exc),
                    delay,
                )
                failing = True
            finally:
                if self._pid is not None:
                    self._pid = None
                    if not self._stop.is_set():
                        self._dispatch_all()  # a message may have been lost with the connection
            self._stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _connect(self) -> psycopg.Connection[Any]:
        """A connection of its own, to the database the engine uses, with the same settings."""
        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        defaults: dict[str, Any] = {
            "application_name": "tether-listener",
            "connect_timeout": 5,
            # Find a dead peer within about half a minute, even with nothing to send.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        return psycopg.connect(*args, **{**defaults, **params}, autocommit=True)

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        """Hand on messages until the connection fails (raises) or the store closes."""
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(connection.fileno(), selectors.EVENT_READ, "server")
            selector.register(self._wake[0], selectors.EVENT_READ, "close")
            while not self._stop.is_set():
                ready = {key.data for key, _ in selector.select(HEARTBEAT)}
                if "close" in ready:
                    return
                if not ready:
                    connection.execute("SELECT 1")  # raises if the connection is gone
                # Raises once the server has closed the connection (it may take a second read).
                for message in connection.notifies(timeout=0):
                    kind, _, detail = message.payload.partition(":")
                    self._dispatch(kind, detail)

    def _dispatch(self, kind: str, detail: str | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(kind, ()))
        for subscriber in subscribers:
            try:
                subscriber(detail)
            except Exception:
                log.exception("a subscriber to %s changes failed", kind)

    def _dispatch_all(self) -> None:
        with self._lock:
            kinds = list(self._subscribers)
        for kind in kinds:
            self._dispatch(kind, None)


def _first_line(exc: Exception) -> str:
    """What went wrong, in one line (libpq's messages run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
