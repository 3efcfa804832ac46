"""Status records of the hub and the rules that turn observations into states.

Pure: no I/O. The CLI, the hub API and (later) the dashboard all read these records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Hub states of a service.
STOPPED = "STOPPED"
STARTING = "STARTING"
READY = "READY"
UNHEALTHY = "UNHEALTHY"
FAILED = "FAILED"

# Overall verdicts and the exit codes of `status`.
HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}

_RUNNING_STATES = {"STARTING", "RUNNING"}


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def next_state(  # noqa: PLR0911 -- one return per arrow reads best
    current: str, program_state: str, probe_ok: bool, *,
    started_at: float, now: float, ready_timeout: float,
) -> str:
    """The hub state of a service from supervisord's program state and the readiness probe."""
    if program_state == "FATAL":
        return FAILED  # any -> FAILED: supervisord gave up spawning it
    if program_state == "BACKOFF":
        return STARTING  # any -> STARTING: supervisord is retrying the spawn
    if program_state not in _RUNNING_STATES:
        return STOPPED  # any -> STOPPED: not running under supervisord
    if probe_ok:
        return READY  # STARTING/UNHEALTHY/FAILED -> READY
    if current in (READY, UNHEALTHY):
        return UNHEALTHY  # READY -> UNHEALTHY: was serving, now failing its probe
    if now - started_at > ready_timeout:
        return FAILED  # STARTING -> FAILED: never became ready within its deadline
    return STARTING  # STOPPED -> STARTING: running, not ready yet


def overall(services: list[ServiceStatus]) -> str:
    """down if a critical service is not ready, degraded if another is not, else healthy."""
    if any(s.critical and not s.ready for s in services):
        return DOWN
    if any(not s.ready for s in services):
        return DEGRADED
    return HEALTHY


def status_document(
    services: list[ServiceStatus], now: float, hub: dict[str, Any]
) -> dict[str, Any]:
    """The JSON of `GET /status` and `status --json`."""
    return {
        "overall": overall(services),
        "ts": now,
        "hub": hub,
        "services": [s.to_json() for s in services],
    }
