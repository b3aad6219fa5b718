"""Starting an upstream (tether/gateway/upstream.py): how long it may take is its own limit,
apart from how long a request may take, and one that never completes the MCP handshake fails
closed within that limit and leaves no process behind."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import cast

import anyio
import mcp_types as types
import pytest
from gateway_env import FIXTURES
from mcp.client.stdio import DEFAULT_INHERITED_ENV_VARS

from tether.gateway.config import UpstreamSpec
from tether.gateway.upstream import Upstream, UpstreamUnavailable

# Set by Python itself at start under the C locale (PEP 538), whatever its parent passed.
PLATFORM_ADDED = {"LC_CTYPE"}
SLOW_START = 2.5  # seconds the upstream below sleeps before it is the MCP server


def _slow_to_start() -> tuple[str, ...]:
    server = str(FIXTURES / "mcp_upstream.py")
    code = (
        f"import runpy, time; time.sleep({SLOW_START}); "
        f"runpy.run_path({server!r}, run_name='__main__')"
    )
    return (sys.executable, "-c", code)


async def _echo(spec: UpstreamSpec) -> str:
    async with anyio.create_task_group() as tasks:
        upstream = Upstream("slow", spec)
        await upstream.start(tasks)
        result = await upstream.request(
            "tools/call echo", lambda s: s.call_tool("echo", {"text": "hi"})
        )
        upstream.stop()
    return str(result.content[0].text)


def test_an_upstream_slower_to_start_than_to_answer_is_started() -> None:
    """A request limit shorter than the start (a package runner, a cold interpreter) once made
    such a server impossible to start: the start had to fit within the request limit."""
    spec = UpstreamSpec(command=_slow_to_start(), timeout=2, start_timeout=120)
    assert anyio.run(_echo, spec) == "echo: hi"


def test_an_upstream_that_never_completes_its_handshake_fails_closed_in_time(
    tmp_path: Path,
) -> None:
    marker = f"mute upstream of {tmp_path}"  # in its command line, to find it by
    mute = f"import time; time.sleep(60)  # {marker}"
    spec = UpstreamSpec(command=(sys.executable, "-c", mute), timeout=30, start_timeout=1)

    async def start() -> str:
        async with anyio.create_task_group() as tasks:
            try:  # raised here, it would come out wrapped in an exception group
                await Upstream("mute", spec).start(tasks)
            except UpstreamUnavailable as exc:
                return str(exc)
        return "started"

    # The message names the limit that ended the start: this one, not the request's 30 s.
    assert anyio.run(start) == "upstream mute did not start within 1 s"
    assert not _running(marker), "the process that never answered was left running"


async def _environment(spec: UpstreamSpec) -> dict[str, str]:
    """The environment an upstream command was started with (tests/fixtures/env_upstream.py)."""
    async with anyio.create_task_group() as tasks:
        upstream = Upstream("env", spec)
        await upstream.start(tasks)
        result = await upstream.call_tool("environment", {}, None)
        upstream.stop()
    seen: dict[str, str] = json.loads(cast(types.TextContent, result.content[0]).text)
    return seen


@pytest.mark.parametrize("env", [{}, {"GIT_AUTHOR_NAME": "tether"}])
def test_an_upstream_command_gets_its_own_env_and_never_the_gateways(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream is a third party's program: it gets the SDK's few safe variables (PATH,
    HOME...) and its own `env` over them, with or without one, and none of the gateway's
    own environment, which holds other upstreams' secrets and the store's URL."""
    monkeypatch.setenv("FILES_MCP_TOKEN", "for-the-files-upstream-only")
    monkeypatch.setenv("TETHER_DATABASE_URL", "postgresql://tether:hunter2@db/tether")
    command = (sys.executable, str(FIXTURES / "env_upstream.py"))
    seen = anyio.run(_environment, UpstreamSpec(command=command, env=env))
    assert seen.get("PATH") == os.environ["PATH"]  # the SDK's defaults are still there
    assert {k: seen.get(k) for k in env} == env
    assert "FILES_MCP_TOKEN" not in seen and "TETHER_DATABASE_URL" not in seen
    assert set(seen) - set(env) <= set(DEFAULT_INHERITED_ENV_VARS) | PLATFORM_ADDED


def _running(marker: str) -> list[str]:
    """The processes whose command line holds `marker` (a zombie's is empty)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if marker in text:
            found.append(cmdline.parent.name)
    return found
