"""Shared fixtures: a real embedded Guard on a temporary home, with a small workspace; and
`open_guard`, which opens a Guard in each mode the Guard's own tests run in: embedded, and remote
(a `Guard.remote` speaking HTTP to `tether serve` on that home)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from served import served

from tether import Guard
from tether.catalogue import Catalogue, CompiledTool, decision_context
from tether.store import Store

STARTER = Path(__file__).resolve().parent.parent / "tether" / "starter" / "acme"

EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string"},
        "subject": {"type": "string"},
        "amount": {"type": "number"},
    },
    "required": ["to"],
}

POLICIES = {
    "mail.cedar": """
@id("mail-inside")
@reason("mail inside acme is fine")
permit (principal, action == Action::"send_email", resource)
when { context.args.to like "*@acme.com" };

@id("ceo-needs-approval")
@approval("admin")
@reason("mail to the CEO needs approval")
forbid (principal, action == Action::"send_email", resource)
when { context.args.to == "ceo@acme.com" }
unless { context.approved };

@id("reads-ok")
permit (principal, action in Action::"read", resource);
""",
}


class Clock:
    """A clock the test moves by hand (`clock.now += 60`)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


USERS = ("alice", "a", "u")


def delegate(
    guard: Guard, workspace: str, agent: str, users: tuple[str, ...] = USERS, **grant: Any
) -> None:
    """Each of `users` delegates every tool now in the catalogue to `agent` (as a user would
    with `tether grant add`), so tests of the decision itself can start tasks."""
    tools = [tool.name for tool in guard.tools(workspace)]
    for user in users:
        guard.add_user(workspace, user)
        guard.grant(workspace, user=user, agent=agent, tools=tools, **grant)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def acme(g: Any, settings: dict[str, Any] | None = None) -> None:
    """A workspace `acme` with agent `coder`, tools send_email and read_file, and POLICIES."""
    g.add_workspace("acme", settings=settings)
    g.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
    g.register_tool(
        "acme", "send_email", effects=["external"], sinks=["to"], args_schema=EMAIL_SCHEMA
    )
    g.register_tool(
        "acme",
        "read_file",
        effects=["read"],
        args_schema={"type": "object", "properties": {"path": {"type": "string"}}},
    )
    g.activate_policies("acme", POLICIES)
    delegate(g, "acme", "coder")


@pytest.fixture
def guard(home: Path) -> Iterator[Guard]:
    """An embedded Guard on `acme` (see acme)."""
    with Guard.embedded(home=home) as g:
        acme(g)
        yield g


# -- one test, both modes ----------------------------------------------------------------------------

OpenGuard = Callable[..., AbstractContextManager[Any]]


@pytest.fixture(params=["embedded", "remote"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_guard(mode: str) -> OpenGuard:
    """`with open_guard(home) as guard:` a Guard on `home`'s store in the test's mode: embedded,
    or remote, speaking to `tether serve` on that store (tests/served.py) with alice's admin
    token (admin of every workspace). `clock`: the Guard's clock (and the service's)."""

    @contextmanager
    def open_(home: Path, clock: Callable[[], float] = time.time) -> Iterator[Any]:
        if mode == "embedded":
            with Guard(Store.at_home(home), clock=clock) as guard:
                yield guard
            return
        with (
            served(home, clock=clock) as service,
            Guard.remote(service.url, admin_token=service.admin_token, clock=clock) as guard,
        ):
            yield guard

    return open_


@pytest.fixture
def starter(home: Path) -> Iterator[Guard]:
    """The starter workspace `acme` that `tether init` and `tether demo` use."""
    with Guard.embedded(home=home) as g:
        g.apply_directory(STARTER)
        yield g


def sample_context(
    tool: CompiledTool,
    catalogue: Catalogue,
    args: dict[str, Any],
    *,
    calls: int = 0,
    now: float = 0.0,
    approved: bool = False,
    labels: tuple[str, ...] = (),
    provenance: dict[str, str] | None = None,
    risk: dict[str, Any] | None = None,
    converted: bool = False,
) -> dict[str, Any]:
    """A complete decision context for `tool`, as the pipeline would build it for a fresh task
    (sink arguments typed by the user unless `provenance` says otherwise). `converted`: `args`
    already are Cedar values."""
    task = {
        "id": "task-1",
        "user": "ann",
        "request": "r",
        "tools": sorted(catalogue.tools),
        "calls": calls,
        "allowed": calls,
        "denied": 0,
        "tool_calls": 0,
        "effect_calls": dict.fromkeys(catalogue.effects, 0),
        "labels": sorted(labels),
    }
    sources = {s: "user" for s in tool.spec.sinks if s in args} | (provenance or {})
    return decision_context(
        args=args if converted else tool.cedar_args(args),
        task=task,
        tool=tool.context,
        provenance=sources,
        risk=risk or {"score": 0, "level": "low", "signals": []},
        now=now,
        approved=approved,
    )


# -- the same suite on PostgreSQL -------------------------------------------------------------------
# `TETHER_TEST_POSTGRES=postgresql+psycopg://user@host:port/db` runs every test on a database of
# its own on that server (made and dropped around it), through TETHER_DB; tests that look inside
# the SQLite file itself are marked `sqlite` and left to the SQLite run.

POSTGRES = os.environ.get("TETHER_TEST_POSTGRES")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if POSTGRES:
        kept = [item for item in items if item.get_closest_marker("sqlite") is None]
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
    # The long tests first: `make test`'s two workers then run them beside the rest, rather
    # than one worker ending the run alone on the soak's ten minutes while the other idles.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _database_of_its_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not POSTGRES:
        yield
        return
    import sqlalchemy as sa  # noqa: PLC0415

    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with server.connect() as db:
        db.execute(sa.text(f'CREATE DATABASE "{name}"'))
    monkeypatch.setenv("TETHER_DB", POSTGRES.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield
    finally:
        with server.connect() as db:
            db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
