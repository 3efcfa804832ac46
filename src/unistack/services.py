"""The service registry: every service of the stack declared once, as data.

Start order, stop order, supervisord priorities, Prometheus scrape targets and the
status table all derive from `REGISTRY`. A service's name is its supervisord program.
"""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from unistack.config import Settings


@dataclass(frozen=True)
class ProbeSpec:
    """What a probe checks: `redis-alive` / `redis-ready` (AUTH, PING, INFO persistence)
    or `http` (GET PATH answers 200)."""

    kind: str
    path: str = ""


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its supervisord program, port, probes, dependencies and role."""

    name: str
    port_key: str
    group: str
    critical: bool
    liveness: ProbeSpec
    readiness: ProbeSpec
    depends_on: tuple[str, ...] = ()
    # What a dependency's restart means for this service: it waits for every dependency
    # (it is never started before they are ready), and those named here also restart it
    # once they are ready again (e.g. a client that cannot reconnect by itself).
    restart_with: tuple[str, ...] = ()
    metrics_path: str | None = None
    # supervisord starts an autostart service itself (the hub); the hub starts the rest.
    autostart: bool = False
    # Our own Python services dump their stacks on SIGUSR1 (faulthandler) for incidents.
    python: bool = False
    # What the hub reads for the status document's `facts` of this service (hub/facts.py):
    # "redis-info" (INFO memory, persistence, keyspace, clients), "prometheus-targets"
    # (active scrape targets up), "http-json" (GET facts_path); "" reads nothing.
    facts: str = ""
    facts_path: str = ""

    def port(self, settings: Settings) -> int:
        return settings.port(self.port_key)

    def url(self, settings: Settings) -> str:
        scheme = "redis" if self.readiness.kind.startswith("redis") else "http"
        return f"{scheme}://{settings.host(self.port_key)}:{self.port(settings)}"


REGISTRY: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="redis",
        port_key="REDIS_PORT",
        group="infrastructure",
        critical=True,
        liveness=ProbeSpec("redis-alive"),
        readiness=ProbeSpec("redis-ready"),
        facts="redis-info",
    ),
    ServiceSpec(
        name="prometheus",
        port_key="PROMETHEUS_PORT",
        group="infrastructure",
        critical=False,
        liveness=ProbeSpec("http", "/-/healthy"),
        readiness=ProbeSpec("http", "/-/ready"),
        metrics_path="/metrics",
        facts="prometheus-targets",
        facts_path="/api/v1/targets?state=active",
    ),
    ServiceSpec(
        name="ml_engine",
        port_key="ML_ENGINE_PORT",
        group="ml",
        critical=True,
        # Liveness is the worker loop's heartbeat, so a hung loop is caught even while
        # the HTTP thread answers; readiness adds model loaded, warmed up and a canary.
        liveness=ProbeSpec("http", "/health"),
        readiness=ProbeSpec("http", "/ready"),
        depends_on=("redis",),
        metrics_path="/metrics",
        python=True,
        facts="http-json",
        facts_path="/facts",
    ),
    ServiceSpec(
        name="dashboard",
        port_key="DASHBOARD_PORT",
        group="frontend",
        critical=False,
        # No depends_on: the hub starts it, so the hub is up; it shows "hub unreachable"
        # by itself while the hub restarts.
        liveness=ProbeSpec("http", "/health"),
        readiness=ProbeSpec("http", "/ready"),
        metrics_path="/metrics",
        python=True,
    ),
    ServiceSpec(
        name="hub",
        port_key="HUB_PORT",
        group="infrastructure",
        critical=True,
        liveness=ProbeSpec("http", "/health"),
        readiness=ProbeSpec("http", "/health"),
        metrics_path="/metrics",
        autostart=True,
        python=True,
    ),
)

_PRIORITY_STEP = 100
# The hub controls the others: supervisord starts it first and stops it first.
_AUTOSTART_PRIORITY = 900


class RegistryError(Exception):
    """The registry is inconsistent (unknown dependency, cycle, duplicate name)."""


def by_name(registry: tuple[ServiceSpec, ...] = REGISTRY) -> dict[str, ServiceSpec]:
    names = [spec.name for spec in registry]
    if len(set(names)) != len(names):
        raise RegistryError(f"duplicate service names in {names}")
    return {spec.name: spec for spec in registry}


def start_order(registry: tuple[ServiceSpec, ...] = REGISTRY) -> list[ServiceSpec]:
    """Services in dependency order, dependencies first; autostart services last."""
    specs = by_name(registry)
    graph: TopologicalSorter[str] = TopologicalSorter()
    for spec in registry:
        unknown = set(spec.depends_on) - specs.keys()
        if unknown:
            raise RegistryError(f"{spec.name} depends on unknown service(s) {sorted(unknown)}")
        if not set(spec.restart_with) <= set(spec.depends_on):
            raise RegistryError(f"{spec.name}: restart_with {list(spec.restart_with)} must "
                                f"name dependencies, not {list(spec.depends_on)}")
        graph.add(spec.name, *spec.depends_on)
    try:
        order = [specs[name] for name in graph.static_order()]
    except CycleError as exc:
        raise RegistryError(f"dependency cycle: {' -> '.join(exc.args[1])}") from exc
    return [s for s in order if not s.autostart] + [s for s in order if s.autostart]


def stop_order(registry: tuple[ServiceSpec, ...] = REGISTRY) -> list[ServiceSpec]:
    """The controller first, then dependents before their dependencies."""
    order = start_order(registry)
    return [s for s in order if s.autostart] + [s for s in reversed(order) if not s.autostart]


def priorities(registry: tuple[ServiceSpec, ...] = REGISTRY) -> dict[str, int]:
    """supervisord priorities: lower starts first and stops last."""
    managed = [s for s in start_order(registry) if not s.autostart]
    result = {spec.name: (i + 1) * _PRIORITY_STEP for i, spec in enumerate(managed)}
    controller = max(_AUTOSTART_PRIORITY, (len(managed) + 1) * _PRIORITY_STEP)
    result.update({s.name: controller for s in registry if s.autostart})
    return result
