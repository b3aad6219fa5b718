"""What the gateway's tests share: a git repository, a home whose workspace fronts real MCP
servers through the gateway (served over HTTP by uvicorn from a thread), and an MCP client
speaking to it with an agent's task token."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from served import serve_in_thread

from tether import Guard
from tether.gateway.client_auth import TaskAuth
from tether.gateway.config import load_config
from tether.gateway.http import Serving, build, guard_for
from tether.sdk.handle import TaskHandleBase
from tether.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent
FILESYSTEM_SERVER = ROOT / ".node" / "node_modules" / "@modelcontextprotocol" / "server-filesystem"

POLICIES = {
    "gateway.cedar": """
@id("reads")
@reason("reading the repository is fine")
permit (principal, action in Action::"read", resource);

@id("commits")
permit (principal, action == Action::"git.git_commit", resource);

@id("no-secrets-in-commits")
@reason("a commit message must not carry a secret")
forbid (principal, action == Action::"git.git_commit", resource)
when { context.args.message like "*AKIA*" };

@id("branches")
permit (principal, action == Action::"git.git_create_branch", resource);

@id("branches-need-approval")
@approval("admin")
@reason("a new branch needs an admin's approval")
forbid (principal, action == Action::"git.git_create_branch", resource)
unless { context.approved };

@id("resets")
permit (principal, action == Action::"git.git_reset", resource);

@id("resets-need-approval")
@approval("admin")
@reason("a reset destroys work: an admin approves it")
forbid (principal, action == Action::"git.git_reset", resource)
unless { context.approved };
""",
}


FILE_POLICIES = {
    "files.cedar": """
@id("reads")
permit (principal, action in Action::"read", resource);

@id("writes")
permit (principal, action == Action::"files.write_file", resource);

@id("no-keys-on-disk")
@reason("a private key must not be written to the shared folder")
forbid (principal, action == Action::"files.write_file", resource)
when { context.args.content like "*PRIVATE KEY*" };
""",
}


def filesystem_upstream(folder: Path) -> str:
    """The configuration of the npm reference filesystem server (`make .node/.installed`)."""
    server = FILESYSTEM_SERVER / "dist" / "index.js"
    assert server.exists(), f"{server} is missing: run `make .node/.installed`"
    return f"""  files:
    command: [node, {server}, {folder}]
    timeout: 20
"""


def git_repository(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "dev@acme.com"],
        ["config", "user.name", "dev"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "first"], cwd=path, check=True)
    return path


def branches(repo: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "branch", "--format=%(refname:short)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def write_config(folder: Path, repo: Path, *, extra: str = "", elicit: bool = False) -> Path:
    """The gateway's configuration: upstream git (mcp-server-git on `repo`), and `extra`."""
    config = folder / "gateway.yaml"
    config.write_text(
        f"""workspace: acme
approvals: {{elicit: {str(elicit).lower()}}}
upstreams:
  git:
    command: [{sys.executable}, -m, mcp_server_git, --repository, {repo}]
    timeout: 20
{extra}"""
    )
    return config


@dataclass
class Gateway:
    url: str  # the MCP endpoint
    guard: Guard  # the test's own Guard on the same store: agents' side and admin's
    server_guard: Guard
    app: Any

    @asynccontextmanager
    async def client(self, task: TaskHandleBase, **session: Any) -> AsyncIterator[ClientSession]:
        async with (
            httpx2.AsyncClient(auth=TaskAuth(task), timeout=30) as http,
            streamable_http_client(self.url, http_client=http) as (read, write),
            ClientSession(read, write, **session) as client,
        ):
            await client.initialize()
            yield client


def prepare(home: Path) -> Guard:
    """The workspace: agent coder, users alice (who delegates; admin) and bob (admin)."""
    guard = Guard(Store.at_home(home), shared_tasks=True)
    guard.add_workspace("acme")
    guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
    guard.register_agent("acme", "planner", kind="planner", owner="alice@acme.com")
    guard.add_user("acme", "alice", roles=["admin"])
    guard.add_user("acme", "bob", roles=["admin"])
    return guard


def coder_task(guard: Guard, tools: list[str], request: str = "") -> TaskHandleBase:
    """A task of agent coder for alice, with `tools`."""
    return guard.task(workspace="acme", agent="coder", user="alice", request=request, tools=tools)


@contextmanager
def gateway(
    home: Path,
    config: Path,
    guard: Guard,
    policies: dict[str, str] | None = None,
    *,
    public: str | None = None,
) -> Iterator[Gateway]:
    """The gateway on `home`'s store, serving `config`, until the block ends; once it has
    imported its upstreams' tools, `policies` (default POLICIES) are activated and alice
    delegates all of them."""
    made: list[Guard] = []

    def app(listens: str) -> Any:
        url = public or listens  # where agents reach it (a proxy in front, say)
        serving = Serving(config=str(config), home=str(home), public_url=url)
        made.append(guard_for(serving))
        return build(made[0], load_config(config), public_url=url, on_stop=made[0].close)

    listens, served_app, stop = serve_in_thread(app)
    try:
        tools = [t.name for t in guard.tools("acme")]
        guard.activate_policies("acme", policies or POLICIES)
        guard.grant("acme", user="alice", agent="coder", tools=tools)
        yield Gateway(listens + "/mcp", guard, made[0], served_app)
    finally:
        stop()
