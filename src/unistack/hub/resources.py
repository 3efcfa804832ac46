"""Resources: CPU and memory of every service and free disk of every state directory,
sampled in a thread of their own, with thresholds and hysteresis. Crossing a threshold
raises an event (never a restart). The hub reports a nearly full disk itself, because a
service whose log writes fail says nothing. With METRICS, every sample is also exported
as a gauge, which Prometheus's rules in alert_rules.yml evaluate."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from unistack.config import Settings
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.policy import Threshold

log = logging.getLogger("unistack.hub")


class ResourceWatcher:
    def __init__(
        self, settings: Settings, pids: Callable[[], dict[str, int]], events: EventLog,
        directories: list[Path], metrics: HubMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pids = pids
        self._events = events
        self._directories = directories
        self._thresholds: dict[str, Threshold] = {}
        self._processes: dict[str, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._settings.resource_interval):
            self.sample()

    def sample(self) -> None:
        """One pass over every service and directory; emits events on level changes."""
        memory = self._sample_services()
        self._sample_disks()
        if self._metrics is not None:
            self._metrics.memory_used(memory)

    def _sample_services(self) -> dict[str, float]:
        """CPU and memory thresholds of every service; returns memory shares (0..1)."""
        s = self._settings
        margin = s.resource_hysteresis_percent
        shares: dict[str, float] = {}
        for service, pid in self._pids().items():
            cpu, memory = self._usage(service, pid)
            if cpu is not None:
                self._check(f"{service}/cpu", cpu, Threshold(s.cpu_warn_percent, margin),
                            service, f"CPU {cpu:.0f}% of one core")
            if memory is not None:
                shares[service] = memory / 100.0
                self._check(f"{service}/memory", memory,
                            Threshold(s.memory_warn_percent, margin), service,
                            f"memory {memory:.1f}% of the machine")
        return shares

    def _sample_disks(self) -> None:
        s = self._settings
        margin = s.resource_hysteresis_percent
        for directory in self._directories:
            usage = shutil.disk_usage(directory)
            free = 100.0 * usage.free / usage.total
            if self._metrics is not None:
                self._metrics.disk_free(str(directory), usage.free / usage.total)
            self._check(f"disk:{directory}", free,
                        Threshold(s.disk_free_warn_percent, margin, above=False), "stack",
                        f"free disk {free:.1f}% ({usage.free // 2**20} MiB) under {directory}")

    def _usage(self, service: str, pid: int) -> tuple[float | None, float | None]:
        process = self._processes.get(service)
        try:
            if process is None or process.pid != pid:
                process = self._processes[service] = psutil.Process(pid)
                process.cpu_percent()  # the first call only primes the counter
                return None, process.memory_percent()
            return process.cpu_percent(), process.memory_percent()
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            self._processes.pop(service, None)
            return None, None

    def _check(self, key: str, value: float, fresh: Threshold, service: str, what: str) -> None:
        threshold = self._thresholds.setdefault(key, fresh)
        change = threshold.update(value)
        if change == "raised":
            limit = f"{'below' if not threshold.above else 'above'} {threshold.limit:g}%"
            self._events.emit(service, "resource", "warning", f"{what}: {limit}")
        elif change == "cleared":
            self._events.emit(service, "resource_ok", "info", f"{what}: back to normal")
