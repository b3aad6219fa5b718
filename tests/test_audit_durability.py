"""The durability levels of the decision log (DESIGN.md section 6, "Durability is explicit"):
group commit, the fsync barrier, the bounded async window, and failing closed at each.
Killing a real process at each level is in test_processes.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tether import Guard
from tether.audit import AuditLog, verify
from tether.audit.checkpoints import OwnChains, _put_own_heads
from tether.audit.log import DURABILITY_ENV, durability_from_env
from tether.audit.writers import Background, GroupCommit, LogUnavailable
from tether.errors import InvalidInput
from tether.model import DecisionRecord, Durability, Effect, Stage, new_id
from tether.store import DB_FILE, Store
from tether.store.audit import LOGS
from tether.store.store import WAL_SIZE_LIMIT


def decision(i: int) -> DecisionRecord:
    return DecisionRecord(
        id=new_id("dec_"),
        ts=time.time(),
        tenant="default",
        workspace="acme",
        agent="coder",
        user="alice",
        task_id="task_x",
        tool="read_file",
        args_digest="0" * 64,
        args=f'{{"i":{i}}}',
        effect=Effect.ALLOW,
        stage=Stage.POLICY,
        reasons="[]",
        policy_version=None,
        context=None,
        shadow=None,
    )


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    Guard.embedded(home=home).close()  # schema and keys
    store = Store.at_home(home)
    yield store
    store.close()


def open_log(store: Store, durability: Durability) -> tuple[AuditLog, Guard]:
    guard = Guard(store)
    return AuditLog(store, guard.credentials.keyring, durability=durability), guard


def stored_ids(store: Store) -> set[str]:
    return {r.id for r in store.decisions(limit=None)}


def test_concurrent_appenders_share_commits_and_every_record_is_in_one_chain(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, guard = open_log(store, Durability.COMMIT)
    commits: list[int] = []
    real_insert = store.audit.insert

    def slow_insert(tx: Any, batch: Any) -> None:  # a slow disk: appenders arrive meanwhile
        time.sleep(0.002)
        real_insert(tx, batch)
        commits.append(len(batch))

    monkeypatch.setattr(store.audit, "insert", slow_insert)
    records = [[decision(i) for i in range(50)] for _ in range(8)]
    threads = [threading.Thread(target=lambda rs=rs: [log.append(r) for r in rs]) for rs in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sum(commits) == 400 and len(commits) < 400  # some commits carried several records
    assert stored_ids(store) == {r.id for rs in records for r in rs}
    report = verify(store, guard.credentials.keyring)
    assert report.intact, report.problems


def test_a_failed_commit_fails_every_record_in_it_and_leaves_no_hole(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log, guard = open_log(store, Durability.COMMIT)
    log.append(decision(0))
    real_insert = store.audit.insert

    def full_disk(tx: Any, batch: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(store.audit, "insert", full_disk)
    with pytest.raises(LogUnavailable, match=r"^OSError \(the details are in Tether's log\)$"):
        log.append(decision(1))
    assert "No space left on device" in caplog.text  # the operator's log has it all
    monkeypatch.setattr(store.audit, "insert", real_insert)
    log.append(decision(2))  # links to record 0: the failed one never existed
    log.close()
    assert [r.args for r in store.decisions(limit=None)] == ['{"i":2}', '{"i":0}']
    assert verify(store, guard.credentials.keyring).intact


def test_fsync_returns_only_after_the_log_file_was_synced(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    real_transaction, real_sync = store.writes.transaction, store.audit.sync

    @contextmanager
    def transaction() -> Iterator[Any]:
        with real_transaction() as tx:
            yield tx
        steps.append("commit")

    log, _ = open_log(store, Durability.FSYNC)
    monkeypatch.setattr(store.writes, "transaction", transaction)
    monkeypatch.setattr(store.audit, "sync", lambda: (real_sync(), steps.append("fsync")))
    log.append(decision(0))
    steps.append("answered")
    assert steps == ["commit", "fsync", "answered"]
    log.close()  # (its last checkpoint is one more commit)


def test_fsync_on_a_real_store_keeps_every_record(store: Store) -> None:
    log, guard = open_log(store, Durability.FSYNC)
    records = [decision(i) for i in range(20)]
    for r in records:
        log.append(r)
    assert {r.id for r in records} <= stored_ids(store)  # each was stored before it returned
    log.close()
    assert verify(store, guard.credentials.keyring).intact


def test_async_answers_first_and_commits_within_its_window(store: Store) -> None:
    log, guard = open_log(store, Durability.ASYNC)
    records = [decision(i) for i in range(30)]
    for r in records:
        log.append(r)
    deadline = time.monotonic() + 5
    while stored_ids(store) != {r.id for r in records} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stored_ids(store) == {r.id for r in records}  # without closing: the window passed
    log.close()
    assert verify(store, guard.credentials.keyring).intact


def test_async_holds_at_most_its_bound_and_refuses_while_the_store_fails() -> None:
    release = threading.Event()
    committed: list[int] = []
    failing = {"on": True}

    def commit(batch: list[int]) -> None:
        release.wait(5)
        if failing["on"]:
            raise OSError("disk gone")
        committed.extend(batch)

    writer: Background[int] = Background(commit, max_pending=4, interval=0.01)
    for i in range(4):
        writer.submit(i)
    refused: list[str] = []

    def fifth() -> None:
        try:
            writer.submit(4)
        except LogUnavailable as exc:
            refused.append(str(exc))

    blocked = threading.Thread(target=fifth)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # a fifth waits: never more than the bound is at risk
    release.set()  # the commit fails now: the waiting appender is refused, not queued
    blocked.join(5)
    assert refused == [
        "the audit log is not being written: OSError (the details are in Tether's log)"
    ]
    with pytest.raises(LogUnavailable, match="not being written: OSError"):
        writer.submit(5)
    failing["on"] = False  # the store recovers: what waited is written, appends go on
    deadline = time.monotonic() + 5
    while committed != [0, 1, 2, 3] and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.submit(6)
    writer.close()
    assert committed == [0, 1, 2, 3, 6]


def test_group_commit_reports_a_failure_to_each_waiter() -> None:
    gate = threading.Event()

    def commit(batch: list[int]) -> list[None]:
        gate.wait(5)
        raise RuntimeError("database is locked")

    group: GroupCommit[int, None] = GroupCommit(commit)
    errors: list[str] = []

    def submit(i: int) -> None:
        try:
            group.submit(i)
        except LogUnavailable as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert errors == ["RuntimeError (the details are in Tether's log)"] * 5


def test_the_level_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DURABILITY_ENV, raising=False)
    assert durability_from_env() is Durability.COMMIT
    monkeypatch.setenv(DURABILITY_ENV, "fsync")
    assert durability_from_env() is Durability.FSYNC
    monkeypatch.setenv(DURABILITY_ENV, "sometimes")
    with pytest.raises(InvalidInput, match="use one of commit, fsync, async"):
        durability_from_env()


def test_an_interrupted_leader_fails_every_record_it_was_committing() -> None:
    """A KeyboardInterrupt in the thread committing a batch: the other records of that batch
    were not committed, so their appends must fail, not return as if they had been."""
    gate, first_started = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def commit(batch: list[int]) -> list[None]:
        calls.append(batch)
        if len(calls) == 1:  # holds the first batch until the others are waiting
            first_started.set()
            gate.wait(5)
            return [None] * len(batch)
        raise KeyboardInterrupt  # the second batch: both waiters in it

    group: GroupCommit[int, None] = GroupCommit(commit)
    outcomes: dict[int, str] = {}

    def submit(i: int) -> None:
        try:
            group.submit(i)
            outcomes[i] = "returned"
        except LogUnavailable as exc:
            outcomes[i] = str(exc)
        except KeyboardInterrupt:
            outcomes[i] = "interrupted while leading"

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    first_started.wait(5)
    waiting = [threading.Thread(target=submit, args=(i,)) for i in (1, 2)]
    for thread in waiting:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in (first, *waiting):
        thread.join(5)
    assert calls[1] == [1, 2]
    assert outcomes[0] == "returned"
    assert sorted([outcomes[1], outcomes[2]]) == ["interrupted", "interrupted while leading"]


def test_a_batch_stored_despite_an_error_moves_the_chain_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored, then interrupted before the head moved: the next record must not take the same
    place (which would fork the chain)."""
    log, guard = open_log(store, Durability.COMMIT)
    real_transaction = store.writes.transaction

    @contextmanager
    def stored_then_failed() -> Iterator[Any]:
        with real_transaction() as tx:
            yield tx
        raise OSError("connection lost after the commit")

    monkeypatch.setattr(store.writes, "transaction", stored_then_failed)
    with pytest.raises(LogUnavailable):
        log.append(decision(0))
    monkeypatch.setattr(store.writes, "transaction", real_transaction)
    log.append(decision(1))
    log.close()
    assert [r.chain_seq for r in store.decisions(limit=None)] == [2, 1]
    assert verify(store, guard.credentials.keyring).intact


@pytest.mark.sqlite
def test_sustained_appends_keep_the_write_ahead_log_bounded(store: Store, home: Path) -> None:
    """The checkpoint thread must copy the log to its end now and then, or no writer ever
    starts it afresh: it grew by about 11 KB a record, without bound (330 MB here)."""
    log, guard = open_log(store, Durability.COMMIT)
    wal = home / (DB_FILE + "-wal")
    largest = 0
    for i in range(30_000):
        log.append(decision(i))
        if i % 1000 == 0:
            largest = max(largest, wal.stat().st_size)
    log.close()
    assert largest <= WAL_SIZE_LIMIT + 16 * 1024 * 1024, largest
    assert verify(store, guard.credentials.keyring).intact


def test_at_the_async_level_a_task_takes_in_an_output_before_its_record_is_committed(
    home: Path,
) -> None:
    """An embedded task reports with the Decision its Guard made, not its record read back:
    the record of an `async` decision may not be committed when the tool's output comes (the
    peers benchmark met this: the report was refused as another task's)."""
    with Guard.embedded(home=home, durability=Durability.ASYNC) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "ops", kind="ops", owner="alice@acme.com")
        guard.register_tool("acme", "read_secret", effects=["secret_access"], labels=["secret"])
        guard.activate_policies("acme", {"p.cedar": "permit (principal, action, resource);"})
        guard.add_user("acme", "alice")
        guard.grant("acme", user="alice", agent="ops", tools=["read_secret"])
        with guard.task(
            workspace="acme", agent="ops", user="alice", request="rotate", tools=["read_secret"]
        ) as task:
            for _ in range(20):  # one would do, when the log's window has not yet passed
                decision = task.authorize("read_secret", {})
                assert decision.effect is Effect.ALLOW
                task.report(decision, "the key")
            assert "secret" in task.state.labels
            other = guard.task(
                workspace="acme", agent="ops", user="alice", request="x", tools=["read_secret"]
            )
            with pytest.raises(InvalidInput, match="another task"):
                other.report(decision, "the key")


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_writer_signs_the_head_it_committed_not_the_one_the_store_gives_back(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest records of a live writer deleted in the database (on either backend): its
    closing checkpoint states its own head, logs that the store lost records, and verify finds
    the chain short of that head instead of calling the log intact."""
    log, guard = open_log(store, Durability.COMMIT)
    for i in range(20):
        log.append(decision(i))
    decisions = LOGS["decisions"]
    with store.engine.begin() as db:
        db.execute(
            sa.delete(decisions).where(
                (decisions.c.chain == log.chain.id) & (decisions.c.chain_seq > 12)
            )
        )
    with caplog.at_level(logging.ERROR, logger="tether.audit"):
        log.close()
    problems = verify(store, guard.credentials.keyring).problems
    assert any(f"{log.chain.id} reached #20, now it ends at #12: truncated" in p for p in problems)
    assert any(log.chain.id in e and "short of #20" in e for e in _errors(caplog))


def test_checkpoints_written_while_batches_commit_sign_only_committed_heads(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit, two writers, checkpoints on each writer's thread every few records while
    threads append, and what a checkpoint would state read at the worst moment, while a batch
    is stored but not committed: a head counts once its batch has committed, so the writer's
    head then is the one before the batch, as the store's is (no error); and the log verifies."""
    monkeypatch.setattr("tether.audit.checkpoints.EVERY_RECORDS", 5)
    first, guard = open_log(store, Durability.COMMIT)
    second = AuditLog(store, guard.credentials.keyring)  # another writer, as another process
    own = OwnChains(first.heads)
    stated: list[tuple[int, int]] = []  # (the head a checkpoint states, the batch's first place)
    real_insert = store.audit.insert

    def insert(tx: Any, batch: Any) -> None:
        real_insert(tx, batch)  # in its transaction, not yet committed
        if batch and batch[0][0].chain == first.chain.id:
            read, _ = store.audit.heads(after={})
            _put_own_heads(store, own, first.heads(), read)
            stated.append((read.get(first.chain.id, (0, ""))[0], batch[0][0].chain_seq))

    monkeypatch.setattr(store.audit, "insert", insert)
    with caplog.at_level(logging.ERROR, logger="tether.audit"):
        threads = [
            threading.Thread(target=lambda log=log: [log.append(decision(i)) for i in range(40)])
            for log in (first, second, first, second, first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first.close()
        second.close()
    assert _errors(caplog) == []
    assert first.chain.seq == second.chain.seq == 120
    assert stated and all(head == at - 1 for head, at in stated), stated
    report = verify(store, guard.credentials.keyring)
    assert report.intact, report.problems
