"""Policy source: the `.cedar` files of a bundle, cut into statements that know their line.

Cedar reports parse and validation errors without positions; cutting the text into statements
ourselves (each ends at a `;` outside strings and comments) lets every error name the file and the
line a policy author should look at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tether.errors import InvalidInput

MAX_POLICY_FILE_BYTES = 4 * 1024 * 1024
# Cedar's parser is recursive and runs on the caller's stack: a statement nested some 600
# brackets deep (or with some 1,300 operators in one chain) crashes the whole process. Statements
# are measured before Cedar sees them, with limits far below that and far above real policies.
MAX_NESTING = 32  # brackets open at once: ( [ {
MAX_OPERATORS = 800  # operator characters (& | ! < > = + - * . ( [ {) and if/has/like/in/is
_KEYWORDS = frozenset({"if", "has", "like", "in", "is"})
_OPERATOR_CHARACTERS = frozenset("&|!<>=+-*.")


@dataclass(frozen=True)
class Statement:
    file: str
    line: int  # 1-based line of the statement's first token
    text: str  # from that token to the closing `;` (or the end of the file if it is missing)

    def line_of(self, term: str) -> int:
        """The line where `term` first appears as a whole word in this statement, else its start."""
        match = re.search(rf"(?<![\w]){re.escape(term)}(?![\w])", self.text)
        if match is None:
            return self.line
        return self.line + self.text.count("\n", 0, match.start())


def read_policy_dir(path: str | Path) -> dict[str, str]:
    """Every `.cedar` file under `path`, by path relative to it, in a stable order."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"policy folder {root} does not exist or is not a folder")
    files: dict[str, str] = {}
    for file in sorted(root.rglob("*.cedar")):
        if file.stat().st_size > MAX_POLICY_FILE_BYTES:
            raise InvalidInput(f"{file}: larger than {MAX_POLICY_FILE_BYTES} bytes")
        try:
            files[file.relative_to(root).as_posix()] = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{file}: not UTF-8 text ({exc.reason})") from exc
    return files


def split_statements(file: str, text: str) -> list[Statement]:
    """The policy statements of one file, comments between them dropped."""
    statements: list[Statement] = []
    start: int | None = None
    line = 1
    start_line = 1
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        elif ch.isspace():
            pass
        else:
            if start is None:
                start, start_line = i, line
            if ch == '"':
                i, line = _skip_string(text, i, line)
                continue
            if ch == ";":
                statements.append(Statement(file, start_line, text[start : i + 1]))
                start = None
        i += 1
    if start is not None:
        statements.append(Statement(file, start_line, text[start:].rstrip()))
    return statements


def too_complex(text: str) -> str | None:
    """Why Cedar must not be given this statement (too deeply nested or too long a chain of
    operators for its parser), or None. Strings and comments are not counted."""
    depth = deepest = operators = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i, _ = _skip_string(text, i, 0)
            continue
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        if ch.isalpha() or ch == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            operators += text[start:i] in _KEYWORDS
            continue
        if ch in "([{":  # also an operator: `x["a"]["b"]` is a chain without operator signs
            depth += 1
            deepest = max(deepest, depth)
            operators += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in _OPERATOR_CHARACTERS:
            operators += 1
        i += 1
    if deepest > MAX_NESTING:
        return f"nested {deepest} brackets deep (at most {MAX_NESTING}); split the condition"
    if operators > MAX_OPERATORS:
        return (
            f"{operators} operators in one policy (at most {MAX_OPERATORS}); split it into "
            "several policies"
        )
    return None


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """Index just past the string literal opening at `i`, and the line count there."""
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "\n":
            line += 1
        if ch == '"':
            return i + 1, line
        i += 1
    return i, line


_ID = re.compile(r'@id\s*\(\s*"([^"]*)"\s*\)')


def policy_sources(files: Mapping[str, str]) -> dict[str, str]:
    """Each policy's source text, by the name decisions give it (its @id, else file:line)."""
    found = {}
    for file, text in files.items():
        for statement in split_statements(file, text):
            match = _ID.search(statement.text)
            found[match.group(1) if match else f"{file}:{statement.line}"] = statement.text
    return found
