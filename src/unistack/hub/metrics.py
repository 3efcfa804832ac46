"""The hub's own Prometheus metrics, in a registry of its own (no process-global state)."""

from __future__ import annotations

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

    def observe(self, status: ServiceStatus) -> None:
        self._ready.labels(status.name).set(1 if status.ready else 0)
        self._restarts.labels(status.name).set(status.restarts)
        for state in STATES:
            self._state.labels(status.name, state).set(1 if status.state == state else 0)

    def event(self, service: str, kind: str) -> None:
        self._events.labels(service, kind).inc()

    def round_done(self) -> None:
        self._rounds.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
