"""Signed webhooks: how a chat integration (or anything with an HTTP endpoint) hears of a request.

Each notification is a JSON POST with two headers:

    X-Tether-Timestamp: 1767225600
    X-Tether-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The receiver recomputes the HMAC over the raw body with the shared secret, compares in constant
time, and refuses timestamps more than five minutes away (`verify` does all three), so a captured
notification cannot be altered, nor replayed once those minutes have passed; within them, a
receiver that must act once de-duplicates on the approval id. Delivery runs on a background
thread and is retried with exponential backoff; each success or final failure is an event.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger("tether.approvals")

TIMESTAMP_HEADER = "X-Tether-Timestamp"
SIGNATURE_HEADER = "X-Tether-Signature"
TOLERANCE = 300.0
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds before each retry: six attempts in all
TIMEOUT = 5.0
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """True if `signature` is ours over exactly `body` at `timestamp`, and it is recent."""
    if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
        return False
    if not isinstance(signature, str) or not signature.isascii():
        return False
    sent = int(timestamp)
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body).encode(), signature.encode())


@dataclass(order=True)
class _Delivery:
    due: float
    attempt: int = field(compare=False)
    url: str = field(compare=False)
    secret: bytes = field(compare=False)
    body: bytes = field(compare=False)
    approval_id: str = field(compare=False)


# Told (approval id, "notified" or "notify_failed", detail) when a delivery ends.
Outcome = Callable[[str, str, str], None]


class Notifier:
    """Delivers notifications on one background thread, retrying failures with backoff."""

    def __init__(self, on_outcome: Outcome, *, backoff: Sequence[float] = BACKOFF) -> None:
        self._on_outcome = on_outcome
        self._backoff = tuple(backoff)
        self._queue: list[_Delivery] = []
        self._wake = threading.Condition()
        self._closed = False
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="tether-webhooks", daemon=True)
        self._thread.start()

    def send(self, url: str, secret: bytes, body: bytes, approval_id: str) -> None:
        with self._wake:
            heapq.heappush(
                self._queue, _Delivery(time.monotonic(), 0, url, secret, body, approval_id)
            )
            self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after what is due within `timeout` has been tried."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._wake.wait(0.05)
            self._closed = True
            self._wake.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (
                    not self._queue or self._queue[0].due > time.monotonic()
                ):
                    wait = self._queue[0].due - time.monotonic() if self._queue else None
                    self._wake.wait(wait)
                if self._closed:
                    return
                delivery = heapq.heappop(self._queue)
                self._busy += 1
            try:
                self._deliver(delivery)
            except Exception:  # one bad delivery must not end the others
                log.exception("webhook delivery to %s failed", redacted(delivery.url))
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()

    def _deliver(self, delivery: _Delivery) -> None:
        timestamp = int(time.time())
        request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s)
            delivery.url,
            data=delivery.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(delivery.secret, timestamp, delivery.body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                status = response.status
        except Exception as exc:  # any way an endpoint can fail is one failed attempt
            status, error = 0, f"{type(exc).__name__}: {exc}"
        else:
            error = f"HTTP {status}"
        if 200 <= status < 300:
            self._outcome(delivery.approval_id, "notified", redacted(delivery.url))
            return
        if delivery.attempt < len(self._backoff):
            retry = _Delivery(
                time.monotonic() + self._backoff[delivery.attempt],
                delivery.attempt + 1,
                delivery.url,
                delivery.secret,
                delivery.body,
                delivery.approval_id,
            )
            with self._wake:
                heapq.heappush(self._queue, retry)
            return
        self._outcome(
            delivery.approval_id,
            "notify_failed",
            f"{redacted(delivery.url)}: {error} after {delivery.attempt + 1} attempts",
        )

    def _outcome(self, approval_id: str, event: str, detail: str) -> None:
        try:
            self._on_outcome(approval_id, event, detail)
        except Exception:  # recording the outcome must not stop later deliveries
            log.exception("could not record webhook outcome for %s", approval_id)


def redacted(url: str) -> str:
    """The URL as events and logs show it: scheme and host only (chat webhooks often carry
    their secret in the path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"
