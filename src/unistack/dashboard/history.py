"""History: the charts' metrics as PromQL, the ranges they can show, and their series
from Prometheus's `query_range`; the ML engine's current latency and throughput from
instant queries. Prometheus is the only store of history (no home-made time series)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from unistack.dashboard.upstream import Metrics, MetricsUnavailable


class Chart(NamedTuple):
    """One chart: its title, PromQL (`{window}` is the rate window) and unit."""

    title: str
    promql: str
    unit: str  # ratio, bytes, seconds, per_second or count: how the page formats values


_P99 = ("histogram_quantile(0.99, sum by (le) "
        "(rate(ml_engine_request_duration_seconds_bucket[{window}])))")
_P50 = _P99.replace("0.99", "0.5")
# ml_engine_requests counts answered requests by outcome (ok, expired, invalid, ...).
_THROUGHPUT = "sum(rate(ml_engine_requests_total[{window}]))"


def _per_service(aggregate: str, metric: str) -> str:
    """METRIC by the service it is about. The hub exports it with a label `service`, which
    the scrape's own target label `service` ("hub") turns into `exported_service`: take
    it back, as alert_rules.yml does (with honor_labels it keeps `service` unchanged)."""
    return (f'{aggregate} by (service) (label_replace({metric}, "service", "$1", '
            '"exported_service", "(.+)"))')


CHARTS: dict[str, Chart] = {
    "cpu": Chart("CPU used (of one core)", _per_service("max", "unistack_cpu_used_ratio"),
                 "ratio"),
    "memory": Chart("Memory used (of the machine)",
                    _per_service("max", "unistack_memory_used_ratio"), "ratio"),
    "gpu_memory": Chart("GPU memory used", "ml_engine_gpu_memory_used_bytes", "bytes"),
    "ml_p99": Chart("ML p99 latency", _P99, "seconds"),
    "throughput": Chart("ML throughput", _THROUGHPUT, "per_second"),
    "backlog": Chart("ML backlog", "ml_engine_stream_length", "count"),
    "restarts": Chart("Restarts in the flap window",
                      _per_service("sum", "unistack_service_restarts"), "count"),
}


class Span(NamedTuple):
    """A range the charts show: its length, the step (120-300 points) and rate window."""

    seconds: float
    step: float
    window: str


RANGES: dict[str, Span] = {
    "15m": Span(900, 5, "1m"),  # 180 points, one per scrape at the default 5 s
    "1h": Span(3600, 15, "1m"),  # 240 points
    "24h": Span(86400, 300, "5m"),  # 288 points; the window covers the whole step
}


class UnknownMetric(LookupError):
    """A chart name that is not in CHARTS."""


class BadRange(ValueError):
    """A range that is not in RANGES."""


def _number(raw: Any) -> float | None:
    """A sample value as JSON can carry it: NaN and infinities (no data) are None."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _series(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"labels": item.get("metric", {}),
             "points": [[float(ts), _number(value)] for ts, value in item.get("values", [])]}
            for item in result]


def history(metrics: Metrics, metric: str, range_name: str, now: float) -> dict[str, Any]:
    """METRIC's series over RANGE_NAME up to NOW, or `available: false` with the reason
    when Prometheus cannot answer; raises UnknownMetric / BadRange for a bad request."""
    if metric not in CHARTS:
        raise UnknownMetric(f"unknown metric {metric!r}: expected one of {', '.join(CHARTS)}")
    if range_name not in RANGES:
        raise BadRange(f"unknown range {range_name!r}: expected one of {', '.join(RANGES)}")
    chart, span = CHARTS[metric], RANGES[range_name]
    document: dict[str, Any] = {"metric": metric, "range": range_name, "title": chart.title,
                                "unit": chart.unit, "step": span.step,
                                "start": now - span.seconds, "end": now}
    promql = chart.promql.format(window=span.window)
    try:
        result = metrics.query_range(promql, now - span.seconds, now, span.step)
    except MetricsUnavailable as exc:
        return {**document, "available": False, "reason": f"metrics unavailable: {exc}"}
    return {**document, "available": True, "series": _series(result)}


def _scalar(metrics: Metrics, promql: str) -> float | None:
    """The value of a one-element instant vector, or None when there is no data."""
    result = metrics.query(promql)
    return _number(result[0]["value"][1]) if result else None


def ml_figures(metrics: Metrics) -> dict[str, Any]:
    """The engine's latency (p50, p99) and requests/s over the last minute."""
    try:
        figures = {"p50_seconds": _scalar(metrics, _P50.format(window="1m")),
                   "p99_seconds": _scalar(metrics, _P99.format(window="1m")),
                   "requests_per_second": _scalar(metrics, _THROUGHPUT.format(window="1m"))}
    except MetricsUnavailable as exc:
        return {"available": False, "reason": f"metrics unavailable: {exc}"}
    return {"available": True, **figures}
