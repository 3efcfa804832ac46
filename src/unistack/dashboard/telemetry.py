"""The dashboard's own metrics for `/metrics`: requests, their latency and the live
streams held open, in a registry per app. Label-free and per gunicorn worker: each
scrape reaches one worker, which is enough to see that the dashboard serves and how fast."""

from __future__ import annotations

import time

from flask import Flask, Response, g
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("unistack_dashboard_requests", "Requests answered",
                                 registry=self.registry)
        self._errors = Counter("unistack_dashboard_server_errors",
                               "Requests answered with a 5xx status", registry=self.registry)
        self._latency = Histogram("unistack_dashboard_request_duration_seconds",
                                  "Request received to response started", buckets=_BUCKETS,
                                  registry=self.registry)
        self._streams = Gauge("unistack_dashboard_event_streams",
                              "Live event streams (/api/events) open", registry=self.registry)

    def install(self, app: Flask) -> None:
        """Time every request of APP."""
        app.before_request(self._began)
        app.after_request(self._answered)

    def _began(self) -> None:
        g.unistack_began = time.perf_counter()

    def _answered(self, response: Response) -> Response:
        self._requests.inc()
        if response.status_code >= 500:
            self._errors.inc()
        began = g.get("unistack_began")
        if began is not None:
            self._latency.observe(time.perf_counter() - began)
        return response

    def stream_opened(self, delta: int) -> None:
        """+1 when a live stream opens, -1 when it closes."""
        self._streams.inc(delta)

    def render(self) -> bytes:
        return generate_latest(self.registry)
