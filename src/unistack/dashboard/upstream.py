"""The two upstreams the dashboard reads, as the protocols its views call: the hub API
(health truth, events, control actions) and Prometheus (history). Production passes
`unistack.hub.client.HubClient` and `unistack.dashboard.prometheus.PrometheusClient`;
unit tests pass small fakes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Hub(Protocol):
    """What the dashboard asks of the hub API (see `HubClient`)."""

    def get(self, path: str) -> tuple[int, Any]: ...

    def text(self, path: str) -> tuple[int, str]: ...

    def post(self, path: str, body: Any = None, *, actor: str = "") -> tuple[int, Any]: ...

    def stream(self, last_event_id: str | None = None) -> Iterator[bytes]: ...


class Metrics(Protocol):
    """What the dashboard asks of Prometheus: instant and range queries (result lists of
    Prometheus's `vector` / `matrix` JSON), raising `MetricsUnavailable`."""

    def query(self, promql: str) -> list[dict[str, Any]]: ...

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]: ...


class MetricsUnavailable(Exception):
    """Prometheus did not answer a query; the message says why."""
