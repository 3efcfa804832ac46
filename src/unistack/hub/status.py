"""Status records of the hub and the overall verdict. Pure: no I/O.

The CLI, the hub API and (later) the dashboard all read these records; the states
themselves and their transitions belong to `unistack.policy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from unistack.event import Kind, Severity

# Overall verdicts and the exit codes of `status`.
HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    group: str
    critical: bool
    state: str
    ready: bool
    pid: int
    since: float
    detail: str
    url: str
    restarts: int = 0  # restarts within the flap window
    incident: str = ""  # kind of the open incident, if any
    last_incident: str = ""  # path of the last incident file

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def overall(services: list[ServiceStatus]) -> str:
    """down if a critical service is not ready, degraded if another is not, else healthy."""
    if any(s.critical and not s.ready for s in services):
        return DOWN
    if any(not s.ready for s in services):
        return DEGRADED
    return HEALTHY


def status_document(
    services: list[ServiceStatus], now: float, hub: dict[str, Any],
    warnings: list[str] | None = None, facts: Callable[[str], dict[str, Any]] | None = None,
    **machine: Any,
) -> dict[str, Any]:
    """The JSON of `GET /status` and `status --json`; WARNINGS are the stack's own
    conditions that no service shows (a full or low disk, files held in memory); FACTS
    gives each service's card figures (Redis memory, the engine's models, ...); MACHINE
    adds `system` (CPU, memory, disks) and `gpu` (GPU health) where the hub has them."""
    return {
        "overall": overall(services),
        "ts": now,
        "hub": hub,
        "services": [{**s.to_json(), "facts": facts(s.name) if facts else {}}
                     for s in services],
        "warnings": warnings or [],
        **machine,
    }


class Startup:
    """Says once that the stack this hub started is ready (`startup_complete`), or that
    it is not within TIMEOUT (`startup_failed`, then `startup_complete` when it is).
    A hub that only adopted running services started nothing and says nothing."""

    def __init__(self, began: float, timeout: float,
                 emit: Callable[[Kind, Severity, str], None]) -> None:
        self._began, self._timeout, self._emit = began, timeout, emit
        self._started = self._failed = self._done = False

    def started(self) -> None:
        """The hub started a service itself."""
        self._started = True

    def check(self, now: float, services: list[ServiceStatus]) -> None:
        if self._done:
            return
        waiting = [s.name for s in services if not s.ready]
        took = now - self._began
        if not waiting:
            self._done = True  # starting -> complete
            if self._started or self._failed:
                self._emit(Kind.STARTUP_COMPLETE, Severity.INFO,
                           f"startup complete: every service ready in {took:.1f} s")
        elif not self._failed and took > self._timeout:
            self._failed = True  # starting -> failed (complete may still follow)
            self._emit(Kind.STARTUP_FAILED, Severity.CRITICAL,
                       f"not ready {self._timeout:g} s after the hub started: "
                       f"{', '.join(waiting)}")
