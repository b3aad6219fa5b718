"""Prometheus metrics of the service: requests by endpoint and status, and their latency. Kept
in a registry of the app's own, so two apps in one process (tests) do not collide."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.responses import Response

if TYPE_CHECKING:
    from tether.server.endpoints import Endpoint


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

    def observe(self, endpoint: Endpoint, status: int, seconds: float) -> None:
        self._requests.labels(endpoint.method, endpoint.path, str(status)).inc()
        self._seconds.labels(endpoint.method, endpoint.path).observe(seconds)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
