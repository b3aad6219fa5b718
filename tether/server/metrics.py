"""Prometheus metrics of the service: requests by endpoint and status, their latency, and the
decisions answered. Kept in a registry of the app's own, so two apps in one process (tests) do
not collide. With several workers (`PROMETHEUS_MULTIPROC_DIR` set before they start, as
serving.py does) every worker writes its samples to files there and a scrape, whichever worker
answers it, adds up all of them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

if TYPE_CHECKING:
    from tether.model import Decision
    from tether.server.endpoints import Endpoint

SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "tether_http_requests",
            "HTTP requests answered",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "tether_http_request_seconds",
            "Time to answer an HTTP request",
            ["method", "path"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self._decisions = Counter(
            "tether_decisions",
            "Decisions answered over HTTP",
            ["workspace", "effect"],
            registry=self.registry,
        )

    def observe(self, endpoint: Endpoint, status: int, seconds: float) -> None:
        self._requests.labels(endpoint.method, endpoint.path, str(status)).inc()
        self._seconds.labels(endpoint.method, endpoint.path).observe(seconds)

    def decided(self, decision: Decision) -> None:
        self._decisions.labels(decision.workspace or "", decision.effect.value).inc()

    def response(self) -> Response:
        registry = self.registry
        if os.environ.get(SHARED_DIR_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
