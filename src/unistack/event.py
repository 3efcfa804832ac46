"""The event record: every state change of the stack, as the hub records it, the alert
router reads it and the dashboard streams it. A leaf: it imports nothing of ours.

An event is JSON on the wire (the hub API, its Redis stream, SSE), so the record is a
TypedDict: the same dict everywhere, typed once here, with its kinds and severities as
enumerations (`StrEnum`: a member is its string, so stored events read back as kinds).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Kind(StrEnum):
    """What happened. Grouped by who says it."""

    # A service, as the hub's policy sees it (unistack.policy).
    READY = "ready"  # passes readiness (again)
    ADOPTED = "adopted"  # ran before this hub started, and is ready
    UNHEALTHY = "unhealthy"  # alive but not ready
    BUSY = "busy"  # misses probes while gaining CPU: not hung
    DEGRADED = "degraded"  # cannot serve for a reason a restart would not fix
    CRASHED = "crashed"  # exited unexpectedly
    HUNG = "hung"  # no progress: killed, supervisord respawns it
    FAILED = "failed"  # supervisord gave up starting it; the hub takes over
    LOOPING = "looping"  # restarted too often: backoff
    RECOVERED = "recovered"  # an incident of it is over
    RESTARTED_WITH = "restarted_with"  # restarted because a dependency restarted
    # The stack and the hub itself.
    STARTED = "started"  # a hub started
    STARTUP_COMPLETE = "startup_complete"
    STARTUP_FAILED = "startup_failed"
    EVENTS_DROPPED = "events_dropped"  # the Redis event stream lost some
    RESOURCE = "resource"  # CPU, memory or disk past its threshold
    RESOURCE_OK = "resource_ok"
    AUDIT = "audit"  # a control action by an operator: what, by whom, its result
    # Prometheus alerting rules, polled by the hub (unistack.alerts.prom_alerts).
    ALERT_FIRING = "alert_firing"
    ALERT_RESOLVED = "alert_resolved"
    ALERT_SOURCE_DOWN = "alert_source_down"
    ALERT_SOURCE_UP = "alert_source_up"
    ALERT_SOURCE_ERROR = "alert_source_error"
    # Backups and restores (unistack.backup, hub/backups.py, hub/maintenance.py).
    BACKUP_OK = "backup_ok"  # a backup was taken and verified (resolves backup_failed)
    BACKUP_FAILED = "backup_failed"  # a backup failed, or the newest verified one is stale
    MAINTENANCE = "maintenance"  # services held stopped by an operator's command (restore)
    MAINTENANCE_OVER = "maintenance_over"  # ... released: the hub starts them again
    # The ML engine.
    MODEL_LOADED = "model_loaded"
    # The trading API keys, as `keys verify` reports them (unistack.keys, hub/keyreports.py).
    KEY_REJECTED = "key_rejected"  # a provider refused its keys, or they are malformed
    KEY_VALID = "key_valid"  # ... accepted them (resolves key_rejected)
    KEY_UNVERIFIED = "key_unverified"  # not judged: missing, rate limited, unreachable


class Event(TypedDict):
    """`{id, ts, service, kind, severity, detail}` and what some kinds add."""

    ts: float  # epoch seconds
    service: str  # a registry name, "stack", "prometheus-alerts", or a key provider
    kind: Kind
    severity: Severity
    detail: str  # one sentence for the operator
    id: NotRequired[int]  # given by the hub's EventLog: increasing, across hub restarts too
    cause: NotRequired[str]  # the dependency whose incident this one is part of
    incident: NotRequired[str]  # path of the incident file captured for it
    onset: NotRequired[float]  # a hang: when its first unanswered probe was sent
    actor: NotRequired[str]  # audit: who acted ("dashboard from 127.0.0.1", "cli ...")
    quiet: NotRequired[bool]  # audit: the action sends a Slack message of its own
    # Prometheus alert events: the rule's identity and its next step.
    fingerprint: NotRequired[str]
    alertname: NotRequired[str]
    next_step: NotRequired[str]


_REQUIRED = ("ts", "service", "kind", "severity", "detail")


def event(service: str, kind: Kind, severity: Severity, detail: str, ts: float,
          **extra: Any) -> Event:
    """One event; EXTRA holds the optional fields above."""
    record: dict[str, Any] = {"ts": ts, "service": service, "kind": kind,
                              "severity": severity, "detail": detail, **extra}
    return record  # type: ignore[return-value]  # the keys are the TypedDict's


def parse(raw: Any) -> Event | None:
    """An event read back from JSON (the Redis stream, the hub API), or None when it is
    not one: a stored event of an unknown kind or shape is skipped, never trusted."""
    if not isinstance(raw, dict) or any(key not in raw for key in _REQUIRED):
        return None
    try:
        kind, severity = Kind(raw["kind"]), Severity(raw["severity"])
        ts = float(raw["ts"])
    except (ValueError, TypeError):
        return None
    return event(str(raw["service"]), kind, severity, str(raw["detail"]), ts,
                 **{k: v for k, v in raw.items() if k not in _REQUIRED})
