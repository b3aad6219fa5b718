"""The store: every durable thing Tether keeps, behind one class, on SQLite or (later) PostgreSQL.

Configuration changes go through `change(workspace)`, one transaction that also bumps the
workspace's revision (and on PostgreSQL notifies the other processes: notify.py), so no writer
can forget to tell other processes their view is stale. The
decision insert is the hot path: it runs a statement compiled once from the Core table straight
on the driver connection, since SQLAlchemy's per-execute overhead (about 120 us here) would be
larger than everything else a decision costs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tether.errors import Conflict, InvalidInput, NotFound
from tether.model import (
    Agent,
    AgentStatus,
    DecisionRecord,
    PolicyBundleRecord,
    Task,
    TaskStatus,
    Tool,
    User,
    Workspace,
)
from tether.store import tables as t
from tether.store.admin_tokens import AdminTokenRecords
from tether.store.approvals import ApprovalRecords
from tether.store.audit import AuditRecords
from tether.store.console import ConsoleRecords
from tether.store.credentials import CredentialRecords
from tether.store.isolation import one_at_a_time, one_moment
from tether.store.notify import WORKSPACE, Listener, notify
from tether.store.rows import row_to
from tether.store.tasks import TaskEvents
from tether.store.wal import WriteAheadLog, WriteTurn
from tether.store.writes import HotWrites

DB_FILE = "tether.db"
WAL_SIZE_LIMIT = 64 * 1024 * 1024
DB_ENV = "TETHER_DB"


class StaleRevision(Conflict):
    """A compare-and-set change lost a race with another change to the same workspace."""


T = TypeVar("T")
_REVISIONS = sa.select(t.workspaces.c.name, t.workspaces.c.revision)  # asked often: built once


def sqlite_url(home: str | Path) -> str:
    return f"sqlite:///{Path(home).resolve() / DB_FILE}"


def _engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        # A server that does not answer is given up on: a decision waiting for it is a deny.
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        _private_file(Path(database))
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL + synchronous=NORMAL: a commit survives the process being killed (the `commit`
        # durability level); readers never block the writer.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A log started afresh is cut back to this size (a burst may have grown it).
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cursor.close()

    return engine


def _private_file(database: Path) -> None:
    """Create the database file for its owner alone (SQLite gives its write-ahead log and
    shared-memory files the database file's mode): it holds the decision records, with their
    arguments. A file made before this keeps its mode, which is the operator's to tighten."""
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


MIGRATION_LOCK = 0x7E7E_0001  # PostgreSQL advisory lock: replicas starting at once migrate once


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the newest schema (a no-op when it already is). On PostgreSQL,
    replicas started together take turns (an advisory lock held to the end of the migration's
    transaction), so the second finds the schema new and does nothing."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        config = _alembic_config(connection)
        head = ScriptDirectory.from_config(config).get_current_head()
        if MigrationContext.configure(connection).get_current_revision() != head:
            command.upgrade(config, "head")


@dataclass(frozen=True)
class WorkspaceSnapshot:
    """Everything a decision needs from the store about one workspace, read consistently."""

    workspace: Workspace
    agents: list[Agent]
    tools: list[Tool]
    bundle: PolicyBundleRecord | None
    shadow: PolicyBundleRecord | None = None


class Store:
    def __init__(self, url: str, *, home: Path | None = None) -> None:
        self.url = url
        self.home = home  # the folder of an embedded store: where its master key is kept
        self.engine = _engine(url)
        migrate(self.engine)
        self.listener = Listener(self.engine)  # changes other processes make (notify.py)
        sqlite = self.engine.dialect.name == "sqlite"
        self._wal = WriteAheadLog(Path(str(self.engine.url.database))) if sqlite else None
        self._write_lock = WriteTurn(self._wal)
        self.writes = HotWrites(self.engine, self._write_lock)
        self.credentials = CredentialRecords(self.engine, self.writes)
        self.approvals = ApprovalRecords(self.engine)
        self.admin_tokens = AdminTokenRecords(self.engine)
        self.console = ConsoleRecords(self.engine)
        self.audit = AuditRecords(self.engine, self.writes, self._wal)
        self.task_events = TaskEvents(self.engine, self.writes)

    @classmethod
    def at_home(cls, home: str | Path, db: str | None = None) -> Store:
        """The store of a home: the database `db` names, else the one `TETHER_DB` names (a
        PostgreSQL URL, for several processes or machines; the home keeps the rest, such as
        the master key), else the home's SQLite file."""
        Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)  # only its owner's
        return cls(db or os.environ.get(DB_ENV) or sqlite_url(home), home=Path(home))

    def close(self) -> None:
        self.listener.close()
        self.writes.close()
        self.audit.close()
        self.engine.dispose()

    # -- configuration -------------------------------------------------------------------------

    def create_workspace(
        self, workspace: Workspace, *, check: Callable[[list[str]], None] | None = None
    ) -> None:
        """Create the workspace. `check` is given every existing workspace's name and may
        refuse (by raising): creations take turns (`one_at_a_time`), so a workspace created
        meanwhile is among the names it is given, and two that `check` would keep apart
        cannot both be made."""
        with self.engine.begin() as db:
            one_at_a_time(db, t.workspaces)
            names = list(db.execute(sa.select(t.workspaces.c.name)).scalars())
            if workspace.name in names:
                raise Conflict(f"workspace {workspace.name!r} already exists")
            if check is not None:
                check(names)
            if not db.execute(
                sa.select(t.tenants.c.name).where(t.tenants.c.name == workspace.tenant)
            ).first():
                db.execute(
                    t.tenants.insert().values(
                        name=workspace.tenant, created_at=workspace.created_at
                    )
                )
            db.execute(
                t.workspaces.insert().values(
                    name=workspace.name,
                    tenant=workspace.tenant,
                    trust_domain=workspace.trust_domain,
                    created_at=workspace.created_at,
                    settings=workspace.settings,
                )
            )

    @contextmanager
    def change(self, workspace: str, *, expected_revision: int | None = None) -> Iterator[Changes]:
        """One transaction of configuration changes to a workspace; bumps its revision.

        With `expected_revision`, the change applies only if nobody changed the workspace since
        that revision was read (else StaleRevision): changes computed from a snapshot, such as a
        bundle recompiled for a new catalogue, cannot overwrite a concurrent change.
        """
        with self.engine.begin() as db:
            query = t.workspaces.update().where(t.workspaces.c.name == workspace)
            if expected_revision is not None:
                query = query.where(t.workspaces.c.revision == expected_revision)
            bumped = db.execute(query.values(revision=t.workspaces.c.revision + 1))
            if bumped.rowcount != 1:
                if expected_revision is not None and self.workspace(workspace) is not None:
                    raise StaleRevision(f"workspace {workspace!r} changed meanwhile")
                raise NotFound(f"workspace {workspace!r} does not exist")
            notify(db, WORKSPACE, workspace)  # sent on commit: other processes reload it
            yield Changes(db, workspace)

    def workspace(self, name: str) -> Workspace | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(t.workspaces).where(t.workspaces.c.name == name)).first()
        return row_to(Workspace, row) if row else None

    def workspaces(self) -> list[Workspace]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(t.workspaces).order_by(t.workspaces.c.name)).all()
        return [row_to(Workspace, r) for r in rows]

    def revisions(self) -> dict[str, int]:
        """Each workspace's revision: the cheap question every process asks to stay current."""
        with self.engine.connect() as db:
            rows = db.execute(_REVISIONS).all()
        return {name: revision for name, revision in rows}  # noqa: C416 - rows are Row objects

    def snapshot(self, name: str) -> WorkspaceSnapshot | None:
        """The workspace as one revision has it: its row, agents, tools and bundles read
        together (a decision never sees one change's policies with another's catalogue)."""
        with one_moment(self.engine) as db:
            row = db.execute(sa.select(t.workspaces).where(t.workspaces.c.name == name)).first()
            if row is None:
                return None
            workspace = row_to(Workspace, row)
            agents = [
                row_to(Agent, r)
                for r in db.execute(
                    sa.select(t.agents)
                    .where(t.agents.c.workspace == name)
                    .order_by(t.agents.c.name)
                )
            ]
            tools = [
                row_to(Tool, r)
                for r in db.execute(
                    sa.select(t.tools).where(t.tools.c.workspace == name).order_by(t.tools.c.name)
                )
            ]
            bundle = shadow = None
            if workspace.active_policy_version:
                bundle = _bundle(db, name, workspace.active_policy_version)
            if workspace.shadow_policy_version:
                shadow = _bundle(db, name, workspace.shadow_policy_version)
        return WorkspaceSnapshot(workspace, agents, tools, bundle, shadow)

    def agent(self, workspace: str, name: str) -> Agent | None:
        query = sa.select(t.agents).where(
            t.agents.c.workspace == workspace, t.agents.c.name == name
        )
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(Agent, row) if row else None

    def agents(self, workspace: str) -> list[Agent]:
        snapshot = self.snapshot(workspace)
        if snapshot is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        return snapshot.agents

    def tools(self, workspace: str) -> list[Tool]:
        snapshot = self.snapshot(workspace)
        if snapshot is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        return snapshot.tools

    def users(self, workspace: str) -> list[User]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(t.users).where(t.users.c.workspace == workspace)).all()
        return [row_to(User, r) for r in rows]

    def bundles(self, workspace: str) -> list[PolicyBundleRecord]:
        """Every bundle the workspace has stored, the newest first."""
        b = t.policy_bundles
        query = sa.select(b).where(b.c.workspace == workspace).order_by(b.c.created_at.desc())
        with self.engine.connect() as db:
            return [row_to(PolicyBundleRecord, r) for r in db.execute(query)]

    def bundle(self, workspace: str, version: str) -> PolicyBundleRecord | None:
        with self.engine.connect() as db:
            return _bundle(db, workspace, version)

    # -- tasks ---------------------------------------------------------------------------------

    def insert_task(self, task: Task) -> None:
        with self.engine.begin() as db:
            db.execute(t.tasks.insert().values(**msgspec.to_builtins(task)))

    def finish_task(self, task_id: str, status: TaskStatus, at: float) -> None:
        with self.engine.begin() as db:
            db.execute(
                t.tasks.update()
                .where(t.tasks.c.id == task_id, t.tasks.c.status == TaskStatus.OPEN.value)
                .values(status=status.value, ended_at=at)
            )

    def open_task_records(self, workspace: str, agent: str, *, limit: int) -> list[Task]:
        """The agent's open tasks, the newest first, at most `limit` of them."""
        query = (
            sa.select(t.tasks)
            .where(
                t.tasks.c.workspace == workspace,
                t.tasks.c.agent == agent,
                t.tasks.c.status == TaskStatus.OPEN.value,
            )
            .order_by(t.tasks.c.created_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as db:
            return [row_to(Task, row) for row in db.execute(query)]

    def open_tasks(self, workspace: str, *, agent: str | None = None) -> list[str]:
        query = sa.select(t.tasks.c.id).where(
            t.tasks.c.workspace == workspace, t.tasks.c.status == TaskStatus.OPEN.value
        )
        if agent is not None:
            query = query.where(t.tasks.c.agent == agent)
        with self.engine.connect() as db:
            return list(db.execute(query).scalars())

    def grants_used(self, workspace: str, *, since: float, until: float) -> set[str]:
        """The grants under which a task was started in the window."""
        query = sa.select(t.tasks.c.grant).where(
            t.tasks.c.workspace == workspace,
            t.tasks.c.created_at >= since,
            t.tasks.c.created_at < until,
            t.tasks.c.grant.is_not(None),
        )
        with self.engine.connect() as db:
            return set(db.execute(query).scalars())

    def task(self, task_id: str) -> Task | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(t.tasks).where(t.tasks.c.id == task_id)).first()
        return row_to(Task, row) if row else None

    # -- decisions -----------------------------------------------------------------------------

    def tools_used(self, workspace: str, agent: str) -> set[str]:
        """The tools `agent` has ever been allowed to use."""
        query = sa.select(t.agent_tools.c.tool).where(
            t.agent_tools.c.workspace == workspace, t.agent_tools.c.agent == agent
        )
        with self.engine.connect() as db:
            return set(db.execute(query).scalars())

    def decision(self, decision_id: str) -> DecisionRecord | None:
        query = sa.select(*[c for c in t.decisions.columns if c.name != "seq"]).where(
            t.decisions.c.id == decision_id
        )
        with self.engine.connect() as db:
            row = db.execute(query).first()
        return row_to(DecisionRecord, row) if row else None

    def decisions(
        self,
        *,
        workspace: str | None = None,
        task_id: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
        effect: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 100,
    ) -> list[DecisionRecord]:
        """The newest decisions first (`limit` None: all of them), filtered by what is given."""
        equal = {"workspace": workspace, "task_id": task_id, "agent": agent, "tool": tool}
        query = _decisions_where(
            sa.select(*[c for c in t.decisions.columns if c.name != "seq"]),
            {**equal, "effect": effect},
            since=since,
            until=until,
        ).order_by(t.decisions.c.seq.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as db:
            return [row_to(DecisionRecord, r) for r in db.execute(query)]

    def decision_page(
        self,
        workspace: str,
        filters: Mapping[str, str | None],
        *,
        before: int | None,
        limit: int,
    ) -> list[tuple[int, DecisionRecord]]:
        """A page of the workspace's log, newest first, with each record's place in it (what
        the next page starts `before`): a page costs the same however deep it is."""
        d = t.decisions
        query = _decisions_where(sa.select(*d.columns), {**filters, "workspace": workspace})
        if before is not None:
            query = query.where(d.c.seq < before)
        query = query.order_by(d.c.seq.desc()).limit(limit)
        with self.engine.connect() as db:
            rows = db.execute(query).all()
        return [(row.seq, row_to(DecisionRecord, row)) for row in rows]

    def decision_counts(
        self,
        workspace: str,
        *,
        since: float,
        until: float | None = None,
        by: tuple[str, ...],
        every: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """How many decisions in the window, grouped by the columns `by` (of agent, tool,
        effect) and, with `every`, by time bucket of that many seconds: rows of (bucket number
        if `every`, *by, count), counted where the rows are rather than loaded."""
        d = t.decisions
        if not by or not set(by) <= {"agent", "tool", "effect"}:
            raise ValueError(f"decisions are counted by agent, tool or effect: {by!r}")
        keys: list[Any] = [d.c[column] for column in by]
        if every is not None:  # the bucket's number: floored (PostgreSQL's CAST rounds)
            bucket: Any = d.c.ts / float(every)
            postgres = self.engine.dialect.name == "postgresql"
            keys.insert(0, sa.func.floor(bucket) if postgres else sa.cast(bucket, sa.Integer))
        query = _decisions_where(
            sa.select(*keys, sa.func.count()), {"workspace": workspace}, since=since, until=until
        ).group_by(*keys)
        with self.engine.connect() as db:
            return [tuple(row) for row in db.execute(query)]

    def decision_reasons(self, workspace: str, *, since: float, until: float) -> list[str]:
        """The distinct reasons (JSON lists) of the window's decisions: a few dozen, however
        many decisions gave them."""
        d = t.decisions
        query = _decisions_where(
            sa.select(d.c.reasons).distinct(), {"workspace": workspace}, since=since, until=until
        )
        with self.engine.connect() as db:
            return list(db.execute(query).scalars())


def _decisions_where(
    query: sa.Select[Any],
    equal: Mapping[str, str | None],
    *,
    since: float | None = None,
    until: float | None = None,
) -> sa.Select[Any]:
    d = t.decisions
    for column, value in equal.items():
        if value is not None:
            query = query.where(d.c[column] == value)
    if since is not None:
        query = query.where(d.c.ts >= since)
    if until is not None:
        query = query.where(d.c.ts < until)
    return query


def _bundle(db: sa.Connection, workspace: str, version: str) -> PolicyBundleRecord | None:
    row = db.execute(
        sa.select(t.policy_bundles).where(
            t.policy_bundles.c.workspace == workspace, t.policy_bundles.c.version == version
        )
    ).first()
    return row_to(PolicyBundleRecord, row) if row else None


class Changes:
    """The write operations allowed inside `Store.change`."""

    def __init__(self, db: sa.Connection, workspace: str) -> None:
        self._db = db
        self.workspace = workspace

    def _own(self, what: str, workspace: str) -> None:
        """A change to one workspace writes only that workspace's rows (and bumps its revision,
        so every process sees it): a row of another workspace is refused."""
        if workspace != self.workspace:
            raise InvalidInput(f"{what} belongs to workspace {workspace!r}, not {self.workspace!r}")

    def put_agent(self, agent: Agent) -> None:
        """Register an agent, or update its kind, owner and ceiling (its status is left as is)."""
        self._own(f"agent {agent.name!r}", agent.workspace)
        key = (t.agents.c.workspace == agent.workspace) & (t.agents.c.name == agent.name)
        if self._db.execute(sa.select(t.agents.c.name).where(key)).first():
            self._db.execute(
                t.agents.update()
                .where(key)
                .values(
                    kind=agent.kind,
                    owner=agent.owner,
                    ceiling=list(agent.ceiling) if agent.ceiling is not None else None,
                )
            )
        else:
            self._db.execute(t.agents.insert().values(**msgspec.to_builtins(agent)))

    def set_agent_status(self, name: str, status: AgentStatus) -> None:
        key = (t.agents.c.workspace == self.workspace) & (t.agents.c.name == name)
        if self._db.execute(t.agents.update().where(key).values(status=status.value)).rowcount != 1:
            raise NotFound(f"agent {name!r} is not registered in workspace {self.workspace!r}")

    def put_user(self, user: User) -> None:
        self._own(f"user {user.name!r}", user.workspace)
        key = (t.users.c.workspace == user.workspace) & (t.users.c.name == user.name)
        self._db.execute(t.users.delete().where(key))
        self._db.execute(t.users.insert().values(**msgspec.to_builtins(user)))

    def put_tool(self, tool: Tool) -> None:
        self._own(f"tool {tool.name!r}", tool.workspace)
        key = (t.tools.c.workspace == tool.workspace) & (t.tools.c.name == tool.name)
        self._db.execute(t.tools.delete().where(key))
        self._db.execute(t.tools.insert().values(**msgspec.to_builtins(tool)))

    def set_settings(self, settings: dict[str, Any]) -> None:
        self._set(settings=settings)

    def shadow_bundle(self, record: PolicyBundleRecord | None) -> None:
        """Evaluate `record` beside the enforced bundle from now on (None: stop)."""
        if record is not None:
            self._keep(record)
        self._set(shadow_policy_version=record.version if record is not None else None)

    def activate_bundle(self, record: PolicyBundleRecord) -> None:
        """Keep the bundle (once per version) and make it the workspace's enforced one."""
        self._keep(record)
        self._set(active_policy_version=record.version)

    def _keep(self, record: PolicyBundleRecord) -> None:
        self._own(f"policy bundle {record.version}", record.workspace)
        if _bundle(self._db, record.workspace, record.version) is None:
            self._db.execute(t.policy_bundles.insert().values(**msgspec.to_builtins(record)))

    def _set(self, **values: Any) -> None:
        self._db.execute(
            t.workspaces.update().where(t.workspaces.c.name == self.workspace).values(**values)
        )
