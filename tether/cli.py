"""`tether ...` commands.

Errors are one clear line on stderr and a non-zero exit code, never a traceback (set
TETHER_DEBUG=1 to see one). `tether check` exits 0 on allow, 3 on deny and 4 when approval is
required, so scripts can branch on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.approvals.workflow import shown_args
from tether.audit import record_hash, verify, write_checkpoint
from tether.audit.review import review, to_markdown
from tether.catalogue import Catalogue, compile_tool, load_catalogue_file
from tether.credentials import (
    ACCESS_TOKEN_TYPE,
    GRANT_TOKEN_TYPE,
    ExchangeRequest,
    make_assertion,
    make_proof,
)
from tether.credentials.signing_keys import new_master_key
from tether.errors import CredentialRefused, InvalidInput, NotFound, TetherError
from tether.identity import (
    check_bundle,
    check_trust_domain,
    generate_key,
    register_key,
    rotate_key,
)
from tether.model import ApprovalStatus, DecisionRecord, Durability, Effect
from tether.policy import Bundle, compile_bundle, read_policy_dir
from tether.policy.backtest import shadow_disagrees
from tether.policy.fmt import format_files
from tether.policy.source import policy_sources
from tether.policy.testing import (
    TEST_FILE,
    WORKSPACE,
    CaseResult,
    case_file_catalogue,
    fixture_agents,
    load_test_file,
    run_cases,
)
from tether.sdk import Guard, TaskHandle
from tether.server import admin_tokens
from tether.store import Store

app = typer.Typer(
    help="Tether: runtime authorization for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
policy_app = typer.Typer(
    help="Validate, test, format and activate Cedar policy bundles.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Workspaces: the tenancy boundary.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents: registered non-human identities.", no_args_is_help=True)
user_app = typer.Typer(help="Users: people who delegate and approve.", no_args_is_help=True)
tool_app = typer.Typer(help="The tool catalogue of a workspace.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(workspace_app, name="workspace")
app.add_typer(agent_app, name="agent")
app.add_typer(user_app, name="user")
app.add_typer(tool_app, name="tool")
grant_app = typer.Typer(help="Delegation grants: what users let agents do.", no_args_is_help=True)
token_app = typer.Typer(help="Task tokens: exchange, inspect, revoke.", no_args_is_help=True)
keys_app = typer.Typer(help="The service's token signing keys.", no_args_is_help=True)
trust_app = typer.Typer(help="External identities: SPIFFE JWT-SVID trust.", no_args_is_help=True)
app.add_typer(grant_app, name="grant")
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")
approvals_app = typer.Typer(
    help="Step-up approvals: requests waiting for a person, and their answers.",
    no_args_is_help=True,
)
app.add_typer(approvals_app, name="approvals")
audit_app = typer.Typer(
    help="The decision log: query, tail, export, explain, verify.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
admin_token_app = typer.Typer(
    help="Admin tokens: how people and services call the HTTP API.", no_args_is_help=True
)
app.add_typer(admin_token_app, name="admin-token")
console_app = typer.Typer(
    help="People who sign in to the web console (at /console of tether serve).",
    no_args_is_help=True,
)
app.add_typer(console_app, name="console")
gateway_app = typer.Typer(
    help="The MCP gateway: every tool call to MCP servers behind it decided by Tether.",
    no_args_is_help=True,
)
app.add_typer(gateway_app, name="gateway")
eval_app = typer.Typer(
    help="Measure a catalogue and its policies against public attack benchmarks.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

out = Console(soft_wrap=True)
EXIT_BY_EFFECT = {Effect.ALLOW: 0, Effect.DENY: 3, Effect.APPROVAL_REQUIRED: 4}

HomeOption = Annotated[
    Path,
    typer.Option("--home", envvar="TETHER_HOME", help="Tether's home folder (store and files)."),
]


class _State:
    home: Path = Path(".tether")


state = _State()


@app.callback()
def _main(home: HomeOption = Path(".tether")) -> None:
    state.home = home


@contextmanager
def _guard() -> Iterator[Guard]:
    guard = Guard.embedded(home=state.home)
    try:
        yield guard
    finally:
        guard.close()


# -- getting started -----------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create a starter home: workspace 'acme' with agents, catalogue, policies (the baseline pack
    included, in policies/baseline) and policy tests."""
    from tether.demo import install_starter  # noqa: PLC0415 - only init and demo need it

    target = state.home / "workspaces" / "acme"
    if target.exists():
        raise InvalidInput(f"{target} already exists; remove it or use another --home")
    install_starter(target)
    with _guard() as guard:
        guard.apply_directory(target)
    out.print(f"[green]Created[/] {state.home} with workspace [bold]acme[/] from {target}")
    out.print(f"  policies:     {target / 'policies'}")
    out.print(f"  policy tests: tether --home {state.home} policy test {target / 'policies'}")
    out.print(
        f"  one decision: tether --home {state.home} check acme coder send_email --user alice "
        '--args \'{"to": "bob@acme.com", "subject": "hi"}\''
    )


@app.command()
def demo(
    home: Annotated[
        Path | None,
        typer.Option(
            help="Where to keep the demo's store: a new or empty folder, or one the demo made "
            "(default: a new temp folder)."
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then serve the HTTP API on the demo's store.")
    ] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port.")] = 8080,
) -> None:
    """Play a scripted story: four agents share a workspace under different runtime policies."""
    from tether.demo import run_demo  # noqa: PLC0415 - the demo is not needed by other commands
    from tether.server.serving import Serving, run  # noqa: PLC0415

    home = run_demo(home, out)
    if not serve:
        return
    url = f"http://127.0.0.1:{port}"
    store = Store.at_home(home)
    token, _ = admin_tokens.issue(
        store,
        name="bob",
        roles={"acme": ["admin", "approver"]},
        lifetime=86400.0,
        now=time.time(),
    )
    call = json.dumps(
        {"agent": "planner", "user": "alice", "tool": "read_file", "args": {"path": "/repo/x"}}
    )
    out.print(
        f"\nThe HTTP API on the demo's store: {url} (docs/api.md; OpenAPI: {url}/openapi.json)\n"
        f"The web console: {url}/console (sign in with bob's admin token; docs/console.md)\n"
        f"Admin token for bob (admin and approver in acme, for a day):\n  {token}\n"
        "Make a decision:\n"
        f"  curl -s -X POST {url}/v1/workspaces/acme/check -H 'Authorization: Bearer {token}' "
        f"-d '{call}'\n"
        "Ctrl-C stops it.",
        highlight=False,
        soft_wrap=True,
    )
    store.close()
    run(Serving(home=str(home), public_url=url), host="127.0.0.1", port=port)


@app.command()
def check(
    workspace: str,
    agent: str,
    tool: str,
    user: Annotated[
        str,
        typer.Option(help="The user the agent acts for; they must have delegated the tools."),
    ],
    args: Annotated[str, typer.Option(help="The call's arguments as a JSON object.")] = "{}",
    request: Annotated[str, typer.Option(help="The user's request (the task's intent).")] = "",
    tools: Annotated[
        list[str] | None,
        typer.Option("--tool-granted", help="Tools the task grants (default: TOOL)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Decide one call, in a one-off task, and record it like any other decision."""
    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--args is not valid JSON: {exc}") from exc
    with (
        _guard() as guard,
        guard.task(
            workspace=workspace, agent=agent, user=user, request=request, tools=tools or [tool]
        ) as task,
    ):
        decision = task.authorize(tool, arguments)
    if as_json:
        sys.stdout.write(msgspec.json.encode(decision).decode() + "\n")
    else:
        colour = {"allow": "green", "deny": "red", "approval_required": "yellow"}[
            decision.effect.value
        ]
        out.print(f"[bold {colour}]{decision.effect.value}[/] {tool} for {agent} in {workspace}")
        for reason in decision.reasons:
            policy = f" [dim]({reason.policy})[/]" if reason.policy else ""
            out.print(f"  {reason.stage.value}: {reason.text}{policy}")
        out.print(f"  [dim]decision {decision.decision_id}, policy {decision.policy_version}[/]")

    raise typer.Exit(EXIT_BY_EFFECT[decision.effect])


@app.command()
def apply(path: Path) -> None:
    """Create or update a workspace from a folder (workspace.yaml, catalogue.yaml, policies/)."""
    with _guard() as guard:
        name = guard.apply_directory(path)
    out.print(f"[green]Applied[/] {path} to workspace [bold]{name}[/]")


# -- policies ------------------------------------------------------------------------------------


def _catalogue(workspace: str | None, catalogue_file: Path | None) -> Catalogue:
    if catalogue_file is not None:
        tools = load_catalogue_file(catalogue_file, workspace or "test")
    elif workspace is not None:
        with _guard() as guard:
            tools = guard.store.tools(workspace)
    else:
        raise InvalidInput("say which catalogue to check against: --workspace or --catalogue")
    return Catalogue({t.name: compile_tool(t) for t in tools})


WorkspaceOption = Annotated[
    str | None, typer.Option("--workspace", "-w", help="Use this workspace's catalogue and agents.")
]
CatalogueOption = Annotated[
    Path | None, typer.Option("--catalogue", help="Use this catalogue file instead.")
]


@policy_app.command("validate")
def policy_validate(
    path: Path, workspace: WorkspaceOption = None, catalogue: CatalogueOption = None
) -> None:
    """Parse and validate a policy folder against a catalogue; list every problem with its line."""
    bundle = compile_bundle(read_policy_dir(path), _catalogue(workspace, catalogue).cedar_schema())
    out.print(f"[green]valid[/]: {len(bundle.policies)} policies, version {bundle.version}")
    _print_inert(bundle)


def _print_inert(bundle: Bundle) -> None:
    for policy in bundle.policies.values():
        if policy.inert:
            where = escape(f"{policy.file}:{policy.line} [{policy.id}]")
            out.print(
                f"  [dim]note: {where} applies to no tool of this catalogue "
                "(an effect group no tool has): it is inert[/]"
            )


@policy_app.command("test")
def policy_test(
    path: Path, workspace: WorkspaceOption = None, catalogue: CatalogueOption = None
) -> None:
    """Run the test cases in PATH/tests.yaml against the policies in PATH."""
    test_path = path / TEST_FILE if path.is_dir() else path
    policy_dir = test_path.parent
    tests = load_test_file(test_path)
    catalogue_file = catalogue or case_file_catalogue(tests, test_path)
    cat = _catalogue(workspace, catalogue_file)
    files = {**read_policy_dir(policy_dir), **tests.with_policies}
    bundle = compile_bundle(files, cat.cedar_schema())
    if tests.agents is not None:
        agents = fixture_agents(tests.agents, workspace or WORKSPACE)
    elif workspace is not None:
        with _guard() as guard:
            agents = guard.store.agents(workspace)
    else:
        raise InvalidInput(f"{test_path} lists no agents; add `agents:` or pass --workspace")
    results = run_cases(bundle, cat, agents, tests.tests, workspace or WORKSPACE)
    _print_results(results)
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _print_results(results: list[CaseResult]) -> None:
    table = Table("", "test", "expected", "got", "because")
    for r in results:
        mark = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        expected = r.case.expect.value + (
            f" {r.case.reasons}" if r.case.reasons is not None else ""
        )
        got = r.effect.value + (f" {list(r.determining)}" if r.determining else "")
        table.add_row(mark, r.case.name, expected, got, r.detail)
    out.print(table)
    failed = sum(not r.passed for r in results)
    summary = f"{len(results) - failed} passed, {failed} failed"
    out.print(f"[red]{summary}[/]" if failed else f"[green]{summary}[/]")


@policy_app.command("fmt")
def policy_fmt(
    path: Path,
    check_only: Annotated[
        bool, typer.Option("--check", help="Only report unformatted files.")
    ] = False,
) -> None:
    """Format .cedar files in Cedar's canonical layout (comments kept)."""
    changed = format_files(path, check=check_only)
    verb = "would reformat" if check_only else "reformatted"
    for file in changed:
        out.print(f"{verb} {file}")
    if not changed:
        out.print("all policy files are formatted")
    if check_only and changed:
        raise typer.Exit(1)


@policy_app.command("backtest")
def policy_backtest(
    path: Path,
    workspace: Annotated[str, typer.Option(help="Whose recorded decisions to replay.")],
    since: Annotated[str, typer.Option(help="How far back: 7d, 12h, 30m or seconds.")] = "7d",
    examples: Annotated[int, typer.Option(help="Examples shown per policy.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay recorded decisions against a candidate bundle; list every one that would change.
    Exits 0 when nothing changes, 3 otherwise."""
    with _guard() as guard:
        candidate = guard.check_policies(workspace, path)
        report = guard.backtest(workspace, candidate, since=time.time() - _seconds(since))
    groups = report.by_policy()
    if as_json:
        document = {
            "replayed": report.replayed,
            "not_replayable": report.not_replayable,
            "redacted": report.redacted,
            "unfaithful": report.unfaithful,
            "changes": [dataclasses.asdict(c) for c in report.changes],
            "by_policy": {p: [c.decision_id for c in cs] for p, cs in groups.items()},
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        out.print(
            f"replayed {report.replayed} decisions of {workspace} since {since} "
            f"({report.not_replayable} decided before the policy stage); "
            f"{len(report.changes)} would change"
        )
        if report.redacted:
            out.print(
                f"{report.redacted} not replayable (arguments redacted): the workspace's "
                "audit setting cut their arguments from the record"
            )
        for policy, changes in groups.items():
            out.print(f"[bold]{escape(policy)}[/]: {len(changes)}")
            for c in changes[:examples]:
                out.print(
                    f"  {c.decision_id} {_when(c.ts)} {escape(c.agent)} {escape(c.tool)}: "
                    f"{c.before.value} -> {c.after.value} ({escape(c.reason)})"
                )
        if report.unfaithful:
            out.print(f"[yellow]{len(report.unfaithful)} replays differ from the record[/]")
    raise typer.Exit(3 if report.changes else 0)


def _seconds(text: str) -> float:
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError as exc:
        raise InvalidInput(f"--since takes 7d, 12h, 30m or seconds, not {text!r}") from exc


@policy_app.command("activate")
def policy_activate(
    path: Path,
    workspace: Annotated[str, typer.Option("--workspace", "-w")],
    shadow: Annotated[
        bool, typer.Option(help="Evaluate it beside the enforced bundle, deciding nothing.")
    ] = False,
) -> None:
    """Validate a policy folder against the workspace's catalogue and enforce it (or, with
    --shadow, record what it would decide)."""
    with _guard() as guard:
        version = guard.activate_policies(workspace, path, shadow=shadow)
        bundle = guard.check_policies(workspace, path)
    out.print(f"[green]{'shadow' if shadow else 'active'}[/] in {workspace}: {version}")
    _print_inert(bundle)


@policy_app.command("shadow-off")
def policy_shadow_off(workspace: str) -> None:
    """Stop evaluating the workspace's shadow bundle."""
    with _guard() as guard:
        guard.stop_shadow(workspace)
    out.print(f"no shadow bundle in {workspace}")


# -- workspaces, agents, tools -------------------------------------------------------------------


@workspace_app.command("add")
def workspace_add(
    name: str,
    tenant: Annotated[str, typer.Option()] = "default",
    trust_domain: Annotated[str, typer.Option()] = "tether.local",
) -> None:
    with _guard() as guard:
        guard.add_workspace(name, tenant=tenant, trust_domain=trust_domain)
    out.print(f"[green]added[/] workspace {name}")


@workspace_app.command("list")
def workspace_list() -> None:
    with _guard() as guard:
        workspaces = guard.store.workspaces()
    table = Table("workspace", "tenant", "trust domain", "policy version", "revision")
    for ws in workspaces:
        table.add_row(
            ws.name, ws.tenant, ws.trust_domain, ws.active_policy_version or "-", str(ws.revision)
        )
    out.print(table)


@agent_app.command("add")
def agent_add(
    workspace: str,
    name: str,
    kind: Annotated[str, typer.Option(help="planner, coder, monitor, ...")],
    owner: Annotated[str, typer.Option(help="The accountable human.")],
) -> None:
    with _guard() as guard:
        agent = guard.register_agent(workspace, name, kind=kind, owner=owner)
    out.print(f"[green]registered[/] {agent.spiffe_id}")


@agent_app.command("list")
def agent_list(workspace: str) -> None:
    with _guard() as guard:
        agents = guard.store.agents(workspace)
    table = Table("agent", "kind", "owner", "status", "SPIFFE id")
    for a in agents:
        status = a.status.value if a.status.value == "active" else f"[red]{a.status.value}[/]"
        table.add_row(a.name, a.kind, a.owner, status, a.spiffe_id)
    out.print(table)


@user_app.command("add")
def user_add(
    workspace: str,
    name: str,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="admin, approver, ... (repeat)")
    ] = None,
) -> None:
    with _guard() as guard:
        user = guard.add_user(workspace, name, role or ())
    out.print(f"[green]added[/] user {user.name} to {workspace}")


@user_app.command("list")
def user_list(workspace: str) -> None:
    with _guard() as guard:
        users = guard.store.users(workspace)
    table = _table("user", "roles")
    for u in users:
        table.add_row(u.name, ", ".join(u.roles) or "-")
    out.print(table)


@agent_app.command("suspend")
def agent_suspend(workspace: str, name: str) -> None:
    """The kill switch: every later call of the agent is denied, in every process."""
    with _guard() as guard:
        guard.suspend_agent(workspace, name)
    out.print(f"[red]suspended[/] {name} in {workspace}")


@agent_app.command("resume")
def agent_resume(workspace: str, name: str) -> None:
    with _guard() as guard:
        guard.resume_agent(workspace, name)
    out.print(f"[green]resumed[/] {name} in {workspace}")


@tool_app.command("add")
def tool_add(
    workspace: str,
    name: str,
    effect: Annotated[
        list[str], typer.Option("--effect", help="read, write, external, ... (repeat)")
    ],
    sink: Annotated[
        list[str] | None, typer.Option("--sink", help="A sink argument (repeat).")
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Argument JSON Schema: inline JSON or @file.json.")
    ] = None,
    output: Annotated[str, typer.Option(help="trusted or untrusted")] = "trusted",
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Add or replace a catalogue entry (use `tether apply` for a whole catalogue file)."""
    with _guard() as guard:
        guard.register_tool(
            workspace,
            name,
            effects=effect,
            sinks=sink or (),
            args_schema=_json_argument(schema) if schema else None,
            output=output,
            description=description,
        )
    out.print(f"[green]registered[/] tool {name} in {workspace}")


def _json_argument(value: str) -> Any:
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"--schema: {exc}") from exc


@tool_app.command("import")
def tool_import(
    source: Annotated[Path, typer.Argument(help="A JSON file with an MCP server's tools/list.")],
    prefix: Annotated[str, typer.Option(help="Prefix for the tool names, e.g. 'git/'.")] = "",
    out: Annotated[Path | None, typer.Option(help="Write the catalogue here, not stdout.")] = None,
) -> None:
    """Propose catalogue entries from an MCP tools/list, flagging what a person must review."""
    from tether.catalogue.mcp_import import propose, to_catalogue_yaml  # noqa: PLC0415

    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{source}: {exc}") from exc
    proposals = propose(document, workspace="import", prefix=prefix)
    text = to_catalogue_yaml(proposals, str(source))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    errors = Console(stderr=True, soft_wrap=True)
    flagged = sum(bool(p.flags) for p in proposals)
    refused = sum(p.tool is None for p in proposals)
    errors.print(
        f"{len(proposals)} tools proposed, {flagged} with points to review, "
        f"{refused} that cannot be registered as proposed" + (f"; written to {out}" if out else "")
    )


@tool_app.command("list")
def tool_list(workspace: str) -> None:
    with _guard() as guard:
        tools = guard.store.tools(workspace)
    table = Table("tool", "effects", "sinks", "output", "arguments")
    for t in tools:
        arguments = ", ".join(t.args_schema.get("properties", {}))
        table.add_row(t.name, ", ".join(t.effects), ", ".join(t.sinks), t.output.value, arguments)
    out.print(table)


# -- identity and credentials -------------------------------------------------------------------


@agent_app.command("keys")
def agent_keys(
    workspace: str,
    name: str,
    add: Annotated[
        Path | None, typer.Option(help="Register this public JWK (a JSON file).")
    ] = None,
    rotate: Annotated[
        Path | None,
        typer.Option(help="Register this public JWK; the others retire after --overlap."),
    ] = None,
    overlap: Annotated[float, typer.Option(help="Seconds retiring keys still verify.")] = 600.0,
    revoke: Annotated[str | None, typer.Option(help="Revoke the key with this kid.")] = None,
    generate: Annotated[
        Path | None,
        typer.Option(help="Make a key pair: the private JWK goes to this file, owner-only."),
    ] = None,
) -> None:
    """List an agent's keys, or add, rotate, revoke or generate one."""
    with _guard() as guard:
        now = time.time()

        def registered(kid: str, *, rotated: bool = False) -> None:
            guard.audit.event(
                "agent_key.registered",
                workspace=workspace,
                actor=None,
                subject=kid,
                agent=name,
                rotated=rotated,
            )

        if generate is not None:
            key = generate_key()
            _write_private(generate, key.as_dict(private=True))
            jwk = key.as_dict()
            registered(
                register_key(guard.store, workspace=workspace, agent=name, jwk=jwk, now=now).kid
            )
        if add is not None:
            jwk = _json_file(add)
            registered(
                register_key(guard.store, workspace=workspace, agent=name, jwk=jwk, now=now).kid
            )
        if rotate is not None:
            record = rotate_key(
                guard.store,
                workspace=workspace,
                agent=name,
                jwk=_json_file(rotate),
                now=now,
                overlap=overlap,
            )
            registered(record.kid, rotated=True)
        if revoke is not None:
            guard.credentials.revoke_agent_key(workspace, name, revoke)
        keys = guard.store.credentials.agent_keys(workspace, name)
    table = _table("kid", "status", "created", "retires")
    for k in keys:
        retires = _when(k.retire_at) if k.retire_at is not None else "-"
        table.add_row(k.kid, k.status.value, _when(k.created_at), retires)
    out.print(table)


@grant_app.command("add")
def grant_add(
    workspace: str,
    user: Annotated[str, typer.Option(help="The user who delegates.")],
    agent: Annotated[str, typer.Option(help="The agent that may act for them.")],
    tool: Annotated[list[str], typer.Option("--tool", help="A tool delegated (repeat).")],
    may_act: Annotated[
        list[str] | None,
        typer.Option("--may-act", help="An agent it may delegate further to (repeat)."),
    ] = None,
    max_ttl: Annotated[float, typer.Option(help="Longest task, in seconds.")] = 3600.0,
    expires_in: Annotated[float, typer.Option(help="Seconds until the grant ends.")] = 30 * 86400,
) -> None:
    with _guard() as guard:
        grant = guard.grant(
            workspace,
            user=user,
            agent=agent,
            tools=tool,
            max_ttl=max_ttl,
            may_act=may_act or (),
            expires_in=expires_in,
        )
    out.print(f"[green]granted[/] {grant.id}: {user} -> {agent}: {', '.join(grant.tools)}")


@grant_app.command("list")
def grant_list(workspace: str) -> None:
    with _guard() as guard:
        grants = guard.store.credentials.grants(workspace)
    table = _table("grant", "user", "agent", "tools", "may act", "max ttl", "expires", "status")
    now = time.time()
    for g in grants:
        status = "revoked" if g.revoked_at else ("expired" if now >= g.expires_at else "live")
        table.add_row(
            g.id,
            g.user,
            g.agent,
            ", ".join(g.tools),
            ", ".join(g.may_act) or "-",
            f"{g.max_ttl:.0f} s",
            _when(g.expires_at),
            status,
        )
    out.print(table)


@grant_app.command("revoke")
def grant_revoke(grant_id: str) -> None:
    """Revoke a grant: every token issued under it is refused from now on."""
    with _guard() as guard:
        guard.revoke_grant(grant_id)
    out.print(f"[red]revoked[/] {grant_id}")


@token_app.command("exchange")
def token_exchange(
    key: Annotated[Path, typer.Option(help="The acting agent's private JWK (a JSON file).")],
    agent_id: Annotated[str, typer.Option(help="The acting agent's SPIFFE id.")],
    grant: Annotated[str | None, typer.Option(help="Subject: a delegation grant id.")] = None,
    subject_token: Annotated[
        str | None, typer.Option(help="Subject: a parent task token, to delegate further.")
    ] = None,
    subject_key: Annotated[
        Path | None,
        typer.Option(help="With --subject-token: the private JWK its holder proves it with."),
    ] = None,
    tool: Annotated[
        list[str] | None, typer.Option("--tool", help="A tool to hold (repeat; default: all).")
    ] = None,
    request: Annotated[str, typer.Option(help="The user's request the task serves.")] = "",
    task_ttl: Annotated[float | None, typer.Option(help="Seconds the task may run.")] = None,
) -> None:
    """RFC 8693 token exchange, as an agent would do it; prints the response as JSON."""
    if (grant is None) == (subject_token is None):
        raise InvalidInput("give exactly one subject: --grant or --subject-token")
    if subject_token is not None and subject_key is None:
        raise InvalidInput("--subject-token needs --subject-key: delegating takes its key")
    private = _private_key(key)
    with _guard() as guard:
        settings = guard.credentials.settings
        assertion = make_assertion(
            private, agent_id=agent_id, audience=settings.issuer, now=time.time()
        )
        subject_proof = None
        if subject_token is not None and subject_key is not None:
            subject_proof = make_proof(
                _private_key(subject_key),
                htm="POST",
                htu=settings.token_url,
                now=time.time(),
                access_token=subject_token,
            )
        issued = guard.credentials.exchange(
            ExchangeRequest(
                subject_token=grant or subject_token or "",
                subject_token_type=GRANT_TOKEN_TYPE if grant else ACCESS_TOKEN_TYPE,
                subject_proof=subject_proof,
                actor_token=assertion,
                scope=" ".join(tool) if tool else None,
                request=request,
                task_ttl=task_ttl,
            )
        )
    sys.stdout.write(msgspec.json.encode(issued.response).decode() + "\n")


@token_app.command("inspect")
def token_inspect(token: str) -> None:
    """Verify a task token and print its claims, or why it is refused (exit 3)."""
    with _guard() as guard:
        try:
            claims = guard.credentials.authenticate(token)
        except CredentialRefused as exc:
            out.print(f"[red]refused[/] {escape(str(exc))}")
            raise typer.Exit(3) from exc
    out.print_json(msgspec.json.encode(claims).decode())


@token_app.command("revoke")
def token_revoke(
    jti: Annotated[str | None, typer.Option(help="One token (and all delegated from it).")] = None,
    task: Annotated[str | None, typer.Option(help="A task and every task under it.")] = None,
    agent: Annotated[
        str | None, typer.Option(help="WORKSPACE/AGENT: every token the agent holds.")
    ] = None,
    workspace: Annotated[str | None, typer.Option(help="Every token of a workspace.")] = None,
) -> None:
    """Revoke at once, in every process on this store."""
    chosen = [v for v in (jti, task, agent, workspace) if v is not None]
    if len(chosen) != 1:
        raise InvalidInput("give exactly one of --jti, --task, --agent, --workspace")
    with _guard() as guard:
        if jti is not None:
            guard.credentials.revoke_token(jti)
        elif task is not None:
            guard.revoke_task(task)
        elif agent is not None:
            ws, slash, name = agent.partition("/")
            if not slash or not ws or not name:
                raise InvalidInput(f"--agent takes WORKSPACE/AGENT, not {agent!r}")
            guard.credentials.revoke_agent(ws, name)
        elif workspace is not None:
            guard.credentials.revoke_workspace(workspace)
    out.print(f"[red]revoked[/] {chosen[0]}")


@keys_app.command("rotate")
def keys_rotate(
    lead: Annotated[
        float, typer.Option(help="Seconds the new key is published before it signs.")
    ] = 300.0,
) -> None:
    """Publish a new signing key; the current one retires once its tokens have expired."""
    with _guard() as guard:
        key = guard.credentials.keyring.rotate(time.time(), lead=lead)
        guard.audit.event(
            "signing_key.rotated",
            workspace=None,
            actor=None,
            subject=key.kid,
            activate_at=key.activate_at,
        )
    out.print(f"[green]published[/] {key.kid}, signing from {_when(key.activate_at)}")


@keys_app.command("new-master-key")
def keys_new_master_key() -> None:
    """Print a new random master key (base64url), for TETHER_MASTER_KEY or the file that
    TETHER_MASTER_KEY_FILE names: every replica on one database needs the same one."""
    sys.stdout.write(new_master_key() + "\n")


@keys_app.command("list")
def keys_list() -> None:
    with _guard() as guard:
        guard.credentials.keyring.signing_key(time.time())  # the first key, on a new store
        keys = guard.credentials.keyring.all_keys()
    table = _table("kid", "signs from", "retires")
    for k in keys:
        table.add_row(k.kid, _when(k.activate_at), _when(k.retire_at) if k.retire_at else "-")
    out.print(table)


@keys_app.command("jwks")
def keys_jwks() -> None:
    """The JWKS document downstream verifiers use."""
    with _guard() as guard:
        guard.credentials.keyring.signing_key(time.time())
        document = guard.credentials.jwks()
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@trust_app.command("add")
def trust_add(workspace: str, trust_domain: str, jwks: Path) -> None:
    """Trust JWT-SVIDs of a SPIFFE trust domain, verified with its JWKS bundle (a file)."""
    text = jwks.read_text()
    check_bundle(check_trust_domain(trust_domain), text)
    with _guard() as guard:
        guard.store.credentials.put_trust_bundle(workspace, trust_domain, text, time.time())
    out.print(f"[green]trusted[/] {trust_domain} in {workspace}")


@trust_app.command("map")
def trust_map(workspace: str, spiffe_id: str, agent: str) -> None:
    """Let the JWT-SVID of `spiffe_id` prove the identity of a registered agent."""
    with _guard() as guard:
        if agent not in {a.name for a in guard.store.agents(workspace)}:
            raise InvalidInput(f"agent {agent!r} is not registered in workspace {workspace!r}")
        guard.store.credentials.map_identity(workspace, spiffe_id, agent)
    out.print(f"[green]mapped[/] {spiffe_id} -> {agent}")


# -- approvals ----------------------------------------------------------------------------------


@approvals_app.command("list")
def approvals_list(
    workspace: Annotated[str | None, typer.Argument(help="Only this workspace.")] = None,
    status: Annotated[
        str, typer.Option(help="pending (default), approved, denied, expired, cancelled, used, all")
    ] = "pending",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The requests waiting for a person (or, with --status, the others)."""
    with _guard() as guard:
        if status == "pending":
            requests = guard.approvals.pending(workspace)
        else:
            wanted = () if status == "all" else (_status(status),)
            requests = guard.store.approvals.find(workspace=workspace, statuses=wanted)
    if as_json:
        for request in requests:
            sys.stdout.write(msgspec.json.encode(request).decode() + "\n")
        return
    table = _table("approval", "status", "agent", "for", "call", "asks", "expires")
    for r in requests:
        call = f"{r.tool} {shown_args(r.args)}"
        cells = (r.id, r.status.value, r.agent, r.user, call, " and ".join(r.approver_roles))
        table.add_row(*(_plain(c) for c in cells), _when(r.expires_at))
    out.print(table)


@approvals_app.command("show")
def approvals_show(approval_id: str) -> None:
    """One request: the exact call, why it needs approval, and every step of its life."""
    with _guard() as guard:
        request = guard.approvals.get(approval_id)
        events = guard.store.approvals.events(approval_id)
    out.print(f"[bold]{request.id}[/] {request.status.value}")
    who = f"{request.agent} for {request.user}, task {request.task_id}, {request.workspace}"
    out.print(f"  {_plain(who)}")
    out.print(f"  call: {_plain(request.tool)} {_plain(shown_args(request.args))}")
    out.print(f"  why: {_plain('; '.join(request.reasons))} ({', '.join(request.policies)})")
    out.print(f"  approver needs: {_plain(' and '.join(request.approver_roles))}")
    out.print(f"  expires: {_when(request.expires_at)}")
    for e in events:
        detail = f": {_plain(e.detail)}" if e.detail else ""
        out.print(f"  {_when(e.at)} {e.event} by {_plain(e.actor)}{detail}")


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="The user approving.")],
    comment: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Approve exactly that call, once, before the request expires."""
    _answer(approval_id, approver, comment, approve=True)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: str,
    approver: Annotated[str, typer.Option("--as", help="The user denying.")],
    comment: Annotated[str, typer.Option(help="Why, for the record (the agent sees it).")] = "",
) -> None:
    _answer(approval_id, approver, comment, approve=False)


def _answer(approval_id: str, approver: str, comment: str, *, approve: bool) -> None:
    with _guard() as guard:
        decide = guard.approve if approve else guard.deny
        request = decide(approval_id, approver=approver, comment=comment)
    said = "[green]approved[/]" if approve else "[red]denied[/]"
    out.print(f"{said} {request.id}: {_plain(f'{request.tool} {shown_args(request.args)}')}")


# -- audit --------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every record's hash and link, and every signed checkpoint; exit 3 if anything was
    edited, deleted, inserted, reordered or cut off, saying where."""
    with _guard() as guard:
        report = verify(guard.store, guard.credentials.keyring, workers=os.cpu_count() or 1)
    summary = (
        f"{report.records} records in {report.chains} chains, {report.checkpoints} checkpoints"
    )
    if report.intact:
        out.print(f"[green]intact[/]: {summary}")
        return
    out.print(f"[red]tampered[/]: {summary}; {len(report.problems)} problems:")
    for problem in report.problems:
        out.print(f"  {escape(problem)}")
    raise typer.Exit(3)


Filter = Annotated[str | None, typer.Option()]


@audit_app.command("events")
def audit_events(
    workspace: Filter = None,
    kind: Annotated[
        str | None, typer.Option(help="e.g. approval.approved, credential.revoked, or a prefix")
    ] = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h, 30m or seconds ago")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines, chain fields included.")
    ] = False,
) -> None:
    """What people and services did beside the decisions: approvals answered, credentials
    issued and revoked, grants and keys added; chained and verified like the decisions."""
    with _guard() as guard:
        since_ts = time.time() - _seconds(since) if since else None
        found = guard.store.audit.events(workspace=workspace, since=since_ts, limit=limit)
    events = [e for e in found if kind is None or e.kind == kind or e.kind.startswith(f"{kind}.")]
    if as_json:
        sys.stdout.writelines(msgspec.json.encode(e).decode() + "\n" for e in events)
        return
    table = _table("event", "when", "kind", "workspace", "actor", "subject", "detail")
    for e in events:
        cells = (e.id, _when(e.ts), e.kind, e.workspace or "-", e.actor or "-", e.subject or "-")
        table.add_row(*(_plain(str(c)) for c in cells), _plain(e.detail))
    out.print(table)


@audit_app.command("query")
def audit_query(
    workspace: Filter = None,
    agent: Filter = None,
    task: Filter = None,
    tool: Filter = None,
    effect: Annotated[str | None, typer.Option(help="allow, deny or approval_required")] = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h, 30m or seconds ago")] = None,
    until: Annotated[str | None, typer.Option(help="7d, 12h, 30m or seconds ago")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    disagreements: Annotated[
        bool, typer.Option(help="Only where the shadow bundle would have decided otherwise.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines of whole records.")] = False,
) -> None:
    """Recorded decisions, newest first."""
    records = _records(
        workspace, agent, task, tool, effect, since, until, None if disagreements else limit
    )
    if disagreements:
        records = [r for r in records if shadow_disagrees(r)][:limit]
    if as_json:
        for record in records:
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        return
    table = _table("decision", "when", "workspace", "agent", "tool", "effect", "why")
    for r in records:
        why = "; ".join(reason["text"] for reason in json.loads(r.reasons))
        cells = (r.id, _when(r.ts), r.workspace or "-", r.agent or "-", r.tool, r.effect, why)
        table.add_row(*(_plain(str(c)) for c in cells))
    out.print(table)


@audit_app.command("export")
def audit_export(
    output: Annotated[
        Path | None, typer.Argument(help="The JSON Lines file to write ('-': stdout).")
    ] = None,
    workspace: Filter = None,
    agent: Filter = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h, 30m or seconds ago")] = None,
    otlp: Annotated[
        bool,
        typer.Option(
            "--otlp",
            help="Send OpenTelemetry logs instead, to OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or "
            "OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318).",
        ),
    ] = False,
    otlp_endpoint: Annotated[
        str | None, typer.Option(help="Send OpenTelemetry logs instead, to this OTLP/HTTP URL.")
    ] = None,
) -> None:
    """Every matching record, oldest first: one JSON object a line (hash chain fields included,
    so the export can be verified on its own), or one OpenTelemetry log each (without the
    arguments and context; docs/audit.md)."""
    if (output is None) == (not otlp and otlp_endpoint is None):
        raise InvalidInput("give a file to write, or --otlp / --otlp-endpoint (not both)")
    records = reversed(_records(workspace, agent, None, None, None, since, None, None))
    if output is None:
        from tether.audit import otlp as otel  # noqa: PLC0415 (only this command needs the SDK)

        count = otel.export(records, endpoint=otlp_endpoint)
        out.print(f"[green]sent[/] {count} records to {otel.logs_url(otlp_endpoint)}")
        return
    lines = (msgspec.json.encode(r).decode() + "\n" for r in records)
    if str(output) == "-":
        sys.stdout.writelines(lines)
        return
    count = 0
    with output.open("w") as file:
        for line in lines:
            file.write(line)
            count += 1
    out.print(f"[green]exported[/] {count} records to {output}")


@audit_app.command("tail")
def audit_tail(
    workspace: Filter = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 0.5,
    after: Annotated[
        int | None, typer.Option(help="Start after this row of the log (default: its end).")
    ] = None,
) -> None:
    """Decisions as they are recorded, by any process on the store (Ctrl-C to stop)."""
    shown = 0
    with _guard() as guard:
        last = guard.store.audit.last_seq() if after is None else after
        while count is None or shown < count:
            for seq, r in guard.store.audit.after(last):
                last = seq
                if workspace is not None and r.workspace != workspace:
                    continue
                why = "; ".join(reason["text"] for reason in json.loads(r.reasons))
                line = f"{_when(r.ts)} {r.effect:17} {r.agent or '-'} {r.tool}: {why}"
                out.print(_plain(line), highlight=False)
                shown += 1
                if count is not None and shown >= count:
                    return
            time.sleep(interval)


@audit_app.command("explain")
def audit_explain(decision_id: str) -> None:
    """One decision: what was asked, what decided it (with the policies' text), the context the
    policies saw, and its place in the hash chain."""
    with _guard() as guard:
        record = guard.store.decision(decision_id)
        if record is None:
            raise NotFound(f"no decision {decision_id!r}")
        bundle = (
            guard.store.bundle(record.workspace, record.policy_version)
            if record.workspace and record.policy_version
            else None
        )
    out.print(f"[bold]{record.id}[/] {record.effect} at {_when(record.ts)}")
    who = f"{record.agent or '-'} for {record.user or '-'} in {record.workspace or '-'}"
    out.print(f"  {_plain(who)}, task {record.task_id or '-'}")
    out.print(f"  call: {_plain(record.tool)} {_plain(record.args)}")
    out.print(f"  decided at the {record.stage} stage, policy version {record.policy_version}")
    statements = policy_sources(bundle.files) if bundle is not None else {}
    for reason in json.loads(record.reasons):
        out.print(f"  why: {_plain(reason['text'])}")
        source = statements.get(reason.get("policy") or "")
        if source is not None:
            out.print(f"    [dim]{_plain(source)}[/]")
    if record.approval_id:
        out.print(f"  approval: {record.approval_id}")
    if record.shadow:
        out.print(f"  shadow: {_plain(record.shadow)}")
    intact = record_hash(record) == record.hash
    out.print(
        f"  chain: {record.chain} #{record.chain_seq}, hash {record.hash} "
        + ("[green](matches the record)[/]" if intact else "[red](does NOT match the record)[/]")
    )
    if record.context:
        out.print("  context the policies saw:")
        out.print_json(record.context)


def _records(
    workspace: str | None,
    agent: str | None,
    task: str | None,
    tool: str | None,
    effect: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
) -> list[DecisionRecord]:
    now = time.time()
    with _guard() as guard:
        return guard.store.decisions(
            workspace=workspace,
            agent=agent,
            task_id=task,
            tool=tool,
            effect=effect,
            since=now - _seconds(since) if since else None,
            until=now - _seconds(until) if until else None,
            limit=limit,
        )


@app.command("review")
def review_command(
    workspace: str,
    window: Annotated[str, typer.Option(help="How far back: 30d, 12h or seconds.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of Markdown.")] = False,
) -> None:
    """Access review: each agent's grants against its use, idle grants, silent policies,
    ownerless agents and suspended ones still holding grants (Markdown, or JSON)."""
    now = time.time()
    with _guard() as guard:
        if guard.store.workspace(workspace) is None:
            raise NotFound(f"workspace {workspace!r} does not exist")
        result = review(guard.store, workspace, since=now - _seconds(window), until=now)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    else:
        sys.stdout.write(to_markdown(result))


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign every chain's head now."""
    with _guard() as guard:
        statement = write_checkpoint(guard.store, guard.credentials.keyring, time.time())
    out.print(f"[green]signed[/] the heads of {len(statement['chains'])} chains")


def _status(value: str) -> ApprovalStatus:
    try:
        return ApprovalStatus(value)
    except ValueError as exc:
        known = ", ".join(s.value for s in ApprovalStatus)
        raise InvalidInput(f"--status must be one of {known}, or all") from exc


def _plain(text: str) -> str:
    """Agent-written text for a terminal: markup escaped, and control characters (which could
    retitle the terminal, clear it or overwrite a line) shown as escapes, not obeyed."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return escape(shown)


def _table(*headers: str) -> Table:
    """Ids and keys are copied from these tables: fold long cells, never cut them."""
    table = Table()
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _private_key(path: Path) -> ECKey:
    try:
        return ECKey.import_key(_json_file(path))
    except (ValueError, TypeError, JoseError) as exc:
        raise InvalidInput(f"{path} is not a private EC JWK: {exc}") from exc


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


def _write_private(path: Path, jwk: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(jwk, file)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


# -- the HTTP service ------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL agents reach this service at (default: http://HOST:PORT)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="A database URL instead of the home's SQLite file.")
    ] = None,
    durability: Annotated[
        Durability | None, typer.Option(help="Of the decision log (docs/audit.md).")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Calls a second each agent may make (per worker).")
    ] = 100.0,
    burst: Annotated[float, typer.Option(help="Calls an agent may make at once.")] = 200.0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (replicas).")] = 1,
) -> None:
    """Serve the HTTP API (docs/api.md) on this store, until interrupted."""
    from tether.server.serving import Serving, run  # noqa: PLC0415 - only serving needs it

    public = (public_url or f"http://{host}:{port}").rstrip("/")
    config = Serving(
        home=str(state.home),
        public_url=public,
        db=db,
        durability=durability,
        rate=rate,
        burst=burst,
    )
    out.print(
        f"[green]serving[/] {public} (OpenAPI: {public}/openapi.json; console: {public}/console)",
        highlight=False,
    )
    run(config, host=host, port=port, workers=workers)


# What a person holds, per workspace: for admin tokens and console accounts alike.
Roles = Annotated[
    list[str],
    typer.Option(
        help="ROLE@WORKSPACE (repeat): admin, policy-author, approver or auditor; "
        "@* for every workspace."
    ),
]


@admin_token_app.command("create")
def admin_token_create(
    name: Annotated[str, typer.Argument(help="Whose token: a user of the workspaces it covers.")],
    role: Roles,
    days: Annotated[float, typer.Option(help="How long it lives.")] = 90.0,
) -> None:
    """Make an admin token; it is shown once, and only its hash is kept."""
    roles = _roles(role)
    with _guard() as guard:
        token, record = admin_tokens.issue(
            guard.store, name=name, roles=roles, lifetime=days * 86400, now=time.time()
        )
    out.print(f"[green]made[/] {record.id} for {record.name}, until {_when(record.expires_at)}")
    print(token)


def _roles(items: list[str]) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for item in items:
        held, _, workspace = item.partition("@")
        if not workspace:
            raise InvalidInput(f"--role {item!r}: write ROLE@WORKSPACE (or ROLE@*)")
        roles.setdefault(workspace, []).append(held)
    return roles


@console_app.command("add-user")
def console_add_user(
    name: Annotated[str, typer.Argument(help="Who signs in: a user of the workspaces covered.")],
    role: Roles,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Add a console account (or give one a new password and roles); only the password's
    Argon2id hash is kept."""
    from tether.server import console_auth  # noqa: PLC0415 - only the console needs it

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _guard() as guard:
        console_auth.add_account(guard.store, name, password, _roles(role), time.time())
    out.print(f"[green]{name}[/] may sign in to the console")


@console_app.command("disable-user")
def console_disable_user(name: str) -> None:
    """Stop a console account from signing in, and end its sessions now."""
    from tether.server import console_auth  # noqa: PLC0415 - only the console needs it

    with _guard() as guard:
        console_auth.disable_account(guard.store, name, time.time())
    out.print(f"[green]{name}[/] can no longer sign in to the console")


@admin_token_app.command("list")
def admin_token_list() -> None:
    with _guard() as guard:
        records = guard.store.admin_tokens.all()
    table = _table("id", "name", "roles", "expires", "revoked")
    for r in records:
        roles = "; ".join(f"{w}: {', '.join(held)}" for w, held in sorted(r.roles.items()))
        revoked = _when(r.revoked_at) if r.revoked_at is not None else "-"
        table.add_row(r.id, _plain(r.name), roles, _when(r.expires_at), revoked)
    out.print(table)


@admin_token_app.command("revoke")
def admin_token_revoke(token_id: str) -> None:
    with _guard() as guard:
        if not guard.store.admin_tokens.revoke(token_id, time.time()):
            raise NotFound(f"no live admin token {token_id!r}")
    out.print(f"[green]revoked[/] {token_id}")


def main() -> None:
    """Entry point: run the app and turn every error into one line and an exit code."""
    try:
        app()
    except TetherError as exc:
        _fail(str(exc), 1)
    except (KeyboardInterrupt, BrokenPipeError):
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("TETHER_DEBUG"):
            raise
        _fail(f"internal error ({type(exc).__name__}: {exc}); set TETHER_DEBUG=1 for details", 70)


def _fail(message: str, code: int) -> None:
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )
    sys.exit(code)


# -- the MCP gateway (docs/gateway.md) -----------------------------------------------------------

GatewayFile = Annotated[Path, typer.Argument(help="The gateway configuration (gateway.yaml).")]


@gateway_app.command("serve")
def gateway_serve(
    config: GatewayFile,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8808,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL agents reach the gateway at (default: http://HOST:PORT)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="A database URL instead of the home's SQLite file.")
    ] = None,
) -> None:
    """Serve the gateway over streamable HTTP at PUBLIC_URL/mcp, until interrupted. Agents
    present their DPoP-bound task tokens (docs/gateway.md)."""
    from tether.gateway.http import Serving, run  # noqa: PLC0415 - only the gateway needs it

    public = (public_url or f"http://{host}:{port}").rstrip("/")
    serving = Serving(config=str(config.resolve()), home=str(state.home), public_url=public, db=db)
    out.print(f"[green]gateway[/] {public}/mcp", highlight=False)
    run(serving, host=host, port=port)


@gateway_app.command("stdio")
def gateway_stdio(
    config: GatewayFile,
    agent: Annotated[str, typer.Option(help="The agent the client is.")],
    user: Annotated[str, typer.Option(help="The user it works for (who delegated the tools).")],
    tools: Annotated[
        list[str], typer.Option(help="Tools of the task (repeat); 'git.*' takes an upstream's.")
    ],
    request: Annotated[str, typer.Option(help="What the user asked for.")] = "",
    ttl: Annotated[
        float, typer.Option(help="Seconds the task lasts (at most the grant's max_ttl).")
    ] = 900.0,
) -> None:
    """Serve one client over stdin/stdout, in a task this command starts as AGENT for USER.
    Put this command in an MCP client's server list (docs/gateway.md)."""
    import anyio  # noqa: PLC0415

    from tether.gateway.config import load_config  # noqa: PLC0415
    from tether.gateway.stdio import serve_stdio  # noqa: PLC0415

    settings = load_config(config)
    with _guard() as guard:

        def open_task() -> TaskHandle:
            catalogue = [t.name for t in guard.tools(settings.workspace)]
            return guard.task(
                workspace=settings.workspace,
                agent=agent,
                user=user,
                request=request or f"MCP client session through the gateway ({config.name})",
                tools=[n for pattern in tools for n in _matching(pattern, catalogue)],
                ttl=ttl,
            )

        anyio.run(serve_stdio, guard, settings, open_task)


def _matching(pattern: str, names: list[str]) -> list[str]:
    if not pattern.endswith("*"):
        return [pattern]
    found = [n for n in names if n.startswith(pattern[:-1])]
    if not found:
        raise InvalidInput(f"no catalogue tool matches {pattern!r}")
    return found


@gateway_app.command("tools")
def gateway_tools(config: GatewayFile) -> None:
    """Connect to each upstream and show which of its tools are offered and which are withheld
    (new or changed since reviewed), importing the tools of an upstream seen for the first
    time."""
    import anyio  # noqa: PLC0415

    from tether.gateway.config import load_config  # noqa: PLC0415
    from tether.gateway.review import reviewed  # noqa: PLC0415

    settings = load_config(config)
    with _guard() as guard:
        reviews = anyio.run(reviewed, guard, settings)
    table = _table("upstream", "tool", "state")
    for name, result in reviews.items():
        if isinstance(result, str):
            table.add_row(name, "-", f"unavailable: {_plain(result)}")
            continue
        for tool in sorted(result.offered):
            table.add_row(name, tool, "offered")
        for tool, why in sorted(result.flagged.items()):
            table.add_row(name, tool, f"[red]withheld[/]: {_plain(why)}")
    out.print(table)


@gateway_app.command("accept")
def gateway_accept(
    config: GatewayFile,
    upstream: Annotated[str, typer.Argument(help="The upstream whose tools to accept.")],
    tools: Annotated[
        list[str] | None, typer.Argument(help="Its tools to accept (default: every withheld one).")
    ] = None,
) -> None:
    """Accept an upstream's current definitions of tools withheld as new or changed: their
    description and input schema become the reviewed ones (effects and the rest are kept)."""
    import anyio  # noqa: PLC0415

    from tether.gateway.config import load_config  # noqa: PLC0415
    from tether.gateway.review import accepted  # noqa: PLC0415

    settings = load_config(config)
    with _guard() as guard:
        names = anyio.run(accepted, guard, settings, upstream, tools or [])
    for name in names:
        out.print(f"[green]accepted[/] {name}")
    if not names:
        out.print("nothing withheld to accept")


# -- evaluations (docs/evaluation.md) -------------------------------------------------------------


@eval_app.command("agentdojo")
def eval_agentdojo(
    suite: Annotated[str, typer.Option(help="workspace, banking, travel or slack.")],
    workspace: Annotated[
        Path | None,
        typer.Option(help="Your workspace folder for the suite (default: Tether's own)."),
    ] = None,
    approvals: Annotated[
        str, typer.Option(help="none, oracle, or both: who answers approval requests.")
    ] = "both",
    baseline: Annotated[
        bool, typer.Option(help="Add the baseline policy pack to the folder's policies.")
    ] = True,
    allow_all: Annotated[
        bool, typer.Option(help="One policy that allows everything: checks the harness.")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    skeleton: Annotated[
        Path | None, typer.Option(help="Write a starting workspace folder for the suite; exit.")
    ] = None,
) -> None:
    """Replay AgentDojo's prompt-injection attacks, with no model, through Tether: attack
    success rate, utility and approval prompts, per approval mode."""
    try:
        from tether.eval.agentdojo import folder, run, suites  # noqa: PLC0415
        from tether.eval.agentdojo.replay import Approvals  # noqa: PLC0415
        from tether.eval.agentdojo.report import as_json, table  # noqa: PLC0415

    except ImportError as exc:
        raise InvalidInput(
            f"AgentDojo is not installed ({exc.name}): pip install 'tether[eval]'"
        ) from exc
    loaded = suites.load(suite)
    if skeleton is not None:
        folder.skeleton(loaded, skeleton)
        out.print(
            f"wrote {skeleton}: review catalogue.yaml (REVIEW lines) and policies/", markup=False
        )
        return
    modes = {
        "none": [Approvals.NONE],
        "oracle": [Approvals.ORACLE],
        "both": [Approvals.NONE, Approvals.ORACLE],
    }.get(approvals)
    if modes is None:
        raise InvalidInput(f"--approvals {approvals!r}: none, oracle or both")
    chosen = workspace or folder.ours(suite)
    if chosen is None:
        raise InvalidInput(
            f"Tether has no workspace folder for the {suite} suite (it is held out): write one "
            f"(start with --skeleton DIR) and pass it with --workspace DIR"
        )
    errors = Console(stderr=True, soft_wrap=True)
    result = run.evaluate(
        loaded,
        chosen,
        approvals=modes,
        baseline=baseline,
        allow_all=allow_all,
        progress=lambda line: errors.print(line, highlight=False, markup=False),
    )
    policies = "allow-all" if allow_all else f"{chosen}" + (" + baseline" if baseline else "")
    out.print(
        table(f"AgentDojo {suites.VERSION}, {suite} suite, policies: {policies}", result.summaries),
        highlight=False,
        markup=False,  # a folder's path is not markup
    )
    if result.patched:
        out.print(
            "with the package's own v1.1.2 fixes, which 0.1.35 leaves out, in: "
            + ", ".join(result.patched),
            highlight=False,
            markup=False,
        )
    if json_out is not None:
        document = {
            "suite": suite,
            "version": suites.VERSION,
            "policies": policies,
            "patched_by_the_packages_own_fixes": list(result.patched),
            "runs": [as_json(s, result.episodes[s.approvals]) for s in result.summaries],
        }
        json_out.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
