"""The store: migrations match the tables, revisions guard concurrent changes."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tether.credentials.signing_keys import load_master_key, new_master_key
from tether.errors import Conflict, InvalidInput, NotFound
from tether.model import Agent, AgentStatus, Tool, User, Workspace
from tether.store import StaleRevision, Store
from tether.store.tables import metadata


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.at_home(tmp_path)
    s.create_workspace(Workspace("acme", "default", "tether.local", time.time()))
    return s


def test_migrations_build_exactly_the_declared_tables(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


@pytest.mark.sqlite
def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_every_change_bumps_the_revision(store: Store) -> None:
    assert store.revisions() == {"acme": 0}
    with store.change("acme"):
        pass
    assert store.revisions() == {"acme": 1}


def test_a_change_from_a_stale_read_is_refused(store: Store) -> None:
    with store.change("acme", expected_revision=0):
        pass
    with pytest.raises(StaleRevision), store.change("acme", expected_revision=0):
        pass
    assert store.revisions() == {"acme": 1}


def test_a_failed_change_writes_nothing(store: Store) -> None:
    with pytest.raises(NotFound), store.change("acme") as changes:
        changes.set_agent_status("ghost", AgentStatus.SUSPENDED)
    assert store.revisions() == {"acme": 0}


def test_a_change_to_one_workspace_cannot_write_another_workspaces_rows(store: Store) -> None:
    store.create_workspace(Workspace("beta", "default", "tether.local", time.time()))
    rows = [
        lambda c: c.put_agent(Agent("beta", "a", "coder", "o", "spiffe://x/a")),
        lambda c: c.put_user(User("beta", "u")),
        lambda c: c.put_tool(Tool("beta", "t", {"type": "object"}, ("read",))),
    ]
    for write in rows:
        with (
            pytest.raises(InvalidInput, match="belongs to workspace 'beta'"),
            store.change("acme") as changes,
        ):
            write(changes)
    assert store.revisions() == {"acme": 0, "beta": 0}
    assert store.agents("beta") == []


def test_a_snapshot_sees_one_moment_even_when_a_change_commits_while_it_reads(
    store: Store,
) -> None:
    """A decision's view of a workspace is one revision's: its agents, tools and policies
    together, never the workspace row of one change with the agents of the next. (SQLite's
    driver starts no transaction for a read, and PostgreSQL's default isolation lets each
    statement see what committed before it: either way the reads below saw the agent.)"""
    changed = False

    def change_after_the_workspace_is_read(_conn: object, _cursor: object, sql: str,
                                           *_: object) -> None:  # fmt: skip
        nonlocal changed
        if not changed and "FROM workspaces" in sql:
            changed = True
            with store.change("acme") as changes:  # another connection, committed now
                changes.put_agent(Agent("acme", "late", "coder", "o", "spiffe://x/late"))

    sa.event.listen(store.engine, "after_cursor_execute", change_after_the_workspace_is_read)
    try:
        snapshot = store.snapshot("acme")
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", change_after_the_workspace_is_read)
    assert changed and snapshot is not None
    assert (snapshot.workspace.revision, snapshot.agents) == (0, [])
    assert [a.name for a in store.agents("acme")] == ["late"]  # the change did commit


def test_creations_take_turns_so_a_check_sees_a_workspace_made_meanwhile(store: Store) -> None:
    """`create_workspace`'s check is given the names as they are when it commits: a twin made
    by another connection while the first creation is between its check and its commit is
    refused (control.py refuses names that share webhook variables this way)."""
    checking, go_on = threading.Event(), threading.Event()
    refused: list[Exception] = []

    def slow_check(_names: list[str]) -> None:
        checking.set()
        assert go_on.wait(10)

    def refuse_a_twin(names: list[str]) -> None:
        if "acme-eu" in names:
            raise Conflict("acme-eu is its twin")

    def create(name: str, check: Callable[[list[str]], None]) -> None:
        try:
            store.create_workspace(Workspace(name, "default", "tether.local", 0.0), check=check)
        except Exception as error:
            refused.append(error)

    first = threading.Thread(target=create, args=("acme-eu", slow_check))
    first.start()
    assert checking.wait(10)
    second = threading.Thread(target=create, args=("acme_eu", refuse_a_twin))
    second.start()
    time.sleep(0.3)  # time for the second to reach its check, were it not made to wait
    go_on.set()
    first.join(30)
    second.join(30)
    assert [str(e) for e in refused] == ["acme-eu is its twin"]
    assert sorted(store.revisions()) == ["acme", "acme-eu"]


def test_change_to_a_missing_workspace(store: Store) -> None:
    with pytest.raises(NotFound), store.change("nowhere"):
        pass


@pytest.mark.sqlite
def test_opening_an_up_to_date_store_does_not_migrate_again(tmp_path: Path) -> None:
    Store.at_home(tmp_path).close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'tether.db'}")
    with engine.connect() as connection:
        before = connection.exec_driver_sql("select version_num from alembic_version").scalar()
    Store.at_home(tmp_path).close()
    with engine.connect() as connection:
        assert (
            connection.exec_driver_sql("select version_num from alembic_version").scalar() == before
        )


@pytest.mark.sqlite
def test_a_new_home_and_its_database_are_its_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database holds the decision records, with their arguments: under the usual umask
    (022) it was created readable by every local account, and so were its log files."""
    monkeypatch.setenv("TETHER_DB", "")  # the home's SQLite file, whatever the run is on
    old = os.umask(0o022)
    try:
        store = Store.at_home(tmp_path / "home")
        try:
            store.create_workspace(Workspace("acme", "default", "tether.local", time.time()))
            files = sorted((tmp_path / "home").iterdir())
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        finally:
            store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert {"tether.db", "tether.db-wal", "tether.db-shm"} <= modes.keys(), modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes


def test_a_master_key_other_accounts_may_read_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TETHER_MASTER_KEY", raising=False)
    monkeypatch.delenv("TETHER_MASTER_KEY_FILE", raising=False)
    home = tmp_path / "home"
    load_master_key(home)  # made for its owner: nothing to say
    assert "master key file" not in caplog.text
    (home / "master.key").chmod(0o644)
    load_master_key(home)
    assert "can be read by other accounts (mode 644)" in caplog.text


def test_a_named_master_key_file_other_accounts_may_read_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TETHER_MASTER_KEY_FILE (a mounted secret, say) is read as it is and warned of alike."""
    key = tmp_path / "mounted.key"
    key.write_text(new_master_key())
    key.chmod(0o600)
    monkeypatch.delenv("TETHER_MASTER_KEY", raising=False)
    monkeypatch.setenv("TETHER_MASTER_KEY_FILE", str(key))
    first = load_master_key(None)
    assert "master key file" not in caplog.text
    key.chmod(0o640)
    assert load_master_key(None) == first  # still read: a warning, not a refusal
    assert f"the master key file {key} can be read by other accounts (mode 640)" in caplog.text
