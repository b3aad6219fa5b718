"""A decision's writes in one transaction (tether/store/writes.py): its proof's one-time id and
its task's event are claims that either all hold, with the record, or leave nothing behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_audit_durability import decision

from tether import Guard
from tether.audit import AuditLog, verify
from tether.model import Durability
from tether.store import Store
from tether.store.writes import PURGE_EVERY, Claims, Refusal, Transaction


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    store = Store.at_home(home)
    yield store
    store.close()


def events(store: Store, task_id: str) -> list[int]:
    return [seq for seq, _ in store.task_events.after(task_id, 0)]


def test_a_lost_claim_leaves_nothing_of_its_call(store: Store) -> None:
    writes = store.writes
    assert writes.claim(Claims(100.0, once=(("proof-1", 200.0),), event=("t", 1, b"a"))) is None
    # The proof again, with the task's next event: refused, and the event is not written.
    replayed = Claims(100.0, once=(("proof-1", 200.0),), event=("t", 2, b"b"))
    assert writes.claim(replayed) is Refusal.REPLAYED
    assert events(store, "t") == [1]
    # A new proof with a taken event number: refused, and the proof stays unused.
    moved = Claims(100.0, once=(("proof-2", 200.0),), event=("t", 1, b"c"))
    assert writes.claim(moved) is Refusal.TASK_MOVED
    assert writes.claim(Claims(100.0, once=(("proof-2", 200.0),), event=("t", 2, b"c"))) is None
    assert events(store, "t") == [1, 2]


def test_a_one_time_id_is_taken_again_only_once_expired(store: Store) -> None:
    writes = store.writes
    assert writes.claim(Claims(100.0, once=(("k", 200.0),))) is None
    assert writes.claim(Claims(199.0, once=(("k", 300.0),))) is Refusal.REPLAYED
    assert writes.claim(Claims(200.0, once=(("k", 300.0),))) is None  # expired: not a replay
    assert writes.claim(Claims(250.0, once=(("k", 400.0),))) is Refusal.REPLAYED


def test_expired_one_time_ids_are_purged_as_claims_go_in(store: Store) -> None:
    for i in range(PURGE_EVERY):
        assert store.writes.claim(Claims(float(i), once=((f"k{i}", float(i) + 10),))) is None
    with store.engine.connect() as db:
        left = db.exec_driver_sql("SELECT count(*) FROM replay_cache").scalar()
    assert left is not None and left < 20  # those unexpired at the last claim's time


def test_a_record_is_stored_with_its_claims_or_not_at_all(store: Store, home: Path) -> None:
    guard = Guard(store)
    log = AuditLog(store, guard.credentials.keyring, durability=Durability.COMMIT)
    kept, lost, plain = decision(0), decision(1), decision(2)
    assert log.append(kept, claims=Claims(1.0, once=(("p", 9e9),), event=("t", 1, b"x"))) is None
    refused = log.append(lost, claims=Claims(1.0, once=(("q", 9e9),), event=("t", 1, b"y")))
    assert refused is Refusal.TASK_MOVED
    assert log.append(plain) is None
    log.close()
    stored = [r.id for r in store.decisions(limit=None)]
    assert stored == [plain.id, kept.id]  # the refused record took no place in the chain
    assert verify(store, guard.credentials.keyring).intact
    assert store.writes.claim(Claims(1.0, once=(("q", 9e9),))) is None  # q was never used
    guard.close()


def test_concurrent_claims_of_one_proof_let_exactly_one_through(store: Store, home: Path) -> None:
    """Eight threads (and a second process's store) race with one proof: one record goes in."""
    guard = Guard(store)
    other = Store.at_home(home)
    logs = [AuditLog(s, guard.credentials.keyring) for s in (store, other)]
    results: list[Refusal | None] = []
    start = threading.Barrier(8)

    def race(i: int) -> None:
        start.wait()
        claims = Claims(1.0, once=(("the-proof", 9e9),))
        results.append(logs[i % 2].append(decision(i), claims=claims))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    other.close()
    assert results.count(None) == 1 and results.count(Refusal.REPLAYED) == 7
    assert len(store.decisions(limit=None)) == 1
    guard.close()


def test_a_batch_claims_its_tasks_events_in_one_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas claiming events of the same tasks must queue in one order, not in a
    circle (PostgreSQL ends such a pair as a deadlock): a batch claims by task and number,
    whatever order its calls came in."""
    guard = Guard(store)
    log = AuditLog(store, guard.credentials.keyring)
    claimed: list[tuple[str, int]] = []
    real = Transaction.claim

    def spy(tx: Transaction, claims: Claims) -> Refusal | None:
        assert claims.event is not None
        claimed.append((claims.event[0], claims.event[1]))
        return real(tx, claims)

    monkeypatch.setattr(Transaction, "claim", spy)

    async def together() -> list[Refusal | None]:
        calls = [("task_b", 1), ("task_a", 2), ("task_a", 1)]
        return await asyncio.gather(
            *(
                log.append_async(decision(i), claims=Claims(1.0, event=(task, seq, b"e")))
                for i, (task, seq) in enumerate(calls)
            )
        )

    assert asyncio.run(together()) == [None, None, None]
    assert claimed == [("task_a", 1), ("task_a", 2), ("task_b", 1)]
    log.close()
    assert verify(store, guard.credentials.keyring).intact
    guard.close()
