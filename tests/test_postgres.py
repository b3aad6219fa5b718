"""What only PostgreSQL can do to Tether: rows whose numbers (taken at insert) commit out of
order. Runs in `make test`'s PostgreSQL pass (TETHER_TEST_POSTGRES); SQLite has one writer at a
time, so its rows always commit in number order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import POSTGRES

from tether.credentials.revocation import Revocations, Revoked
from tether.store import Store
from tether.store import tables as t

pytestmark = pytest.mark.skipif(
    not POSTGRES, reason="commit order differs from row order only on PostgreSQL"
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
