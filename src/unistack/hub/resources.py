"""Resources: CPU and memory of every service and free disk of every state directory,
sampled in a thread of their own, with thresholds and hysteresis. Crossing a threshold
raises an event (never a restart). The hub reports a nearly full disk itself, because a
service whose log writes fail says nothing. With METRICS, every sample is also exported
as a gauge, which Prometheus's rules in alert_rules.yml evaluate."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from unistack.config import Settings
from unistack.event import Kind, Severity
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.policy import Threshold

log = logging.getLogger("unistack.hub")


_FULL_BYTES = 2**20  # less free than this is a full disk: writes fail


def filesystems(directories: list[Path]) -> dict[Path, list[Path]]:
    """DIRECTORIES grouped by the mount point of the filesystem holding each."""
    groups: dict[Path, list[Path]] = {}
    for directory in directories:
        groups.setdefault(mount_point(directory), []).append(directory)
    return groups


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


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
        self.disk_warnings: list[str] = []  # raised disk thresholds, for `status`
        # The machine as the status document's `system` shows it: host CPU and memory
        # use (percent) and each state filesystem's free space.
        self.system: dict[str, Any] = {"cpu_percent": None, "memory_percent": None,
                                       "disks": []}
        self._processes: dict[str, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        psutil.cpu_percent()  # primes the host's counter: the first sample has a base
        while not self._stop.wait(self._settings.resource_interval):
            self.sample()

    def sample(self) -> None:
        """One pass over every service and directory; emits events on level changes."""
        cpu, memory = self._sample_services()
        disks = self._sample_disks()
        host = (psutil.cpu_percent(), psutil.virtual_memory().percent)
        self.system = {"cpu_percent": host[0], "memory_percent": host[1], "disks": disks}
        if self._metrics is not None:
            self._metrics.memory_used(memory)
            self._metrics.cpu_used(cpu)
            self._metrics.host(host[0] / 100.0, host[1] / 100.0)

    def _sample_services(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU and memory thresholds of every service; returns its CPU (of one core) and
        memory (of the machine) shares, 0..1."""
        s = self._settings
        margin = s.resource_hysteresis_percent
        shares: dict[str, float] = {}
        cores: dict[str, float] = {}
        for service, pid in self._pids().items():
            cpu, memory = self._usage(service, pid)
            if cpu is not None:
                cores[service] = cpu / 100.0
                self._check(f"{service}/cpu", cpu, Threshold(s.cpu_warn_percent, margin),
                            service, f"CPU {cpu:.0f}% of one core")
            if memory is not None:
                shares[service] = memory / 100.0
                self._check(f"{service}/memory", memory,
                            Threshold(s.memory_warn_percent, margin), service,
                            f"memory {memory:.1f}% of the machine")
        return cores, shares

    def _sample_disks(self) -> list[dict[str, Any]]:
        """One threshold per filesystem (var/data, var/log and var/run usually share one:
        one full disk is one incident), named by its mount point; returns each one's
        free space."""
        s = self._settings
        margin = s.resource_hysteresis_percent
        warnings, disks = [], []
        for mount, directories in filesystems(self._directories).items():
            try:
                usage = shutil.disk_usage(mount)
            except OSError:
                continue
            free = 100.0 * usage.free / usage.total
            disks.append({"path": ", ".join(str(d) for d in directories), "mount": str(mount),
                          "free_percent": round(free, 2), "free_bytes": usage.free,
                          "total_bytes": usage.total})
            if self._metrics is not None:
                for directory in directories:
                    self._metrics.disk_free(str(directory), usage.free / usage.total)
            what = f"free disk {free:.1f}% ({usage.free // 2**20} MiB) under {mount}"
            self._check(f"disk:{mount}", free,
                        Threshold(s.disk_free_warn_percent, margin, above=False), "stack", what)
            if self._thresholds[f"disk:{mount}"].raised:
                full = "disk full" if usage.free < _FULL_BYTES else "low disk"
                names = ", ".join(str(d) for d in directories)
                warnings.append(f"{full}: {what} (holds {names})")
        self.disk_warnings = warnings
        return disks

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
            self._events.emit(service, Kind.RESOURCE, Severity.WARNING, f"{what}: {limit}")
        elif change == "cleared":
            self._events.emit(service, Kind.RESOURCE_OK, Severity.INFO, f"{what}: back to normal")
