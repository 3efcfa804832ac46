"""The engine's Prometheus metrics: request outcomes, latency, queue wait and batch-size
histograms, the stream's backlog, pending and dead letters, served model versions, GPU
memory, and the engine's own events (model load failures, GPU memory steps).

Histograms take a whole batch at once (`BulkHistogram.observe_many`: one lock and a
bisect per value), so metrics cost the hot path a few microseconds per batch of one
request (numpy's per-call overhead cost 18 µs) and well under one per request of a large
batch. Times come from the entry id (Redis's millisecond clock on this machine), so
queue wait and duration are exact to about a millisecond.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from unistack.ml.engine import BatchTiming, Engine
from unistack.ml.gpu_memory import MemoryState
from unistack.ml.keys import DEAD_LETTERS, GROUP, STREAM

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = tuple(float(2**n) for n in range(13))  # 1 .. 4096 rows


class BulkHistogram(Collector):
    """A Prometheus histogram that takes many observations in one call."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._doc = name, documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self._bounds, self._counts
        with self._lock:
            for value in values:
                counts[bisect.bisect_left(bounds, value)] += 1  # le is inclusive
                self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = list(itertools.accumulate(self._counts))
            total = self._sum
        labels = [_go_float(bound) for bound in self._bounds] + ["+Inf"]
        family = HistogramMetricFamily(self._name, self._doc)
        family.add_metric([], list(zip(labels, cumulative, strict=True)), total)
        yield family


def _go_float(value: float) -> str:
    """A bucket bound written as prometheus_client writes it ("1.0", "0.005")."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class EngineMetrics:
    """Everything /metrics shows for one engine, in a registry of its own."""

    def __init__(self, engine: Engine, client: redis.Redis,
                 memory: Callable[[], MemoryState | None] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        self._engine, self._client, self._memory = engine, client, memory
        self._outcomes = Counter("ml_engine_requests", "Requests answered, by outcome",
                                 ["outcome"], registry=self.registry)
        # Engine.counts also holds work done, which is not a request outcome.
        self._work = {name: Counter(f"ml_engine_{name}", f"{name.replace('_', ' ')} (total)",
                                    registry=self.registry)
                      for name in ("batches", "rows", "reclaimed", "dead_lettered")}
        self._seen: dict[str, int] = {}
        self._backlog = {"stream_length": 0, "pending": 0, "dead_letters": 0}  # last read
        self._events = Counter("ml_engine_events", "Engine events (model loads, GPU memory "
                               "steps)", ["kind", "severity"], registry=self.registry)
        self.duration = self._histogram("ml_engine_request_duration_seconds",
                                        "Request enqueued to reply committed", LATENCY_BUCKETS)
        self.queue_wait = self._histogram("ml_engine_queue_wait_seconds",
                                          "Request enqueued to read by the engine",
                                          LATENCY_BUCKETS)
        self.predict = self._histogram("ml_engine_predict_seconds",
                                       "Seconds in the model per batch", LATENCY_BUCKETS)
        self.batch_rows = self._histogram("ml_engine_batch_rows", "Rows per predicted batch",
                                          BATCH_BUCKETS)
        self._gauges = self._make_gauges()

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> BulkHistogram:
        histogram = BulkHistogram(name, doc, buckets)
        self.registry.register(histogram)
        return histogram

    def _make_gauges(self) -> dict[str, Gauge]:
        specs = {
            "stream_length": "Requests in the stream, not yet answered (the backlog)",
            "pending": "Requests delivered to a consumer and not yet answered",
            "oldest_pending_seconds": "Age of the oldest pending request",
            "dead_letters": "Entries in the dead-letter stream",
            "gpu_memory_used_bytes": "GPU memory in use (CUDA engines only)",
            "gpu_memory_total_bytes": "GPU memory in total (CUDA engines only)",
            "gpu_memory_level": "GPU memory pressure level, 0 normal .. 3 batch shrunk",
            "max_batch_rows": "Current batch cap (the GPU memory manager may shrink it)",
        }
        gauges = {name: Gauge(f"ml_engine_{name}", doc, registry=self.registry)
                  for name, doc in specs.items()}
        gauges["model_version"] = Gauge("ml_engine_model_version", "Served version per model",
                                        ["model", "kind", "device"], registry=self.registry)
        return gauges

    # --- fed by the engine and its service -------------------------------------------

    def batch(self, timing: BatchTiming) -> None:
        """One answered batch: one histogram call each, whatever its size."""
        enqueued = [ms / 1000.0 for ms in timing.enqueued_ms]
        self.queue_wait.observe_many([max(timing.read_at - at, 0.0) for at in enqueued])
        self.duration.observe_many([max(timing.committed_at - at, 0.0) for at in enqueued])
        if timing.rows:
            self.predict.observe_many((timing.predict_s,))
            self.batch_rows.observe_many((float(timing.rows),))

    def event(self, kind: str, severity: str, detail: str) -> None:
        self._events.labels(kind, severity).inc()

    # --- read at scrape time --------------------------------------------------------

    def render(self, models: Iterable[tuple[str, dict[str, Any]]] = ()) -> bytes:
        self._sync_counts()
        self._sync_models(models)
        self._sync_memory()
        self._gauges["max_batch_rows"].set(self._engine.max_batch_rows)
        with contextlib.suppress(redis.RedisError):  # Redis down: keep the last values
            self._sync_stream()
        return generate_latest(self.registry)

    def _sync_counts(self) -> None:
        for name, count in list(self._engine.counts.items()):
            counter = self._work.get(name) or self._outcomes.labels(name)
            counter.inc(count - self._seen.get(name, 0))
            self._seen[name] = count

    def _sync_models(self, models: Iterable[tuple[str, dict[str, Any]]]) -> None:
        gauge = self._gauges["model_version"]
        gauge.clear()
        for name, described in models:
            gauge.labels(name, str(described.get("kind", "")),
                         str(described.get("device", ""))).set(described["version"])

    def _sync_memory(self) -> None:
        state = self._memory()
        if state is None or state.ratio is None:
            return
        self._gauges["gpu_memory_used_bytes"].set(state.used_bytes)
        self._gauges["gpu_memory_total_bytes"].set(state.total_bytes)
        self._gauges["gpu_memory_level"].set(state.level)

    def backlog(self) -> dict[str, int]:
        """The stream's length, pending and dead-letter counts, read now (the last values
        when Redis does not answer)."""
        with contextlib.suppress(redis.RedisError):
            self._sync_stream()
        return dict(self._backlog)

    def _sync_stream(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(STREAM)
        pipe.xpending(STREAM, GROUP)
        pipe.xlen(DEAD_LETTERS)
        length, pending, dead = pipe.execute(raise_on_error=False)
        if isinstance(length, int):
            self._set("stream_length", length)
        if isinstance(dead, int):
            self._set("dead_letters", dead)
        if isinstance(pending, dict):  # an error (no group yet) leaves the last values
            self._set("pending", int(pending["pending"]))
            oldest = pending.get("min")
            age = time.time() - int(oldest.split(b"-")[0]) / 1000 if oldest else 0.0
            self._gauges["oldest_pending_seconds"].set(max(age, 0.0))

    def _set(self, name: str, value: int) -> None:
        self._gauges[name].set(value)
        self._backlog[name] = value
