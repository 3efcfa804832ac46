"""Facts: what a service's card shows beyond its state. Redis: memory, keys, last save,
AOF state, clients; Prometheus: active targets up; the ML engine: models served, device,
backlog and GPU health (its /facts). The registry names what each service has
(`ServiceSpec.facts`). A thread of their own reads them every few seconds from services
that are ready, so `/status` serves them from memory and a slow service never delays it;
a service whose facts cannot be read has none ({}), never stale ones.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from unistack.config import Settings
from unistack.probes import info_fields, redis_command
from unistack.services import ServiceSpec

log = logging.getLogger("unistack.hub")

_INTERVAL = 2.0  # seconds between two readings
_TIMEOUT = 0.5  # seconds one reading may take
_NO_ENGINE = {"available": False, "devices": [],
              "reason": "unknown: the ML engine, which reads the GPUs, is not answering"}


def redis_facts(info: dict[str, str]) -> dict[str, Any]:
    """The Redis card's figures from INFO memory, persistence, keyspace and clients."""
    keys = sum(int(part.split("=", 1)[1]) for key, value in info.items()
               if key.startswith("db") for part in value.split(",") if part.startswith("keys="))
    return {
        "used_memory_bytes": int(info.get("used_memory", 0)),
        "maxmemory_bytes": int(info.get("maxmemory", 0)),
        "keys": keys,
        "last_save": int(info.get("rdb_last_save_time", 0)),
        "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status", ""),
        "aof_enabled": info.get("aof_enabled") == "1",
        "aof_last_write_status": info.get("aof_last_write_status", ""),
        "connected_clients": int(info.get("connected_clients", 0)),
    }


def prometheus_facts(document: Any) -> dict[str, Any]:
    """Active scrape targets, how many are up and how many not scraped yet (health
    "unknown": right after a start, not a failure), from /api/v1/targets."""
    targets = document.get("data", {}).get("activeTargets", [])
    health = [t.get("health") for t in targets]
    return {"targets_up": health.count("up"), "targets_unknown": health.count("unknown"),
            "targets_total": len(targets)}


def get_json(host: str, port: int, path: str, timeout: float = _TIMEOUT) -> Any:
    """GET PATH on HOST:PORT as JSON; raises OSError or ValueError."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise ValueError(f"GET {path} answered HTTP {response.status}")
        return json.loads(body)
    except http.client.HTTPException as exc:
        raise ValueError(f"GET {path}: {exc}") from exc
    finally:
        connection.close()


class Facts:
    """The latest facts of every service of the registry, and the GPU report."""

    def __init__(self, settings: Settings, registry: tuple[ServiceSpec, ...],
                 ready: Callable[[str], bool]) -> None:
        self._settings = settings
        self._specs = [spec for spec in registry if spec.facts]
        self._ready = ready
        self._facts: dict[str, dict[str, Any]] = {}
        self.gpu: dict[str, Any] = dict(_NO_ENGINE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def of(self, name: str) -> dict[str, Any]:
        return self._facts.get(name, {})

    def _run(self) -> None:
        while True:
            self.collect()
            if self._stop.wait(_INTERVAL):
                return

    def collect(self) -> None:
        """One reading of every service that is ready; the others have none."""
        facts: dict[str, dict[str, Any]] = {}
        for spec in self._specs:
            if not self._ready(spec.name):
                continue
            try:
                facts[spec.name] = self._read(spec)
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
                log.debug("facts of %s not read: %s", spec.name, exc)
        engine = facts.get("ml_engine", {})
        self.gpu = engine.pop("gpu", None) or dict(_NO_ENGINE)
        self._facts = facts

    def _read(self, spec: ServiceSpec) -> dict[str, Any]:
        port, host = spec.port(self._settings), self._settings.host(spec.port_key)
        if spec.facts == "redis-info":
            info = redis_command(port, self._settings.redis_password, _TIMEOUT,
                                 "INFO", "memory", "persistence", "keyspace", "clients",
                                 host=host)
            return redis_facts(info_fields(info))
        document = get_json(host, port, spec.facts_path)
        if spec.facts == "prometheus-targets":
            return prometheus_facts(document)
        if not isinstance(document, dict):
            raise ValueError(f"GET {spec.facts_path} is not a JSON object")
        return document
