"""The frameworks stay optional: the core SDK and the adapters' shared code import neither, and
an adapter whose framework is missing says what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_the_core_sdk_imports_no_framework() -> None:
    ran = python(
        "import sys, tether, tether.sdk, tether.sdk._adapters\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded & {'langchain_core', 'agents', 'openai'}, loaded\n"
    )
    assert ran.returncode == 0, ran.stderr


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [("langchain", "langchain_core", "langchain"), ("openai_agents", "agents", "openai-agents")],
)
def test_a_missing_framework_says_what_to_install(module: str, framework: str, extra: str) -> None:
    ran = python(f"import sys; sys.modules[{framework!r}] = None; import tether.sdk.{module}")
    assert ran.returncode != 0
    assert f"pip install 'tether[{extra}]'" in ran.stderr
