"""`tether tool import`: proposals from an MCP tools/list, cautious and flagged for review."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tether import Guard
from tether.catalogue import load_catalogue_file
from tether.catalogue.mcp_import import propose, to_catalogue_yaml
from tether.errors import InvalidInput

FIXTURE = Path(__file__).parent / "fixtures" / "mcp_tools_list.json"


@pytest.fixture
def proposals() -> dict[str, object]:
    return {p.name: p for p in propose(json.loads(FIXTURE.read_text()), "acme")}


def test_read_only_closed_world_tool(proposals: dict[str, object]) -> None:
    status = proposals["git_status"]
    assert status.tool.effects == ("read",) and status.tool.output == "trusted"  # type: ignore[attr-defined]
    assert status.tool.risk_tier == "low"  # type: ignore[attr-defined]


def test_destructive_tool_and_unmapped_idempotency(proposals: dict[str, object]) -> None:
    reset = proposals["git_reset"]
    assert reset.tool.effects == ("write", "destructive")  # type: ignore[attr-defined]
    assert "idempotentHint is not mapped to an effect" in reset.flags  # type: ignore[attr-defined]


def test_open_world_output_is_untrusted_and_sinks_are_guessed(proposals: dict[str, object]) -> None:
    fetch = proposals["fetch"]
    assert fetch.tool.effects == ("read", "external")  # type: ignore[attr-defined]
    assert fetch.tool.output == "untrusted" and fetch.tool.sinks == ("url",)  # type: ignore[attr-defined]
    assert not any("destructiveHint" in f for f in fetch.flags)  # type: ignore[attr-defined]


def test_silence_means_the_worst_and_is_flagged(proposals: dict[str, object]) -> None:
    send = proposals["send_message"]
    assert send.tool.effects == ("write", "destructive", "external")  # type: ignore[attr-defined]
    assert any("readOnlyHint, destructiveHint, openWorldHint" in f for f in send.flags)  # type: ignore[attr-defined]


def test_contradictions_take_the_stricter_reading(proposals: dict[str, object]) -> None:
    wipe = proposals["wipe_cache"]
    assert wipe.tool.effects == ("write", "destructive")  # type: ignore[attr-defined]
    assert 'unmapped hints: "costHint"' in wipe.flags  # type: ignore[attr-defined]
    assert any("contradict" in f for f in wipe.flags)  # type: ignore[attr-defined]


def test_untypable_tools_are_proposed_commented_out(proposals: dict[str, object]) -> None:
    blob = proposals["store_blob"]
    assert blob.tool is None  # type: ignore[attr-defined]
    assert any("cannot be typed" in f for f in blob.flags)  # type: ignore[attr-defined]


def test_the_proposal_loads_and_registers(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether.cli",
            "tool",
            "import",
            str(FIXTURE),
            "--prefix",
            "git/",
            "--out",
            str(catalogue),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "6 tools proposed" in result.stderr and "1 that cannot be registered" in result.stderr
    assert "# REVIEW:" in catalogue.read_text()
    tools = load_catalogue_file(catalogue, "acme")
    assert [t.name for t in tools] == [
        "git/git_status",
        "git/git_reset",
        "git/fetch",
        "git/send_message",
        "git/wipe_cache",
    ]
    with Guard.embedded(home=tmp_path / "home") as guard:
        guard.add_workspace("acme")
        for tool in tools:
            guard.register_tool(
                "acme",
                tool.name,
                effects=tool.effects,
                args_schema=tool.args_schema,
                sinks=tool.sinks,
                output=tool.output,
            )
        assert len(guard.store.tools("acme")) == 5


def test_not_a_tools_list_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="tools/list"):
        propose({"nope": 1}, "acme")
    assert to_catalogue_yaml([], "x").startswith("# Proposed")
