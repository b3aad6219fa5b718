"""What only PostgreSQL can do to Tether: rows whose numbers (taken at insert) commit out of
order; replicas migrating one database at once. Runs in `make test`'s PostgreSQL pass (TETHER_TEST_POSTGRES); SQLite has one writer at a
time, so its rows always commit in number order."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from conftest import POSTGRES

from tether.credentials.revocation import Revocations, Revoked
from tether.store import Store
from tether.store import tables as t
from tether.store.store import _alembic_config, _engine, migrate

pytestmark = pytest.mark.skipif(
    not POSTGRES, reason="PostgreSQL's own behaviour (commit order, concurrent migrations)"
)


def _revocation(subject: str) -> dict[str, object]:
    return {
        "kind": Revoked.TOKEN.value,
        "workspace": "acme",
        "subject": subject,
        "at": time.time(),
        "expires_at": None,
        "reason": "revoked",
    }


def test_a_revocation_that_commits_after_a_later_one_is_still_seen(home: Path) -> None:
    store = Store.at_home(home)
    try:
        revocations = Revocations(store, skew=30.0, poll_interval=0.0)
        late = store.engine.connect()
        transaction = late.begin()
        late.execute(t.revocations.insert().values(**_revocation("tok_late")))  # number N
        with store.engine.begin() as early:  # number N + 1, committed first
            early.execute(t.revocations.insert().values(**_revocation("tok_early")))
        revocations.refresh()  # has read past N
        transaction.commit()  # N arrives now
        late.close()
        revocations.refresh()
        with store.engine.connect() as db:
            query = sa.select(t.revocations.c.subject, t.revocations.c.seq)
            numbers = {subject: seq for subject, seq in db.execute(query)}  # noqa: C416 - rows
        assert numbers["tok_late"] < numbers["tok_early"]  # the order this test is about
        tokens = revocations._entries[Revoked.TOKEN]
        assert {"tok_early", "tok_late"} <= set(tokens)
    finally:
        store.close()


def test_replicas_starting_together_migrate_one_database_once() -> None:
    url = os.environ["TETHER_DB"]  # this test's own database (conftest)
    failures: list[BaseException] = []

    def start() -> None:
        engine = _engine(url)
        try:
            migrate(engine)
        except BaseException as exc:
            failures.append(exc)
        finally:
            engine.dispose()

    replicas = [threading.Thread(target=start) for _ in range(4)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(timeout=60)
    assert not any(r.is_alive() for r in replicas), "a migration hung"
    assert failures == []
    engine = _engine(url)
    with engine.connect() as db:
        versions = db.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        head = ScriptDirectory.from_config(_alembic_config(db)).get_current_head()
        assert list(versions) == [head]
    engine.dispose()
