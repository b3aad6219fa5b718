"""The MCP gateway with real MCP servers behind it (mcp-server-git, a misbehaving fixture) and the
official MCP client in front, over streamable HTTP: what an agent sees and may do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import mcp_types as types
import pytest
from gateway_env import (
    FILE_POLICIES,
    FIXTURES,
    POLICIES,
    branches,
    coder_task,
    filesystem_upstream,
    gateway,
    git_repository,
    prepare,
    write_config,
)
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from served import served

from tether import Guard
from tether.model import Effect


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repository(tmp_path / "repo")


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def test_an_agent_sees_only_its_tasks_tools_and_allowed_calls_reach_git(
    home: Path, repo: Path
) -> None:
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        task = coder_task(guard, ["git.git_status", "git.git_log"], "look at the repository")

        async def session() -> tuple[list[str], types.CallToolResult]:
            async with gw.client(task) as client:
                listed = await client.list_tools()
                status = await client.call_tool("git.git_status", {"repo_path": str(repo)})
                return [t.name for t in listed.tools], status

        names, status = anyio.run(session)
        assert sorted(names) == ["git.git_log", "git.git_status"]
        assert not status.is_error and "On branch main" in _text(status)
        calls = gw.server_guard.task_state(task.id).history  # the state the gateway decides on
        assert [c.tool for c in calls] == ["git.git_status"]
        assert calls[0].effect is Effect.ALLOW
        task.end()
    guard.close()


def test_a_denied_call_is_a_tool_error_with_the_reason_and_never_reaches_git(
    home: Path, repo: Path
) -> None:
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        (repo / "notes.txt").write_text("key\n")
        subprocess.run(["git", "add", "notes.txt"], cwd=repo, check=True)
        task = coder_task(guard, ["git.git_commit", "git.git_status"], "commit the notes")

        async def session() -> types.CallToolResult:
            async with gw.client(task) as client:
                return await client.call_tool(
                    "git.git_commit",
                    {"repo_path": str(repo), "message": "add key AKIAIOSFODNN7EXAMPLE"},
                )

        result = anyio.run(session)
        assert result.is_error
        assert "a commit message must not carry a secret" in _text(result)
        assert result.meta is not None and result.meta["tether/decision"]["effect"] == "deny"
        log = subprocess.run(
            ["git", "log", "--oneline"], cwd=repo, capture_output=True, text=True, check=True
        )
        assert "AKIA" not in log.stdout and len(log.stdout.splitlines()) == 1
        task.end()
    guard.close()


def test_approval_through_elicitation_lets_exactly_that_call_through(
    home: Path, repo: Path
) -> None:
    guard = prepare(home)
    asked: list[str] = []

    async def approve(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": "approve"})

    async def refuse(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    with gateway(home, write_config(home.parent, repo, elicit=True), guard) as gw:
        task = coder_task(guard, ["git.git_create_branch"], "make branches")

        async def create(branch: str, answer: Any) -> types.CallToolResult:
            async with gw.client(task, elicitation_callback=answer) as client:
                return await client.call_tool(
                    "git.git_create_branch", {"repo_path": str(repo), "branch_name": branch}
                )

        allowed = anyio.run(create, "feature", approve)
        refused = anyio.run(create, "other", refuse)
        assert not allowed.is_error, _text(allowed)
        assert asked and "git.git_create_branch" in asked[0] and "feature" in asked[0]
        assert refused.is_error and "denied" in _text(refused)
        assert sorted(branches(repo)) == ["feature", "main"]
        task.end()
    guard.close()


def test_approval_by_retry_when_the_client_cannot_be_asked(home: Path, repo: Path) -> None:
    """Elicitation off (the default: the gateway cannot tell a person's answer from the
    agent's), and alice may not approve her own agent's destructive call anyway: the error names
    the approval; once bob approves, the same call goes through, once."""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        task = coder_task(guard, ["git.git_reset"], "reset")
        args = {"repo_path": str(repo)}

        async def reset() -> types.CallToolResult:
            async with gw.client(task) as client:
                return await client.call_tool("git.git_reset", args)

        first = anyio.run(reset)
        assert first.is_error and "approval required" in _text(first)
        approval_id = first.meta["tether/decision"]["approval_id"] if first.meta else None
        assert approval_id is not None and approval_id in _text(first)
        guard.approve(approval_id, approver="bob")
        second = anyio.run(reset)
        assert not second.is_error, _text(second)
        third = anyio.run(reset)  # the approval was for one call
        assert third.is_error and "approval required" in _text(third)
        task.end()
    guard.close()


def test_requests_without_a_proven_task_token_are_refused(home: Path, repo: Path) -> None:
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        task = coder_task(guard, ["git.git_status"])
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {"Accept": "application/json, text/event-stream"}
        token = task.token
        proof = task.proof("POST", gw.url, token)
        with httpx2.Client(timeout=10) as http:
            none = http.post(gw.url, json=body, headers=headers)
            bearer = http.post(
                gw.url, json=body, headers={**headers, "Authorization": f"Bearer {token}"}
            )
            first = http.post(
                gw.url,
                json=body,
                headers={**headers, "Authorization": f"DPoP {token}", "DPoP": proof},
            )
            replayed = http.post(
                gw.url,
                json=body,
                headers={**headers, "Authorization": f"DPoP {token}", "DPoP": proof},
            )
        assert none.status_code == 401 and "DPoP" in none.headers["www-authenticate"]
        assert bearer.status_code == 401 and "DPoP-bound" in bearer.json()["error_description"]
        assert first.status_code != 401
        assert replayed.status_code == 401 and "used" in replayed.json()["error_description"]
        task.end()
    guard.close()


def test_an_upstream_that_hangs_or_crashes_fails_the_call_and_the_gateway_keeps_serving(
    home: Path, repo: Path
) -> None:
    extra = f"""  odd:
    command: [{sys.executable}, {FIXTURES / "mcp_upstream.py"}]
    timeout: 2
"""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo, extra=extra), guard) as gw:
        task = coder_task(guard, ["odd.hang", "odd.crash", "odd.echo", "git.git_status"])

        async def session() -> list[types.CallToolResult]:
            async with gw.client(task) as client:
                hung = await client.call_tool("odd.hang", {})
                status = await client.call_tool("git.git_status", {"repo_path": str(repo)})
                crashed = await client.call_tool("odd.crash", {})
                await anyio.sleep(1.1)  # the gateway starts a dead upstream again after 1 s
                echoed = await client.call_tool("odd.echo", {"text": "back"})
                return [hung, status, crashed, echoed]

        hung, status, crashed, echoed = anyio.run(session)
        assert hung.is_error and "did not answer" in _text(hung) and "2 s" in _text(hung)
        assert not status.is_error
        assert crashed.is_error and "upstream odd" in _text(crashed)
        assert not echoed.is_error and _text(echoed) == "echo: back"
        task.end()
    guard.close()


def test_a_changed_tool_definition_is_withheld_until_a_person_accepts_it(
    home: Path, repo: Path
) -> None:
    extra = f"""  odd:
    command: [{sys.executable}, {FIXTURES / "mcp_upstream.py"}]
    timeout: 5
"""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo, extra=extra), guard) as gw:
        task = coder_task(guard, ["odd.echo", "odd.mutate"])

        async def session() -> tuple[list[str], types.CallToolResult, bool]:
            heard = anyio.Event()

            async def on_message(message: Any) -> None:
                if isinstance(message, types.ToolListChangedNotification):
                    heard.set()

            async with gw.client(task, message_handler=on_message) as client:
                await client.call_tool("odd.mutate", {})
                with anyio.fail_after(10):
                    await heard.wait()
                listed = await client.list_tools()
                echoed = await client.call_tool("odd.echo", {"text": "x"})
                return [t.name for t in listed.tools], echoed, heard.is_set()

        names, echoed, heard = anyio.run(session)
        assert heard
        assert names == ["odd.mutate"]
        assert echoed.is_error and "withheld" in _text(echoed)
        assert "description" in _text(echoed)
        kinds = [e.kind for e in guard.store.audit.events(workspace="acme", limit=50)]
        assert "gateway.call_withheld" in kinds
        task.end()
    guard.close()


def test_the_npm_filesystem_server_behind_the_gateway(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "plan.txt").write_text("step one\n")
    config = write_config(home.parent, repo, extra=filesystem_upstream(shared))
    guard = prepare(home)
    with gateway(home, config, guard, FILE_POLICIES) as gw:
        task = coder_task(guard, ["files.read_text_file", "files.write_file"], "update the plan")

        async def session() -> tuple[list[str], list[types.CallToolResult]]:
            async with gw.client(task) as client:
                listed = await client.list_tools()
                read = await client.call_tool(
                    "files.read_text_file", {"path": str(shared / "plan.txt")}
                )
                key = await client.call_tool(
                    "files.write_file",
                    {"path": str(shared / "id"), "content": "-----BEGIN PRIVATE KEY-----\nMII"},
                )
                plain = await client.call_tool(
                    "files.write_file", {"path": str(shared / "next.txt"), "content": "step two\n"}
                )
                outside = await client.call_tool("files.list_directory", {"path": str(shared)})
                return [t.name for t in listed.tools], [read, key, plain, outside]

        names, (read, key, plain, outside) = anyio.run(session)
        assert sorted(names) == ["files.read_text_file", "files.write_file"]
        assert not read.is_error and "step one" in _text(read)
        assert key.is_error and "a private key must not be written" in _text(key)
        assert not (shared / "id").exists()
        assert not plain.is_error and (shared / "next.txt").read_text() == "step two\n"
        assert outside.is_error and "outside this task's scope" in _text(outside)
        task.end()
    guard.close()


def test_over_stdio_a_client_is_one_task_of_the_agent(home: Path, repo: Path) -> None:
    """`tether gateway stdio` as an MCP client would start it: the tools of a new upstream are
    imported by `tether gateway tools`, then every call of the client is decided in the one
    task the command starts (and ends with the session)."""
    config = write_config(home.parent, repo, elicit=True)
    guard = prepare(home)
    tether = str(Path(sys.executable).with_name("tether"))
    env = {k: v for k, v in os.environ.items() if k in ("TETHER_DB", "PATH", "HOME")}
    env["TETHER_DEBUG"] = "1"
    imported = subprocess.run(
        [tether, "--home", str(home), "gateway", "tools", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert "git.git_status" in imported.stdout and "offered" in imported.stdout
    guard.activate_policies("acme", POLICIES)
    guard.grant("acme", user="alice", agent="coder", tools=[t.name for t in guard.tools("acme")])
    asked: list[str] = []

    async def approve(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": "approve"})

    async def session() -> tuple[list[str], types.CallToolResult, types.CallToolResult]:
        server = StdioServerParameters(
            command=tether,
            args=[
                "--home",
                str(home),
                "gateway",
                "stdio",
                str(config),
                "--agent",
                "coder",
                "--user",
                "alice",
                "--tools",
                "git.git_status",
                "--tools",
                "git.git_create_branch",
            ],
            env=env,
        )
        async with (
            stdio_client(server) as (read, write),
            ClientSession(read, write, elicitation_callback=approve) as client,
        ):
            await client.initialize()
            listed = await client.list_tools()
            status = await client.call_tool("git.git_status", {"repo_path": str(repo)})
            branch = await client.call_tool(
                "git.git_create_branch", {"repo_path": str(repo), "branch_name": "from-stdio"}
            )
            return [t.name for t in listed.tools], status, branch

    names, status, branch = anyio.run(session)
    assert sorted(names) == ["git.git_create_branch", "git.git_status"]
    assert not status.is_error and "On branch main" in _text(status)
    assert not branch.is_error and asked and "from-stdio" in branches(repo)
    decisions = guard.decisions("acme", limit=10)
    assert {d.tool for d in decisions} >= {"git.git_status", "git.git_create_branch"}
    guard.close()


def test_a_task_started_at_tether_serve_is_decided_at_the_gateway(home: Path, repo: Path) -> None:
    """The production path: an agent exchanges its token at `tether serve` (a remote Guard,
    its key never leaving it) and uses that token, proven per request, at the gateway."""
    guard = prepare(home)
    with (
        gateway(home, write_config(home.parent, repo), guard) as gw,
        served(home) as service,
        Guard.remote(service.url, admin_token=service.admin_token) as remote,
    ):
        task = remote.task(
            workspace="acme",
            agent="coder",
            user="alice",
            request="look",
            tools=["git.git_status"],
        )

        async def status() -> types.CallToolResult:
            async with gw.client(task) as client:
                return await client.call_tool("git.git_status", {"repo_path": str(repo)})

        result = anyio.run(status)
        assert not result.is_error and "On branch main" in _text(result)
        decided = service.guard.decisions("acme", task_id=task.id)
        assert [d.tool for d in decided] == ["git.git_status"]
        task.end()
    guard.close()


def test_an_mcp_session_is_its_tasks_alone(home: Path, repo: Path) -> None:
    """Another task's token (of the same agent, even) cannot use a session's id: the SDK's
    session manager answers as if it did not exist."""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        mine = coder_task(guard, ["git.git_status"])
        other = coder_task(guard, ["git.git_status"])
        headers = {"Accept": "application/json, text/event-stream"}
        start = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }

        def post(task: Any, body: dict[str, Any], **extra: str) -> httpx2.Response:
            token = task.token
            signed = {"Authorization": f"DPoP {token}", "DPoP": task.proof("POST", gw.url, token)}
            with httpx2.Client(timeout=10) as http:
                return http.post(gw.url, json=body, headers={**headers, **signed, **extra})

        opened = post(mine, start)
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        version = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        assert post(other, listing, **version).status_code == 404
        assert post(mine, listing, **version).status_code == 200
        mine.end()
        other.end()
    guard.close()


def test_elicitation_is_off_unless_configured(home: Path, repo: Path) -> None:
    """A client that could be asked is not, by default: its answer could be the agent's own."""
    guard = prepare(home)
    asked: list[str] = []

    async def approve(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"decision": "approve"})

    with gateway(home, write_config(home.parent, repo), guard) as gw:
        task = coder_task(guard, ["git.git_create_branch"])

        async def create() -> types.CallToolResult:
            async with gw.client(task, elicitation_callback=approve) as client:
                return await client.call_tool(
                    "git.git_create_branch", {"repo_path": str(repo), "branch_name": "x"}
                )

        result = anyio.run(create)
        assert result.is_error and "approval required" in _text(result) and not asked
        assert branches(repo) == ["main"]
        task.end()
    guard.close()


def test_a_token_of_another_workspace_is_refused_at_the_door(home: Path, repo: Path) -> None:
    """Nothing of one workspace is decidable from another: a gateway serves one workspace."""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        guard.add_workspace("beta")
        guard.register_agent("beta", "coder", kind="coder", owner="alice@beta.com")
        guard.add_user("beta", "alice")
        guard.register_tool("beta", "read_file", effects=["read"])
        guard.grant("beta", user="alice", agent="coder", tools=["read_file"])
        task = guard.task(
            workspace="beta", agent="coder", user="alice", request="", tools=["read_file"]
        )
        token = task.token
        headers = {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"DPoP {token}",
            "DPoP": task.proof("POST", gw.url, token),
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        with httpx2.Client(timeout=10) as http:
            answer = http.post(gw.url, json=body, headers=headers)
        assert answer.status_code == 403 and "serves workspace acme" in answer.text
        task.end()
    guard.close()


def test_a_call_that_cannot_be_decided_or_recorded_is_not_made_or_not_shown(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: no decision, no call (git never sees it); a result the task cannot take
    in does not reach the agent."""
    guard = prepare(home)
    with gateway(home, write_config(home.parent, repo), guard) as gw:
        task = coder_task(guard, ["git.git_create_branch", "git.git_status"])

        async def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("the store is gone")

        def unrecorded(*_: Any) -> None:
            raise RuntimeError("the task cannot be written")

        async def call(tool: str, args: dict[str, str]) -> types.CallToolResult:
            async with gw.client(task) as client:
                return await client.call_tool(tool, {"repo_path": str(repo), **args})

        with monkeypatch.context() as patch:
            patch.setattr(gw.server_guard, "authorize_async", broken)
            undecided = anyio.run(call, "git.git_create_branch", {"branch_name": "feature"})
        with monkeypatch.context() as patch:
            patch.setattr(gw.server_guard, "report_decided", unrecorded)
            unshown = anyio.run(call, "git.git_status", {})
        assert undecided.is_error and "could not decide this call, so it was not made" in _text(
            undecided
        )
        assert "the store is gone" not in _text(undecided)  # no internals to the agent
        assert branches(repo) == ["main"]
        assert unshown.is_error and "withheld" in _text(unshown)
        assert "On branch" not in _text(unshown)
        task.end()
    guard.close()


def test_a_resource_two_upstreams_list_is_read_from_neither(home: Path) -> None:
    """A resource is read from the upstream whose listing named it; a URI that two upstreams
    list could be either's, and is refused with a message saying so, whichever listed it
    last. What one upstream alone lists is read from it."""
    guard = prepare(home)
    config = home.parent / "gateway.yaml"
    lines = ["workspace: acme", "upstreams:"]
    for name in ("ra", "rb"):
        command = [sys.executable, str(FIXTURES / "resource_upstream.py"), name]
        lines += [f"  {name}:", f"    command: [{', '.join(command)}]", "    timeout: 20"]
    config.write_text("\n".join(lines) + "\n")
    allow = {"all.cedar": '@id("all")\npermit (principal, action, resource);'}
    with gateway(home, config, guard, allow) as gw:
        task = coder_task(guard, ["ra:resources/read", "rb:resources/read"])

        async def read() -> tuple[list[str], list[str], str]:
            async with gw.client(task) as client:
                listed = [str(r.uri) for r in (await client.list_resources()).resources]
                texts = []
                for uri in ("mem://ra-only", "mem://rb-only"):
                    deadline = anyio.current_time() + 20
                    while True:  # until the policies are in force at the gateway
                        try:
                            got = await client.read_resource(uri)
                            break
                        except MCPError:
                            assert anyio.current_time() < deadline, "never allowed"
                            await anyio.sleep(0.05)
                    texts.append(cast(types.TextResourceContents, got.contents[0]).text)
                with pytest.raises(MCPError) as refused:
                    await client.read_resource("mem://shared")
                return listed, texts, str(refused.value)

        listed, texts, refusal = anyio.run(read)
        assert listed.count("mem://shared") == 2
        assert texts == ["mem://ra-only from ra", "mem://rb-only from rb"]
        assert "mem://shared is listed by more than one upstream" in refusal
        task.end()
    guard.close()
