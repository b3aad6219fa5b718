"""The control plane: checked changes to workspaces, agents, users, tools and policies.

Every change is validated first (names, schemas, policies compile against the catalogue they
will run with) and then written in one store transaction that bumps the workspace revision. A
change computed from what was read (a bundle recompiled for a new catalogue) is written only if
the workspace did not change meanwhile, and retried otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from tether.approvals import ApprovalSettings
from tether.approvals.settings import webhook_variable_prefix
from tether.audit.redaction import Redaction
from tether.catalogue import Catalogue, compile_tool, parse_catalogue
from tether.credentials import add_grant
from tether.errors import Conflict, InvalidInput, NotFound, PolicyError
from tether.identity import agent_spiffe_id, check_trust_domain
from tether.model import (
    MAX_RISK_TIER,
    Agent,
    AgentStatus,
    Grant,
    PolicyBundleRecord,
    Tool,
    User,
    Workspace,
)
from tether.names import check_identifier, check_person, check_segment, check_tool_name
from tether.policy import Bundle, compile_bundle, read_policy_dir
from tether.session.risk import WorkingHours
from tether.store import Changes, StaleRevision, Store, WorkspaceSnapshot
from tether.workspace import Views

RETRIES = 5


class Control:
    """`revoke_grant`: how a grant the workspace file stopped declaring is revoked (with its
    tokens, in every process)."""

    def __init__(
        self,
        store: Store,
        views: Views,
        clock: Callable[[], float] = time.time,
        *,
        revoke_grant: Callable[[str], None],
        granted: Callable[[Grant], None],
    ) -> None:
        """`revoke_grant`, `granted`: how grants the workspace file drops are revoked, and
        those it adds recorded (as any other revocation or grant is)."""
        self._store = store
        self._views = views
        self._clock = clock
        self._revoke_grant = revoke_grant
        self._granted = granted

    def add_workspace(
        self,
        name: str,
        *,
        tenant: str = "default",
        trust_domain: str = "tether.local",
        settings: Mapping[str, Any] | None = None,
    ) -> Workspace:
        workspace = Workspace(
            name=check_segment("workspace", name),
            tenant=check_segment("tenant", tenant),
            trust_domain=check_trust_domain(trust_domain),
            created_at=self._clock(),
            settings=_checked_settings(name, settings or {}),
        )
        self._store.create_workspace(workspace, check=lambda names: _refuse_a_twin(name, names))
        return workspace

    def set_settings(self, workspace: str, settings: Mapping[str, Any]) -> None:
        checked = _checked_settings(workspace, settings)
        self._write(workspace, lambda c: c.set_settings(checked))

    def register_agent(
        self,
        workspace: str,
        name: str,
        *,
        kind: str,
        owner: str,
        ceiling: Iterable[str] | None = None,
    ) -> Agent:
        ws = self._workspace(workspace)
        owner = check_person("every agent's accountable human owner", owner)
        agent = Agent(
            workspace=workspace,
            name=check_segment("agent", name),
            kind=check_segment("agent kind", kind),
            owner=owner,
            spiffe_id=agent_spiffe_id(ws.trust_domain, workspace, name),
            created_at=self._clock(),
            ceiling=(
                tuple(sorted({check_tool_name(t) for t in ceiling}))
                if ceiling is not None
                else None
            ),
        )
        self._write(workspace, lambda c: c.put_agent(agent))
        return agent

    def set_agent_status(self, workspace: str, name: str, status: AgentStatus) -> None:
        self._write(workspace, lambda c: c.set_agent_status(name, status))

    def add_user(self, workspace: str, name: str, roles: Iterable[str] = ()) -> User:
        user = User(
            workspace=workspace,
            name=check_person("a user", name),
            roles=tuple(check_identifier("role", r) for r in roles),
        )
        self._write(workspace, lambda c: c.put_user(user))
        return user

    def register_tools(self, workspace: str, tools: Iterable[Tool]) -> None:
        """Add or replace catalogue entries; active policies are revalidated against the result."""
        new = {tool.name: tool for tool in tools}
        for tool in new.values():
            if tool.workspace != workspace:
                raise InvalidInput(f"tool {tool.name!r} belongs to workspace {tool.workspace!r}")
            if len(tool.risk_tier) > MAX_RISK_TIER:
                raise InvalidInput(
                    f"tool {tool.name!r}: a risk tier is at most {MAX_RISK_TIER} characters"
                )

        def attempt(snapshot: WorkspaceSnapshot) -> Callable[[Changes], None] | None:
            current = {tool.name: tool for tool in snapshot.tools}
            if all(current.get(name) == tool for name, tool in new.items()):
                return None  # already registered exactly so: no new revision
            # Typed and checked now, bundle or not: a tool that cannot be typed is never stored.
            catalogue = _catalogue({**current, **new}.values())
            bundle = None
            if snapshot.bundle is not None:
                bundle = self._compile(catalogue, snapshot.bundle.files, new)

            def write(changes: Changes) -> None:
                for tool in new.values():
                    changes.put_tool(tool)
                if bundle is not None:
                    changes.activate_bundle(self._record(workspace, bundle))

            return write

        self._compare_and_set(workspace, attempt)

    def check_policies(self, workspace: str, files: Mapping[str, str] | str | Path) -> Bundle:
        """Compile a bundle against the workspace's catalogue without activating it."""
        snapshot = self._snapshot(workspace)
        return self._compile(_catalogue(snapshot.tools), _files(files), {})

    def activate_policies(
        self, workspace: str, files: Mapping[str, str] | str | Path, *, shadow: bool = False
    ) -> Bundle:
        """Validate a bundle against the catalogue and make it the enforced one, atomically;
        with `shadow`, the one evaluated beside it instead (recorded, never deciding)."""
        sources = _files(files)
        activated: Bundle | None = None

        def attempt(snapshot: WorkspaceSnapshot) -> Callable[[Changes], None]:
            nonlocal activated
            bundle = activated = self._compile(_catalogue(snapshot.tools), sources, {})
            record = self._record(workspace, bundle)
            if shadow:
                return lambda changes: changes.shadow_bundle(record)
            return lambda changes: changes.activate_bundle(record)

        self._compare_and_set(workspace, attempt)
        assert activated is not None
        return activated

    def stop_shadow(self, workspace: str) -> None:
        self._write(workspace, lambda changes: changes.shadow_bundle(None))

    def apply_directory(self, path: str | Path | WorkspaceFolder) -> str:
        """Create or update a workspace from a folder: workspace.yaml, catalogue.yaml, policies/
        (or from their text, read elsewhere: a `WorkspaceFolder`)."""
        folder = path if isinstance(path, WorkspaceFolder) else WorkspaceFolder.read(path)
        spec = folder.spec()
        if self._store.workspace(spec.name) is None:
            self.add_workspace(
                spec.name,
                tenant=spec.tenant,
                trust_domain=spec.trust_domain,
                settings=spec.settings,
            )
        else:
            self.set_settings(spec.name, spec.settings)
        for agent in spec.agents:
            self.register_agent(
                spec.name, agent.name, kind=agent.kind, owner=agent.owner, ceiling=agent.ceiling
            )
        for user in spec.users:
            self.add_user(spec.name, user.name, user.roles)
        if folder.catalogue is not None:
            where = str(Path(folder.source) / "catalogue.yaml")
            tools = parse_catalogue(folder.catalogue, spec.name, where=where)
            self.register_tools(spec.name, tools)
        if folder.policies is not None:
            self.activate_policies(spec.name, folder.policies)
        self._sync_grants(spec.name, spec.grants)
        return spec.name

    def _sync_grants(self, workspace: str, entries: list[_GrantEntry]) -> None:
        """Keep the grants the workspace file declares in step with it: a declared grant is made
        once (applying again changes nothing), one the file no longer declares is revoked, and
        one a user revoked is not made again (say so with `tether grant add`, or change it)."""
        now = self._clock()
        declared = {_grant_key(e.user, e.agent, e.tools, e.max_ttl, e.may_act): e for e in entries}
        held: set[tuple[object, ...]] = set()
        for grant in self._store.credentials.grants(workspace):
            if grant.source != "file":
                continue
            key = _grant_key(grant.user, grant.agent, grant.tools, grant.max_ttl, grant.may_act)
            live = grant.revoked_at is None and now < grant.expires_at
            if key in declared:
                held.add(key)  # live, or revoked by a user: either way, not made again
            elif live:
                self._revoke_grant(grant.id)
        for key, entry in declared.items():
            if key not in held:
                grant = add_grant(
                    self._store,
                    workspace=workspace,
                    user=entry.user,
                    agent=entry.agent,
                    tools=entry.tools,
                    max_ttl=entry.max_ttl,
                    may_act=entry.may_act,
                    expires_in=entry.expires_in,
                    now=now,
                    source="file",
                )
                self._granted(grant)

    # -- helpers ---------------------------------------------------------------------------------

    def _workspace(self, name: str) -> Workspace:
        workspace = self._store.workspace(name)
        if workspace is None:
            raise NotFound(f"workspace {name!r} does not exist")
        return workspace

    def _snapshot(self, name: str) -> WorkspaceSnapshot:
        snapshot = self._store.snapshot(name)
        if snapshot is None:
            raise NotFound(f"workspace {name!r} does not exist")
        return snapshot

    def _write(self, workspace: str, change: Callable[[Changes], None]) -> None:
        with self._store.change(workspace) as changes:
            change(changes)
        self._views.refresh(workspace)

    def _compare_and_set(
        self,
        workspace: str,
        attempt: Callable[[WorkspaceSnapshot], Callable[[Changes], None] | None],
    ) -> None:
        for _ in range(RETRIES):
            snapshot = self._snapshot(workspace)
            write = attempt(snapshot)
            if write is None:
                return
            try:
                with self._store.change(
                    workspace, expected_revision=snapshot.workspace.revision
                ) as c:
                    write(c)
            except StaleRevision:
                continue
            self._views.refresh(workspace)
            return
        raise Conflict(f"workspace {workspace!r} kept changing; try again")

    def _compile(
        self, catalogue: Catalogue, files: Mapping[str, str], changed: Mapping[str, Tool]
    ) -> Bundle:
        try:
            return compile_bundle(files, catalogue.cedar_schema())
        except PolicyError as exc:
            if changed:
                names = ", ".join(sorted(changed))
                exc.args = (f"changing tool(s) {names} would break the active policies:\n{exc}",)
            raise

    def _record(self, workspace: str, bundle: Bundle) -> PolicyBundleRecord:
        return PolicyBundleRecord(
            workspace=workspace,
            version=bundle.version,
            files=dict(bundle.files),
            cedar_schema=dict(bundle.cedar_schema),
            created_at=self._clock(),
        )


SETTINGS = ("working_hours", "approvals", "audit")


def _refuse_a_twin(name: str, others: list[str]) -> None:
    """A workspace's webhook secrets are the variables named for it (`webhook_variable_prefix`),
    where `-`, `.` and `_` are one: two names that differ only in those would key each other's
    notifications, so the second is refused (checked as it is created, with creations taking
    turns: two made at the same instant are kept apart too)."""
    prefix = webhook_variable_prefix(name)
    for other in others:
        if webhook_variable_prefix(other) == prefix:
            raise Conflict(
                f"workspace {name!r} would share its webhook secrets' variables ({prefix}...) "
                f"with workspace {other!r}: choose a name that differs from it in more than "
                "'-', '.' and '_'"
            )


def _checked_settings(workspace: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InvalidInput(f"unknown workspace settings {unknown}; known: {list(SETTINGS)}")
    WorkingHours.from_settings(settings)  # raises InvalidInput with what is wrong
    ApprovalSettings.from_settings(settings, workspace)
    Redaction.from_settings(settings)
    return dict(settings)


def _grant_key(
    user: str, agent: str, tools: Iterable[str], max_ttl: float, may_act: Iterable[str]
) -> tuple[object, ...]:
    return (user, agent, frozenset(tools), float(max_ttl), frozenset(may_act))


def _catalogue(tools: Iterable[Tool]) -> Catalogue:
    return Catalogue({tool.name: compile_tool(tool) for tool in tools})


def _files(source: Mapping[str, str] | str | Path) -> Mapping[str, str]:
    return source if isinstance(source, Mapping) else read_policy_dir(source)


class WorkspaceFolder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A workspace folder as read: the text of workspace.yaml, of catalogue.yaml and of each
    file under policies/ (None where the folder has none), and `source`, where it was read, for
    errors to name. It is how a folder the service cannot see is applied over HTTP."""

    workspace: str
    catalogue: str | None = None
    policies: dict[str, str] | None = None
    source: str = "."

    @classmethod
    def read(cls, path: str | Path) -> WorkspaceFolder:
        root = Path(path)
        catalogue = root / "catalogue.yaml"
        return cls(
            workspace=_read_text(root / "workspace.yaml"),
            catalogue=_read_text(catalogue) if catalogue.exists() else None,
            policies=read_policy_dir(root / "policies") if (root / "policies").is_dir() else None,
            source=str(root),
        )

    def spec(self) -> _WorkspaceFile:
        """workspace.yaml, checked."""
        try:
            return msgspec.yaml.decode(self.workspace, type=_WorkspaceFile)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"{Path(self.source) / 'workspace.yaml'}: {exc}") from exc

    @property
    def name(self) -> str:
        return self.spec().name


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


class _AgentEntry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: str
    owner: str
    ceiling: list[str] | None = None


class _UserEntry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    roles: list[str] = msgspec.field(default_factory=list)


class _GrantEntry(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    agent: str
    tools: list[str]
    max_ttl: float = 3600.0
    may_act: list[str] = msgspec.field(default_factory=list)
    expires_in: float = 365 * 86400.0


class _WorkspaceFile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    tenant: str = "default"
    trust_domain: str = "tether.local"
    agents: list[_AgentEntry] = msgspec.field(default_factory=list)
    users: list[_UserEntry] = msgspec.field(default_factory=list)
    grants: list[_GrantEntry] = msgspec.field(default_factory=list)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
