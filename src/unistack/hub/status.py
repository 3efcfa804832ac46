"""Status records of the hub and the overall verdict. Pure: no I/O.

The CLI, the hub API and (later) the dashboard all read these records; the states
themselves and their transitions belong to `unistack.policy`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
    services: list[ServiceStatus], now: float, hub: dict[str, Any]
) -> dict[str, Any]:
    """The JSON of `GET /status` and `status --json`."""
    return {
        "overall": overall(services),
        "ts": now,
        "hub": hub,
        "services": [s.to_json() for s in services],
    }
