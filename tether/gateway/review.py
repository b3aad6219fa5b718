"""Reviewing upstream tools from the command line: connect once, list, hold the list against the
catalogue (`tether gateway tools`) or accept what changed (`tether gateway accept`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import mcp_types as types

from tether.errors import InvalidInput
from tether.gateway.config import GatewayConfig
from tether.gateway.tools import Review, accept, review
from tether.gateway.upstream import Upstream, UpstreamUnavailable
from tether.sdk import Guard

T = TypeVar("T")


async def _listed(upstream: Upstream, then: Callable[[list[types.Tool]], T]) -> T:
    listed: list[types.Tool] = []
    failure: UpstreamUnavailable | None = None
    async with anyio.create_task_group() as tasks:
        try:  # raised here, it would leave the task group wrapped in an exception group
            await upstream.start(tasks)
            listed = await upstream.list_tools()
        except UpstreamUnavailable as exc:
            failure = exc
        finally:
            await upstream.close()
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return then(listed)


async def reviewed(guard: Guard, config: GatewayConfig) -> dict[str, Review | str]:
    """Each upstream's review, or why it could not be reached."""
    results: dict[str, Review | str] = {}
    for name, spec in config.upstreams.items():
        try:
            results[name] = await _listed(Upstream(name, spec), _reviewing(guard, config, name))
        except UpstreamUnavailable as exc:
            results[name] = str(exc)
    return results


def _reviewing(
    guard: Guard, config: GatewayConfig, name: str
) -> Callable[[list[types.Tool]], Review]:
    prefix = config.upstreams[name].prefix or ""
    return lambda tools: review(guard, config.workspace, name, prefix, tools)


async def accepted(
    guard: Guard, config: GatewayConfig, upstream: str, names: list[str]
) -> list[str]:
    spec = config.upstreams.get(upstream)
    if spec is None:
        raise InvalidInput(f"the configuration names no upstream {upstream!r}")
    try:
        return await _listed(
            Upstream(upstream, spec),
            lambda tools: accept(
                guard, config.workspace, upstream, spec.prefix or "", tools, names=names
            ),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None
