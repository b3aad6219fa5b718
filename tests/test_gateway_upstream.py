"""Starting an upstream (tether/gateway/upstream.py): how long it may take is its own limit,
apart from how long a request may take, and one that never completes the MCP handshake fails
closed within that limit and leaves no process behind."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from gateway_env import FIXTURES

from tether.gateway.config import UpstreamSpec
from tether.gateway.upstream import Upstream, UpstreamUnavailable

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
