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
        self._cpu = Gauge("unistack_cpu_used_ratio", "Share of one core used by the service's "
                          "process (0..1 per core)", ["service"], registry=self.registry)
        self._host = Gauge("unistack_host_used_ratio", "Share of the machine's CPU (all cores) "
                           "and memory in use (0..1)", ["resource"], registry=self.registry)
        self._memory_services: set[str] = set()
        self._cpu_services: set[str] = set()

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
        self._memory_services = _per_service(self._memory, self._memory_services, ratios)

    def cpu_used(self, ratios: Mapping[str, float]) -> None:
        """Every sampled service's CPU share (of one core), dropped like memory."""
        self._cpu_services = _per_service(self._cpu, self._cpu_services, ratios)

    def host(self, cpu: float, memory: float) -> None:
        self._host.labels("cpu").set(cpu)
        self._host.labels("memory").set(memory)

    def disk_free(self, path: str, ratio: float) -> None:
        self._disk_free.labels(path).set(ratio)

    def round_done(self) -> None:
        self._rounds.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _per_service(gauge: Gauge, known: set[str], ratios: Mapping[str, float]) -> set[str]:
    """Set GAUGE per service from RATIOS; remove the services no longer there."""
    for service in known - ratios.keys():
        gauge.remove(service)
    for service, ratio in ratios.items():
        gauge.labels(service).set(ratio)
    return set(ratios)
