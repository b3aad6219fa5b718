"""Per-agent rate limits, on a clock the test moves."""

from __future__ import annotations

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
