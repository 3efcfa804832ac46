"""The hub's own Prometheus metrics, in a registry of its own (no process-global state):
service states, events, and the resource samples that alert_rules.yml evaluates."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from unistack.hub.status import ServiceStatus
from unistack.policy import STATES


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._ready = Gauge("unistack_service_ready", "1 when the service passes its readiness "
                            "probe", ["service"], registry=self.registry)
        self._state = Gauge("unistack_service_state", "1 for the service's current hub state",
                            ["service", "state"], registry=self.registry)
        self._restarts = Gauge("unistack_service_restarts", "Restarts within the flap window",
                               ["service"], registry=self.registry)
        self._rounds = Counter("unistack_hub_rounds", "Reconcile rounds completed",
                               registry=self.registry)
        self._events = Counter("unistack_events", "Events emitted", ["service", "kind"],
                               registry=self.registry)
        self._memory = Gauge("unistack_memory_used_ratio", "Share of the machine's memory "
                             "used by the service's process (0..1)", ["service"],
                             registry=self.registry)
        self._disk_free = Gauge("unistack_disk_free_ratio", "Free share of the filesystem "
                                "holding a state directory (0..1)", ["path"],
                                registry=self.registry)
        self._memory_services: set[str] = set()

    def observe(self, status: ServiceStatus) -> None:
        self._ready.labels(status.name).set(1 if status.ready else 0)
        self._restarts.labels(status.name).set(status.restarts)
        for state in STATES:
            self._state.labels(status.name, state).set(1 if status.state == state else 0)

    def event(self, service: str, kind: str) -> None:
        self._events.labels(service, kind).inc()

    def memory_used(self, ratios: Mapping[str, float]) -> None:
        """Every sampled service's memory share; one no longer sampled is dropped, so a
        stopped service does not keep its last value (and its alert) forever."""
        for service in self._memory_services - ratios.keys():
            self._memory.remove(service)
        for service, ratio in ratios.items():
            self._memory.labels(service).set(ratio)
        self._memory_services = set(ratios)

    def disk_free(self, path: str, ratio: float) -> None:
        self._disk_free.labels(path).set(ratio)

    def round_done(self) -> None:
        self._rounds.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
