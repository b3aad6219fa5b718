"""SQLite's write-ahead log, as the audit log's durability levels need it: synced on demand
(the `fsync` level), and checkpointed into the database on a thread of its own.

SQLite checkpoints the log inside whichever commit finds it over 1,000 pages: that commit, a
decision's, then copies the pages into the database, a few milliseconds every few hundred
decisions. A writer that appends decisions hands that work to a thread instead
(`checkpoint_in_background`), in two steps: first it copies the log beside the writers
(passively, blocking no one), then it takes the writers' turn for a moment and copies what
they appended meanwhile. Only a log copied to its end is started afresh by the next writer: a
thread that only ever copied beside a busy writer never got there, and the log grew without
bound (measured: 650 MB after 60,000 decisions, the rate falling from 16,000 a second to
10,000).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

log = logging.getLogger("tether.store")

CHECKPOINT_EVERY = 0.1  # seconds between checkpoints
READERS_WAIT = 0.02  # seconds a checkpoint waits for readers, in the writers' turn
_sync_data = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class WriteAheadLog:
    def __init__(self, database: Path) -> None:
        self._database = database
        self._fd: int | None = None  # the log file
        self._writing = -1  # the file whose lock says which process is writing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # opening and closing files, starting the thread

    def sync(self) -> None:
        """Make every commit so far, by any process, survive power loss.

        A commit is in the log, which SQLite itself syncs only before copying it into the
        database (and the database after). Syncing the log file here, outside SQLite's write
        lock, puts every commit before it on disk while other writers go on committing, so one
        sync serves every record its process's group commit gathered. (Sharing syncs across
        processes too, through a file saying when the last one started, halved their number
        but not the time: a commit writing into a page that a sync is writing out waits.)"""
        with self._lock:
            if self._fd is None:
                self._fd = _open_log(self._database)
        self._sync_file()

    def _sync_file(self) -> None:
        if self._fd is not None:
            _sync_data(self._fd)  # what SQLite itself uses: the data, and the size if it grew
            return
        database = os.open(self._database, os.O_RDONLY)  # no log: a rollback journal
        try:
            os.fsync(database)
        finally:
            os.close(database)

    def take_turn(self) -> None:
        """Taken before each write transaction (and `end_turn` after): one writer process at
        a time, woken by the kernel the moment the one before is done. Without it SQLite makes
        a writer that finds the database locked sleep and retry, a millisecond at least: with
        eight processes at `fsync` a commit took 0.73 ms on average, 0.41 ms with this lock,
        waiting included (measured)."""
        if self._writing < 0:
            self._writing = _open_beside(self._database, "-write")
        fcntl.flock(self._writing, fcntl.LOCK_EX)

    def end_turn(self) -> None:
        fcntl.flock(self._writing, fcntl.LOCK_UN)

    def checkpoint_in_background(self, writer: Any, turn: AbstractContextManager[None]) -> None:
        """From now on `writer` (a connection) never checkpoints; a thread does, finishing
        each checkpoint in the writers' `turn`."""
        with self._lock:
            if self._thread is not None:
                return
            writer.execute("PRAGMA wal_autocheckpoint=0")
            self._thread = threading.Thread(
                target=self._checkpoints, args=(turn,), name="tether-wal-checkpoints", daemon=True
            )
            self._thread.start()

    def _checkpoints(self, turn: AbstractContextManager[None]) -> None:
        # Waits at most this long for readers of older snapshots (whose pages it may not
        # overwrite yet), holding the writers' turn: the next round tries again.
        connection = sqlite3.connect(self._database, check_same_thread=False, timeout=READERS_WAIT)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the bulk
                    with turn:  # no writer appends now: this copy reaches the log's end
                        connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error:  # busy, say: the next round copies what this one did not
                    log.debug("checkpoint skipped", exc_info=True)
        finally:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for fd in (self._fd, self._writing):
                if fd is not None and fd >= 0:
                    os.close(fd)
            self._fd, self._writing = None, -1


def _open_beside(database: Path, suffix: str) -> int:
    return os.open(database.with_name(database.name + suffix), os.O_RDWR | os.O_CREAT, 0o600)


def _open_log(database: Path) -> int | None:
    """The log file, for syncing (None when there is none: not in WAL mode), and its folder
    synced once so the file itself survives power loss. The store's own connection keeps the
    log from being deleted while it is open, so the descriptor stays the live file."""
    wal = database.with_name(database.name + "-wal")
    if not wal.exists():
        return None
    folder = os.open(database.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return os.open(wal, os.O_RDONLY)


class WriteTurn:
    """The lock every transaction on the store's hot-path connection is made under: one thread
    of this process at a time and, on SQLite (`wal` given), one process at a time through the
    lock file, so a writer never meets SQLite's busy sleep (`WriteAheadLog.take_turn`). The
    replay cache, task events and the audit log all write through it."""

    def __init__(self, wal: WriteAheadLog | None) -> None:
        self._lock = threading.Lock()
        self._wal = wal

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._wal is not None:
            try:
                self._wal.take_turn()
            except BaseException:
                self._lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._wal is not None:
                self._wal.end_turn()
        finally:
            self._lock.release()
