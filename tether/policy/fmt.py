"""`tether policy fmt`: Cedar's own formatter over the files of a bundle."""

from __future__ import annotations

from pathlib import Path

import cedarpy

from tether.errors import InvalidInput
from tether.policy.source import split_statements, too_complex


def format_text(text: str) -> str:
    """The canonical layout of a policy file (comments kept); InvalidInput if it does not parse."""
    for statement in split_statements("", text):
        complexity = too_complex(statement.text)
        if complexity is not None:
            raise InvalidInput(f"cannot format the policy at line {statement.line}: {complexity}")
    try:
        formatted: str = cedarpy.format_policies(text)
    except ValueError as exc:
        raise InvalidInput(f"cannot format: {exc}") from exc
    return formatted.rstrip("\n") + "\n"


def cedar_files(path: str | Path) -> list[Path]:
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InvalidInput(f"{root} does not exist")
    return sorted(root.rglob("*.cedar"))


def format_files(path: str | Path, *, check: bool) -> list[Path]:
    """Reformat every .cedar file under `path` (or only report, with `check`); returns the files
    that were (or would be) changed."""
    changed = []
    for file in cedar_files(path):
        text = file.read_text(encoding="utf-8")
        try:
            formatted = format_text(text)
        except InvalidInput as exc:
            raise InvalidInput(f"{file}: {exc}") from exc
        if formatted != text:
            changed.append(file)
            if not check:
                file.write_text(formatted, encoding="utf-8")
    return changed
