"""A planner and a coder working on a real git repository through the Tether MCP gateway,
scripted (no LLM): the calls a model would make, and what Tether decides of each.

    python examples/coding-agent/run.py

It makes everything it needs in a temporary folder: a repository with an `origin`, a Tether
home (workspace acme: agents planner and coder, users alice and bob), and `tether gateway
serve` in front of mcp-server-git and git_remote.py (gateway.yaml). Alice delegates to both
agents; each agent works in a task of its own and reaches the gateway with the official MCP
client, its task token and a DPoP proof per request (TaskAuth). Here the agents' tasks are
started by an embedded Guard on the gateway's store; agents elsewhere start theirs with
`Guard.remote(url)` against `tether serve`, and the rest is the same.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tether import Guard
from tether.gateway.client_auth import TaskAuth
from tether.sdk.handle import TaskHandleBase
from tether.store import Store

HERE = Path(__file__).resolve().parent
FAKE_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key, split so scanners pass


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def repositories(folder: Path) -> Path:
    """`origin.git` (bare) with branches main and old-feature, and a clone to work in."""
    origin, repo = folder / "origin.git", folder / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(repo)], check=True, capture_output=True)
    git(repo, "config", "user.email", "coder@acme.com")
    git(repo, "config", "user.name", "coder")
    (repo / "README.md").write_text("# service\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "branch", "old-feature")
    git(repo, "push", "-q", "origin", "old-feature")
    return repo


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def connect(url: str, task: TaskHandleBase) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(auth=TaskAuth(task), timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, who: str, tool: str, **args: object) -> types.CallToolResult:
    result = await session.call_tool(tool, args)
    text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
    if not result.is_error:
        print(f"{who}: {tool} allowed")
    else:
        print(f"{who}: {tool} refused: {text.split(' (decision')[0]}")
    return result


async def planner(url: str, task: TaskHandleBase, repo: Path) -> None:
    async with connect(url, task) as session:
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        print(f"planner sees {', '.join(tools)}")
        await call(session, "planner", "git.git_log", repo_path=str(repo))
        await call(session, "planner", "git.git_status", repo_path=str(repo))
        await call(session, "planner", "git.git_commit", repo_path=str(repo), message="plan")


async def coder(url: str, task: TaskHandleBase, repo: Path) -> None:
    async with connect(url, task) as session:
        path = str(repo)
        await call(session, "coder", "git.git_create_branch", repo_path=path, branch_name="config")
        await call(session, "coder", "git.git_checkout", repo_path=path, branch_name="config")
        (repo / "config.py").write_text(f'AWS_KEY = "{FAKE_KEY}"  # "just for now"\n')
        await call(session, "coder", "git.git_add", repo_path=path, files=["config.py"])
        await call(session, "coder", "git.git_diff_staged", repo_path=path)
        await call(session, "coder", "git.git_commit", repo_path=path, message="add config")
        await call(session, "coder", "remote.git_push", repo_path=path, branch="config")


async def tidy(url: str, task: TaskHandleBase, repo: Path, guard: Guard) -> None:
    async with connect(url, task) as session:
        args = {"repo_path": str(repo), "branch": "old-feature"}
        first = await call(session, "coder", "remote.git_delete_branch", **args)
        approval = (first.meta or {}).get("tether/decision", {}).get("approval_id")
        guard.approve(approval, approver="bob", comment="old-feature is merged")
        print("bob approves the deletion")
        await call(session, "coder", "remote.git_delete_branch", **args)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        repo = repositories(root)
        home = root / "home"
        guard = Guard(Store.at_home(home), shared_tasks=True)
        guard.add_workspace("acme")
        guard.register_agent("acme", "planner", kind="planner", owner="alice@acme.com")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.add_user("acme", "alice", roles=["developer"])
        guard.add_user("acme", "bob", roles=["admin"])
        env = {**os.environ, "PYTHON": sys.executable, "REPO": str(repo), "EXAMPLE": str(HERE)}
        tether = str(Path(sys.executable).with_name("tether"))
        config = str(HERE / "gateway.yaml")
        # The gateway imports each new upstream's tools into the catalogue (then policies can
        # name them) and withholds any tool whose definition later changes.
        subprocess.run(
            [tether, "--home", str(home), "gateway", "tools", config],
            env=env,
            check=True,
            capture_output=True,
        )
        guard.activate_policies("acme", HERE / "policies")
        reads = ["git.git_log", "git.git_status"]
        guard.grant("acme", user="alice", agent="planner", tools=reads)
        guard.grant(
            "acme", user="alice", agent="coder", tools=[t.name for t in guard.tools("acme")]
        )
        port = free_port()
        gateway = subprocess.Popen(
            [tether, "--home", str(home), "gateway", "serve", config, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/mcp"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx2.get(url, timeout=1)
                    break
                except httpx2.TransportError:
                    assert gateway.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            coding = [
                "git.git_create_branch",
                "git.git_checkout",
                "git.git_add",
                "git.git_diff_staged",
                "git.git_commit",
                "remote.git_push",
            ]
            with guard.task(
                workspace="acme",
                agent="planner",
                user="alice",
                request="plan the config work",
                tools=reads,
            ) as task:
                anyio.run(planner, url, task, repo)
            with guard.task(
                workspace="acme",
                agent="coder",
                user="alice",
                request="add a config module",
                tools=coding,
            ) as task:
                anyio.run(coder, url, task, repo)
            with guard.task(
                workspace="acme",
                agent="coder",
                user="alice",
                request="delete merged branches",
                tools=["remote.git_delete_branch"],
            ) as task:
                anyio.run(tidy, url, task, repo, guard)
            remote = git(repo, "ls-remote", "--heads", "origin").split()
            print(f"origin has {', '.join(sorted(r.rsplit('/', 1)[-1] for r in remote[1::2]))}")
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
            guard.close()


if __name__ == "__main__":
    main()
