"""The gateway's configuration file: which workspace it enforces, and the upstream MCP servers it
fronts, each by a command (stdio) or a URL (streamable HTTP).

    workspace: acme
    upstreams:
      git:
        command: [python, -m, mcp_server_git, --repository, ./repo]
        env: {GIT_AUTHOR_NAME: tether}
        timeout: 30
        start_timeout: 60
      files:
        url: https://files.internal/mcp
        headers: {Authorization: "Bearer ${FILES_MCP_TOKEN}"}
    approvals:
      elicit: true

An upstream's credentials are the gateway's own, never the agent's (the MCP authorization
specification forbids a proxy to pass a client's token on). `command`, `url`, `cwd`, `env` and
`headers` may name environment variables as `${NAME}`, so secrets and paths stay out of the
file. Relative paths in `command`
and `cwd` are the caller's business: `cwd` defaults to the folder of the file.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from tether.errors import InvalidInput
from tether.names import check_segment

DEFAULT_TIMEOUT = 30.0
DEFAULT_START_TIMEOUT = 30.0
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}[._]")
_UPSTREAM_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")


class UpstreamSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One upstream MCP server: exactly one of `command` (spoken to over stdio) and `url`
    (streamable HTTP)."""

    command: tuple[str, ...] = ()
    url: str = ""
    env: dict[str, str] = {}
    cwd: str = ""
    headers: dict[str, str] = {}
    timeout: float = DEFAULT_TIMEOUT  # seconds a request may take before it fails closed
    # Seconds starting it (the process, or the connection, and the MCP handshake) may take: a
    # server that is slow to start (a package runner, a cold interpreter) is not thereby slow to
    # answer, so this is apart from `timeout` (which still holds each HTTP request of the
    # handshake, as it holds every request).
    start_timeout: float = DEFAULT_START_TIMEOUT
    # What its tools' and prompts' names are prefixed with (default `<name>.`); "" keeps
    # them as they are, for a gateway with one upstream (no prefix may begin another).
    prefix: str | None = None


class ApprovalOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`elicit`: ask the person at the client (taken to be the user the agent acts for)
    through MCP elicitation, when the client supports it and that person may decide the
    request. Off by default: the gateway cannot tell a person answering from the agent's own
    program answering, so turn it on only where the MCP client is an app a person uses."""

    elicit: bool = False


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    workspace: str
    upstreams: dict[str, UpstreamSpec]
    approvals: ApprovalOptions = ApprovalOptions()


def load_config(path: str | Path) -> GatewayConfig:
    """The configuration in `path`, with `${NAME}` variables filled in from the environment;
    InvalidInput naming what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    return parse_config(raw, folder=path.parent)


def parse_config(raw: Any, *, folder: Path) -> GatewayConfig:
    try:
        config = msgspec.convert(raw, GatewayConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"gateway configuration: {exc}") from exc
    check_segment("workspace", config.workspace)
    if not config.upstreams:
        raise InvalidInput("gateway configuration: name at least one upstream")
    upstreams = {name: _checked(name, spec, folder) for name, spec in config.upstreams.items()}
    prefixes = sorted((spec.prefix or "", name) for name, spec in upstreams.items())
    for (first, a), (second, b) in itertools.pairwise(prefixes):
        if second.startswith(first):  # then a name of one could be a name of the other
            raise InvalidInput(
                f"upstreams {a!r} and {b!r}: the prefix {first!r} begins {second!r}, so their "
                "tools' names could meet; give each a prefix that begins no other"
            )
    return msgspec.structs.replace(config, upstreams=upstreams)


def _checked(name: str, spec: UpstreamSpec, folder: Path) -> UpstreamSpec:
    where = f"upstream {name!r}"
    spec = msgspec.structs.replace(
        spec,
        command=tuple(_expand(part, where) for part in spec.command),
        url=_expand(spec.url, where),
        env={k: _expand(v, where) for k, v in spec.env.items()},
        headers={k: _expand(v, where) for k, v in spec.headers.items()},
        cwd=_expand(spec.cwd, where),
    )
    if not _UPSTREAM_NAME.fullmatch(name):
        raise InvalidInput(
            f"{where}: use 1-32 lowercase letters, digits, '_' or '-' (it prefixes tool names)"
        )
    if bool(spec.command) == bool(spec.url):
        raise InvalidInput(f"{where}: give exactly one of command (stdio) and url (HTTP)")
    if spec.url and not spec.url.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}: url must be http:// or https://")
    for field in ("timeout", "start_timeout"):
        if not 0 < getattr(spec, field) <= 3600:
            raise InvalidInput(f"{where}: {field} must be between 0 and 3600 seconds")
    forwarded = {k.lower() for k in spec.headers}
    if spec.command and spec.headers:
        raise InvalidInput(f"{where}: headers are for an HTTP upstream")
    if {"dpop", "mcp-session-id"} & forwarded:
        raise InvalidInput(f"{where}: the gateway sets the DPoP and Mcp-Session-Id headers itself")
    cwd = str((folder / spec.cwd).resolve()) if spec.command else ""
    prefix = f"{name}." if spec.prefix is None else spec.prefix
    if prefix and not _PREFIX.fullmatch(prefix):
        raise InvalidInput(f"{where}: prefix must be letters, digits, '_' or '-', then '.' or '_'")
    return msgspec.structs.replace(spec, prefix=prefix, cwd=cwd)


def _expand(value: str, where: str) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InvalidInput(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _VARIABLE.sub(variable, value)
