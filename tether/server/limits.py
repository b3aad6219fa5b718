"""Per-agent rate limits: a token bucket per caller, in this process.

An agent that loops (or is made to) must not starve the others or fill the log: past its rate
it gets 429 with Retry-After. Callers are known by their verified token's agent; a call whose
token does not verify is limited by its client address instead, since it can claim anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimits:
    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`rate` calls a second, up to `burst` at once."""
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, count: int = 1) -> float | None:
        """None if `count` calls may go now; else the seconds until they may."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) > 100_000:  # forget the idle, not the busy
                    self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < 60}
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= count:
                bucket.tokens -= count
                return None
            return (count - bucket.tokens) / self.rate
