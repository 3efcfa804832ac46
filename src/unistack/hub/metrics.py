"""The hub's own Prometheus metrics, in a registry of its own (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from unistack.hub.status import FAILED, READY, STARTING, STOPPED, UNHEALTHY, ServiceStatus


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._ready = Gauge("unistack_service_ready", "1 when the service passes its readiness "
                            "probe", ["service"], registry=self.registry)
        self._state = Gauge("unistack_service_state", "1 for the service's current hub state",
                            ["service", "state"], registry=self.registry)
        self._probe = Gauge("unistack_probe_latency_seconds", "Latency of the last readiness "
                            "probe", ["service"], registry=self.registry)
        self._rounds = Counter("unistack_hub_rounds", "Reconcile rounds completed",
                               registry=self.registry)
        self._transitions = Counter("unistack_service_transitions", "State changes",
                                    ["service", "to"], registry=self.registry)

    def observe(self, status: ServiceStatus, latency: float | None) -> None:
        self._ready.labels(status.name).set(1 if status.ready else 0)
        for state in (STOPPED, STARTING, READY, UNHEALTHY, FAILED):
            self._state.labels(status.name, state).set(1 if status.state == state else 0)
        if latency is not None:
            self._probe.labels(status.name).set(latency)

    def transition(self, service: str, to: str) -> None:
        self._transitions.labels(service, to).inc()

    def round_done(self) -> None:
        self._rounds.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
