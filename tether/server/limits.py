"""Per-agent rate limits: a token bucket per caller, in this process.

An agent that loops (or is made to) must not starve the others or fill the log: past its rate
it gets 429 with Retry-After. Callers are known by their token's agent when the token verifies
and the request's proof is signed by its key; any other call is limited by its client address
instead (it can claim anything, and a stolen token alone must not spend its agent's rate).

The table holds at most MAX_BUCKETS buckets, the least recently used forgotten first, each call
O(1): a caller that keeps calling keeps its bucket (it is never the least recent), and a bucket
forgotten is one idle while MAX_BUCKETS others were used since.

A proof counts against its agent once in this process (`first_sighting`): shown again, it is
a replay (refused where the endpoint claims it), and its sender is limited by address, so a
captured token and proof cannot use up the agent's rate while the proof is young enough to
check. (Each other process may count it once more: the limits are each process's own.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import InvalidInput

MAX_BUCKETS = 100_000


class OverBurst(InvalidInput):
    """A charge larger than the burst: no wait would let it through, so it is refused as too
    large (a 400 if nothing rephrases it), never told to come back later."""

    def __init__(self, count: int, burst: float) -> None:
        self.count, self.largest = count, int(burst)
        super().__init__(
            f"{count} calls at once can never go: at most {self.largest} may (the burst)"
        )


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimits:
    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        size: int = MAX_BUCKETS,
    ) -> None:
        """`rate` calls a second, up to `burst` at once; at most `size` callers remembered."""
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._size = size
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # the least recent first
        self._proofs: OrderedDict[str, float] = OrderedDict()  # counted ones: until when
        self._lock = threading.Lock()

    def take(self, key: str, count: int = 1) -> float | None:
        """None if `count` calls may go now; else the seconds until they may. OverBurst if
        they never may (`count` is over the burst)."""
        if count > self.burst:
            raise OverBurst(count, self.burst)
        now = self._clock()
        with self._lock:
            bucket = self._bucket(key, now)
            if bucket.tokens >= count:
                bucket.tokens -= count
                return None
            return (count - bucket.tokens) / self.rate

    def first_sighting(self, proof: str, until: float) -> bool:
        """Whether this proof (its one-time key) is new here; remembered if so, until `until`
        (when it is too old to pass a check: wall-clock time, as its issue time is). At most
        `size` are remembered, the oldest forgotten first."""
        now = time.time()
        with self._lock:
            proofs = self._proofs
            while proofs and next(iter(proofs.values())) < now:
                proofs.popitem(last=False)  # the oldest: mostly in the order they expire
            if proof in proofs:
                return False
            if len(proofs) >= self._size:
                proofs.popitem(last=False)
            proofs[proof] = until
            return True

    def has(self, key: str, count: int = 1) -> bool:
        """Whether `count` calls may go now, without taking them (nor remembering a caller
        not seen yet)."""
        now = self._clock()
        with self._lock:
            if key not in self._buckets:
                return count <= self.burst
            return self._bucket(key, now).tokens >= count

    def callers(self) -> int:
        """How many callers' buckets are remembered. (Not __len__: an empty table must not
        make a RateLimits false, as `limits or RateLimits(...)` would read it.)"""
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> _Bucket:
        """`key`'s bucket, refilled to `now` and made the most recent (under the lock)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._size:  # forget the least recently used
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket
