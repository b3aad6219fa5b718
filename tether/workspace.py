"""The compiled view of one workspace that decisions read, and the cache that keeps it current.

A view is built from one consistent store snapshot (agents, catalogue, active bundle, entities)
and never changes; a change anywhere in the workspace produces a new view that replaces the old
one in a single reference swap. Other processes and replicas change the store too, so the cache
asks the store for workspace revisions at most every `poll_interval` seconds: a suspension made
elsewhere is enforced here within that interval (DESIGN.md section 6 asks for one second). On
PostgreSQL the store's listener also tells the cache when a workspace changed elsewhere, and the
next `get` polls at once (milliseconds instead of up to the interval; see store/notify.py for
why the interval stays as it is). A notification never changes a view in place: it only makes
the next poll come sooner, and a decision keeps the view it started with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.audit.redaction import FULL, Mode, Redaction
from tether.catalogue import Catalogue, compile_tool
from tether.errors import TetherError
from tether.model import Agent, Workspace
from tether.policy import Bundle, bundle_version, compile_bundle, parse_schema, workspace_entities
from tether.session.risk import WorkingHours
from tether.store import Store, WorkspaceSnapshot
from tether.store.notify import WORKSPACE

POLL_INTERVAL = 0.25
log = logging.getLogger("tether.workspace")


@dataclass(frozen=True)
class WorkspaceView:
    workspace: Workspace
    agents: Mapping[str, Agent]
    catalogue: Catalogue
    bundle: Bundle | None  # None until policies are activated: every call is then denied
    shadow: Bundle | None  # a candidate evaluated beside the enforced bundle, never deciding
    entities: Any  # cedarpy.Entities
    hours: WorkingHours | None  # when its agents are expected to work (a risk signal)
    redaction: Redaction = FULL  # what its decision records keep of the arguments

    @property
    def revision(self) -> int:
        return self.workspace.revision


def build_view(snapshot: WorkspaceSnapshot, previous: WorkspaceView | None = None) -> WorkspaceView:
    """Compile a snapshot. Raises TetherError if the stored state does not compile.

    Compiling the policies is most of the cost (9.2 ms of the starter workspace's 9.7), so a
    bundle whose files and schema are those `previous` compiled is taken from it: registering
    an agent, suspending one or adding a user does not compile the policies again in every
    process, on the path of the next call each decides."""
    catalogue = Catalogue({tool.name: compile_tool(tool) for tool in snapshot.tools})
    schema = catalogue.cedar_schema()
    bundle = (
        _compiled(snapshot.bundle.files, schema, previous.bundle if previous else None)
        if snapshot.bundle
        else None
    )
    parsed_schema = bundle.schema if bundle is not None else parse_schema(schema)
    return WorkspaceView(
        workspace=snapshot.workspace,
        agents={agent.name: agent for agent in snapshot.agents},
        catalogue=catalogue,
        bundle=bundle,
        shadow=_shadow(snapshot, schema, previous.shadow if previous else None),
        entities=workspace_entities(snapshot.workspace, snapshot.agents, parsed_schema),
        hours=WorkingHours.from_settings(snapshot.workspace.settings),
        redaction=Redaction.from_settings(snapshot.workspace.settings),
    )


def _compiled(files: Mapping[str, str], schema: Any, before: Bundle | None) -> Bundle:
    """`files` compiled against `schema`: `before` if it is that very bundle (its version is a
    digest of both), else compiled now."""
    version = bundle_version(files, schema)
    if before is not None and before.version == version:
        return before
    return compile_bundle(files, schema, version)


def _shadow(snapshot: WorkspaceSnapshot, schema: Any, before: Bundle | None) -> Bundle | None:
    """The shadow bundle, compiled for today's catalogue. One that no longer compiles is dropped
    (and logged): a shadow must never be able to stop the enforced bundle from deciding."""
    if snapshot.shadow is None:
        return None
    try:
        return _compiled(snapshot.shadow.files, schema, before)
    except TetherError:
        log.warning("shadow bundle %s of %s no longer compiles", snapshot.shadow.version,
                    snapshot.workspace.name, exc_info=True)  # fmt: skip
        return None


class BrokenWorkspace(TetherError):
    """The stored state of a workspace does not compile; its calls are denied until it does.
    Their records still keep no more of the arguments than the workspace says (`redaction`)."""

    def __init__(self, message: str, revision: int, redaction: Redaction | None = None) -> None:
        super().__init__(message)
        self.revision = revision
        self.redaction = redaction if redaction is not None else FULL


def _redaction_of_broken(snapshot: WorkspaceSnapshot) -> Redaction:
    """A broken workspace's redaction setting; if that is what is broken (settings are checked
    when written, so only a store edited around Tether), keep nothing of the arguments."""
    try:
        return Redaction.from_settings(snapshot.workspace.settings)
    except TetherError:
        return Redaction(Mode.DIGEST)


class Views:
    """The current view of every workspace this process has used."""

    def __init__(
        self,
        store: Store,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._views: dict[str, WorkspaceView | BrokenWorkspace] = {}
        self._lock = threading.Lock()
        self._poll_interval = poll_interval
        self._clock = clock
        self._polled_at = clock()
        self._due = False  # another process changed a workspace: poll on the next use
        store.listener.subscribe(WORKSPACE, self._changed_elsewhere)

    def _changed_elsewhere(self, _workspace: str | None) -> None:
        self._due = True

    def _poll_if_due(self) -> None:
        if self._due or self._clock() - self._polled_at >= self._poll_interval:
            self.poll()

    def get(self, name: str) -> WorkspaceView | None:
        """The workspace's current view; None if it does not exist. Raises BrokenWorkspace."""
        self._poll_if_due()
        view = self._views.get(name)
        if view is None:
            view = self.refresh(name)
        if isinstance(view, BrokenWorkspace):
            raise view
        return view

    def refresh(self, name: str) -> WorkspaceView | BrokenWorkspace | None:
        """Rebuild one workspace's view from the store now."""
        with self._lock:
            snapshot = self._store.snapshot(name)
            if snapshot is None:
                self._views.pop(name, None)
                return None
            before = self._views.get(name)
            try:
                view: WorkspaceView | BrokenWorkspace = build_view(
                    snapshot, before if isinstance(before, WorkspaceView) else None
                )
            except TetherError as exc:
                view = BrokenWorkspace(
                    f"workspace {name!r} cannot be loaded: {exc}",
                    snapshot.workspace.revision,
                    _redaction_of_broken(snapshot),
                )
            self._views[name] = view
            return view

    def redaction(self, name: str) -> Redaction:
        """What the records of workspace `name` keep of a call's arguments, for a decision that
        did not get as far as the workspace's view (a call denied before it): its cached view's
        setting, loading the view if this process has not yet; a workspace that does not exist
        has no setting to keep."""
        self._poll_if_due()
        view = self._views.get(name)
        if view is None:
            view = self.refresh(name)
        return view.redaction if view is not None else FULL

    def poll(self) -> None:
        """Reload every cached view whose workspace changed in the store since it was built."""
        self._due = False  # before reading: a change notified from now on is polled again
        self._polled_at = self._clock()
        revisions = self._store.revisions()
        for name, view in list(self._views.items()):
            if revisions.get(name) != view.revision:
                self.refresh(name)
