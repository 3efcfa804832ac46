"""The hub's reconcile loop: observe supervisord and the probes, compare with the desired
state (every service running and ready), act — safe to run again at any moment.

A service is started only once every dependency is READY. A restarted hub adopts what
is running: a RUNNING program is never started again, only probed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from unistack.config import Settings
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.hub.status import (
    FAILED,
    READY,
    STARTING,
    STOPPED,
    UNHEALTHY,
    ServiceStatus,
    next_state,
)
from unistack.probes import Probe, ProbeResult
from unistack.services import ServiceSpec, start_order
from unistack.supervisor import ProcessInfo, SupervisorClient, SupervisorError

log = logging.getLogger("unistack.hub")

_FAST_ROUND = 0.02  # seconds between rounds while a service is settling
_SEVERITY = {READY: "info", STARTING: "info", STOPPED: "warning",
             UNHEALTHY: "critical", FAILED: "critical"}


@dataclass
class _Tracked:
    status: ServiceStatus
    started_at: float


class Reconciler:
    """Owns the hub's view of every service and the actions that move it toward ready."""

    def __init__(
        self,
        settings: Settings,
        supervisor: SupervisorClient,
        probes: dict[str, Probe],
        *,
        events: EventLog,
        metrics: HubMetrics,
        registry: tuple[ServiceSpec, ...],
    ) -> None:
        self._settings = settings
        self._supervisor = supervisor
        self._probes = probes
        self._events = events
        self._metrics = metrics
        self._order = start_order(registry)
        self._clock: Callable[[], float] = time.time
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(probes)),
                                        thread_name_prefix="probe")
        now = self._clock()
        self._tracked = {
            spec.name: _Tracked(ServiceStatus(
                spec.name, spec.group, spec.critical, STOPPED, False, 0, now,
                "not observed yet", spec.url(settings)), 0.0)
            for spec in self._order
        }
        self._lock = threading.Lock()
        self.last_round = time.monotonic()

    def statuses(self) -> list[ServiceStatus]:
        with self._lock:
            return [tracked.status for tracked in self._tracked.values()]

    def run(self, stop: threading.Event) -> None:
        """Reconcile until STOP is set; rounds come fast while anything is settling."""
        while not stop.is_set():
            settling = self.round()
            stop.wait(_FAST_ROUND if settling else self._settings.hub_loop_interval)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def round(self) -> bool:
        """One observe-compare-act pass; True while some service is still starting."""
        try:
            processes = self._supervisor.processes()
        except SupervisorError as exc:
            log.warning("cannot observe supervisord: %s", exc)
            processes = {}
        results = self._probe_all(processes)
        now = self._clock()
        for spec in self._order:
            info = processes.get(spec.name)
            self._observe(spec, info, results.get(spec.name), now)
            self._act(spec, info, now)
        self.last_round = time.monotonic()
        self._metrics.round_done()
        return any(s.state == STARTING for s in self.statuses())

    def _probe_all(self, processes: dict[str, ProcessInfo]) -> dict[str, ProbeResult]:
        futures: dict[str, Future[ProbeResult]] = {
            name: self._pool.submit(probe.check)
            for name, probe in self._probes.items()
            if name in processes and processes[name].state in ("STARTING", "RUNNING")
        }
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=self._settings.probe_timeout + 1.0)
            except FutureTimeout:
                results[name] = ProbeResult(False, "probe did not return in time", -1.0)
        return results

    def _observe(
        self, spec: ServiceSpec, info: ProcessInfo | None, result: ProbeResult | None, now: float
    ) -> None:
        tracked = self._tracked[spec.name]
        old = tracked.status
        if spec.autostart:
            # The hub itself: it is ready while this loop runs.
            program, ok, detail, pid = "RUNNING", True, "ready", os.getpid()
        else:
            program = info.state if info else "UNKNOWN"
            ok = bool(result and result.ok)
            detail = result.detail if result else (info.description if info else "unknown")
            pid = info.pid if info else 0
            if info and not tracked.started_at and program in ("STARTING", "RUNNING"):
                tracked.started_at = info.since  # adopted: running before this hub began
        state = next_state(old.state, program, ok, started_at=tracked.started_at, now=now,
                           ready_timeout=self._settings.service_ready_timeout)
        new = replace(old, state=state, ready=state == READY, pid=pid, detail=detail,
                      since=now if state != old.state else old.since)
        with self._lock:
            tracked.status = new
        self._metrics.observe(new, result.latency if result else None)
        if state != old.state:
            self._transition(old, new, now - tracked.started_at if tracked.started_at else None)

    def _transition(self, old: ServiceStatus, new: ServiceStatus, elapsed: float | None) -> None:
        detail = f"{old.state} -> {new.state}: {new.detail}"
        if new.state == READY and elapsed is not None:
            detail += f" ({elapsed:.2f} s after start)"
        log.info("%s %s", new.name, detail)
        self._metrics.transition(new.name, new.state)
        self._events.emit(new.name, new.state.lower(), _SEVERITY[new.state], detail)

    def _act(self, spec: ServiceSpec, info: ProcessInfo | None, now: float) -> None:
        if spec.autostart or info is None or info.state != "STOPPED":
            return
        waiting = [d for d in spec.depends_on if not self._tracked[d].status.ready]
        if waiting:
            return
        try:
            self._supervisor.start(spec.name)
        except SupervisorError as exc:
            log.error("%s could not be started: %s", spec.name, exc)
            return
        log.info("%s started by the hub", spec.name)
        self._tracked[spec.name].started_at = now
