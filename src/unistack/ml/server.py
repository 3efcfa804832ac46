"""The `ml_engine` program: the worker loop plus its HTTP endpoints on ML_ENGINE_PORT.

GET /health answers from the loop's heartbeat (a hung loop is caught even while this
HTTP thread still answers), /ready only when a model is loaded, warmed up and a canary
prediction succeeded (and a GPU is in use when ML_REQUIRE_GPU=1), /metrics for
Prometheus, /facts for the hub's status (models served, the device and why, the backlog,
GPU health from NVML). The loop reconnects to Redis with capped backoff and never exits on input.
(The first `start` trains and registers a default model before the engine runs.)
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from unistack.config import ConfigError, Settings, load_settings
from unistack.logs import setup_logging
from unistack.ml import capability
from unistack.ml.engine import Engine, EngineConfig
from unistack.ml.gpu_health import GpuHealth
from unistack.ml.gpu_memory import (
    DefaultActions,
    GpuMemoryManager,
    MemoryState,
    cupy_pool_reader,
    first_reading,
    log_report,
    nvml_reader,
)
from unistack.ml.metrics import EngineMetrics
from unistack.ml.models import ModelStore
from unistack.ml.registry import ModelRegistry

log = logging.getLogger("unistack.ml")

_STALE_AFTER = 2.0  # seconds without a loop turn: /health fails
_BACKOFF_MAX = 1.0  # a Redis back is noticed within a second


class EngineService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        chooser = capability.Chooser(require_gpu=settings.ml_require_gpu == "1")
        self.choice = chooser("xgboost")  # the default model's kind decides readiness
        log.info("xgboost backend: %s (%s)", self.choice.device or "unusable",
                 self.choice.reason)
        self.registry = ModelRegistry(settings.models_dir)
        self.models = ModelStore(self.registry, chooser, report=self._model_report)
        # No redis-py retries: a commit resent after a timeout would push its replies
        # twice. The loop reconnects itself, and unanswered entries stay pending.
        self.client = redis.Redis(host=settings.redis_host, port=settings.redis_port,
                                  password=settings.redis_password, socket_timeout=5,
                                  retry=Retry(NoBackoff(), 0))
        self.engine = Engine(self.client, self.models,
                             engine_config(settings, consumer_name(settings)))
        self.metrics = EngineMetrics(self.engine, self.client, self._memory_state)
        self.engine.on_batch = self.metrics.batch
        self.engine.on_reset = lambda detail: self._report("request_stream_reset", "info", detail)
        # Only a GPU engine has device memory to watch; on CPU there is nothing to read.
        self.memory = GpuMemoryManager(
            first_reading(nvml_reader(), cupy_pool_reader()),
            DefaultActions(self.engine.set_max_batch_rows), settings.ml_max_batch_rows,
            report=self._report,
        ) if self.choice.device == "cuda" else None
        self.gpu = GpuHealth()
        self.canary_ok = False
        self.looked = False  # the registry was read once: "no model" means none, not "yet"
        self.waiting = ""  # why the loop is backing off on purpose (Redis down or loading)
        self.stop = threading.Event()

    def _report(self, kind: str, severity: str, detail: str) -> None:
        """An engine event: logged, and counted on /metrics, where alert rules see it."""
        log_report(kind, severity, detail)
        self.metrics.event(kind, severity, detail)

    def _model_report(self, kind: str, detail: str) -> None:
        self._report(kind, "warning" if kind == "model_load_failed" else "info", detail)

    def _memory_state(self) -> MemoryState | None:
        return self.memory.state if self.memory is not None else None

    def alive(self) -> tuple[bool, float]:
        """The loop turned recently, or it is waiting on purpose: waiting is not hanging."""
        age = time.monotonic() - self.engine.progress
        return age < _STALE_AFTER or bool(self.waiting), age

    def ready(self) -> tuple[bool, str, bool]:
        """Ready or not, why, and whether a restart could help (False: the hub shows the
        engine DEGRADED and leaves it running; the fix is the operator's)."""
        starting = self.waiting or ("" if self.looked else  # its models are being loaded
                                    f"loading the models from {self.settings.models_dir}")
        if starting:
            return False, starting, True
        if self.choice.device is None:
            return False, self.choice.reason, False
        if self.models.unservable:
            return False, "; ".join(self.models.unservable.values()), False
        if not self.models.names():
            return False, (f"no model loaded from {self.settings.models_dir}; register one "
                           "with `unistack ml train`"), False
        if not self.canary_ok:
            return False, "canary prediction has not succeeded", True
        fresh = time.monotonic() - self.engine.progress < _STALE_AFTER
        return fresh, "loop heartbeat", True

    def facts(self) -> dict[str, Any]:
        """What the dashboard's ML and GPU cards show."""
        models = [{"name": name, "version": d.get("version"), "kind": d.get("kind"),
                   "device": d.get("device")} for name, d in self.models.describe().items()]
        return {"models": models, "device": self.choice.device or "none",
                "device_reason": self.choice.reason, **self.metrics.backlog(),
                "gpu": self.gpu.report()}

    def canary(self) -> None:
        for name in self.models.names():
            loaded = self.models.get(name)
            if loaded is not None:
                loaded.backend.predict(np.zeros((1, loaded.n_features), dtype=np.float32))
        self.canary_ok = bool(self.models.names())

    def run(self) -> None:
        backoff = 0.1
        next_refresh = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() >= next_refresh:
                    self.models.refresh()
                    self.looked = True
                    self.canary()
                    next_refresh = time.monotonic() + self.settings.ml_model_refresh_interval
                self.engine.ensure_group()
                if self.memory is not None:
                    self.memory.check()
                self.waiting = ""
                while not self.stop.is_set() and time.monotonic() < next_refresh:
                    self.engine.step()
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                    redis.ResponseError) as exc:
                if isinstance(exc, redis.ResponseError) and not _refusing_writes(exc):
                    raise
                reason = str(exc).split(". ", 1)[0]
                log.warning("Redis unavailable (%s); retrying in %.1f s", reason, backoff)
                self.waiting = f"waiting for redis: {reason}"
                self.stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        with contextlib.suppress(redis.RedisError):
            self.engine.finish()


def _refusing_writes(exc: redis.ResponseError) -> bool:
    """Redis answers but refuses writes until its fault is fixed: it cannot persist
    (MISCONF: a full or unwritable disk), is full (OOM at maxmemory) or is a read-only
    replica. The engine waits, as for a Redis that is down; crashing would only add a
    crash loop to the real fault."""
    return isinstance(exc, redis.ReadOnlyError | redis.OutOfMemoryError) or \
        str(exc).startswith("MISCONF")


def _handler(service: EngineService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                alive, age = service.alive()
                body: dict[str, Any] = {"alive": alive, "loop_age": round(age, 3),
                                        "waiting": service.waiting}
                self._send(200 if alive else 503, json.dumps(body).encode(), "application/json")
            elif self.path == "/ready":
                ok, why, restart_helps = service.ready()
                body = {"ready": ok, "detail": why, "restart_helps": restart_helps,
                        "models": service.models.describe()}
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            elif self.path == "/facts":
                self._send(200, json.dumps(service.facts()).encode(), "application/json")
            elif self.path == "/metrics":
                text = service.metrics.render(service.models.describe().items())
                self._send(200, text, "text/plain; version=0.0.4")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

    return Handler


def engine_config(settings: Settings, consumer: str) -> EngineConfig:
    """The worker's configuration, as config.env and .env set it; CONSUMER its name in the
    stream's group."""
    return EngineConfig(
        consumer=consumer, max_batch_rows=settings.ml_max_batch_rows,
        max_wait_us=settings.ml_max_wait_us, block_ms=100,
        claim_idle_ms=settings.ml_claim_idle_ms, claim_every_s=1.0,
        max_deliveries=settings.ml_max_deliveries, reply_ttl_s=settings.ml_reply_ttl,
        dead_letter_maxlen=10000)


def consumer_name(settings: Settings) -> str:
    """ML_ENGINE_CONSUMER, else `engine-<host name>`: stable across restarts on one host
    (a restarted engine reads its own pending entries first) and unique per replica in
    Kubernetes, where the host name is the pod's name."""
    return settings.ml_engine_consumer or f"engine-{socket.gethostname()}"


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"unistack ml_engine: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, "ml_engine")
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    service = EngineService(settings)
    address = settings.unistack_bind_address
    server = ThreadingHTTPServer((address, settings.ml_engine_port), _handler(service))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(5.0,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: service.stop.set())
    log.info("ml_engine serving on %s:%d", address, settings.ml_engine_port)
    service.run()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
