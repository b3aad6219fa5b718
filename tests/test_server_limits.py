"""Per-agent rate limits, on a clock the test moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx

from tether import Guard
from tether.server.app import create_app
from tether.server.limits import RateLimits


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    now = [0.0]
    limits = RateLimits(rate=10.0, burst=20.0, clock=lambda: now[0])
    assert all(limits.take("acme/coder") is None for _ in range(20))
    wait = limits.take("acme/coder")
    assert wait is not None and 0.09 < wait <= 0.1
    assert limits.take("acme/planner") is None  # each agent its own bucket
    now[0] += 0.5  # five calls' worth
    assert all(limits.take("acme/coder") is None for _ in range(5))
    assert limits.take("acme/coder") is not None
    assert limits.take("acme/coder", count=30) is not None  # never more than the burst


def test_the_token_endpoint_is_limited_by_address(home: Path) -> None:
    """Anyone may knock on the token endpoint, and each knock costs a signature check or more:
    past the rate, callers from one address are told to wait before anything is read."""
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"}

    async def knock(app: Any) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [(await client.post("/v1/token", data=form)).status_code for _ in range(3)]

    with Guard.embedded(home=home) as guard:
        app = create_app(guard, public_url="http://testserver", limits=RateLimits(1.0, 2.0))
        statuses = anyio.run(knock, app)
    assert statuses == [400, 400, 429], statuses  # refused as malformed, then not read at all
