"""The catalogue file: a workspace's tools as YAML, reviewed and versioned like code.

tools:
  - name: send_email
    description: Send an e-mail
    effects: [external]
    sinks: [to]                 # arguments where data or money goes
    output: trusted             # or untrusted: third-party content
    labels: []                  # labels the output carries (secret, pii, ...)
    risk_tier: medium
    args:                       # JSON Schema of the arguments
      type: object
      properties: {to: {type: string}, body: {type: string}}
      required: [to]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from tether.errors import InvalidInput
from tether.model import OutputTrust, Tool


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    effects: list[str]
    args: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    sinks: list[str] = msgspec.field(default_factory=list)
    output: OutputTrust = OutputTrust.TRUSTED
    labels: list[str] = msgspec.field(default_factory=list)
    risk_tier: str = "low"
    description: str = ""


class _File(msgspec.Struct, forbid_unknown_fields=True):
    tools: list[_Entry]


def load_catalogue_file(path: str | Path, workspace: str) -> list[Tool]:
    """The tools a catalogue file declares; InvalidInput names the file and the bad field."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    return parse_catalogue(text, workspace, where=str(path))


def parse_catalogue(text: str | bytes, workspace: str, *, where: str) -> list[Tool]:
    """The tools a catalogue file's text declares; `where` names the file in errors."""
    try:
        parsed = msgspec.yaml.decode(text, type=_File)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    names = [e.name for e in parsed.tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"{where}: tools named more than once: {twice}")
    return [
        Tool(
            workspace=workspace,
            name=e.name,
            args_schema=e.args,
            effects=tuple(e.effects),
            sinks=tuple(e.sinks),
            output=e.output,
            labels=tuple(e.labels),
            risk_tier=e.risk_tier,
            description=e.description,
        )
        for e in parsed.tools
    ]
