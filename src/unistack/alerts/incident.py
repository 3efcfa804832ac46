"""Incident records for the alert router: which event kinds open, escalate and resolve
an incident, the fingerprint of an event, and the `Incident` / `Part` / `Silence`
records (JSON-serialisable, so the router survives a hub restart). Pure: no I/O.

An incident is what one Slack thread is about. It has parts, one per fingerprint: root
parts (a failure of its own; a burst inside the grouping window gives several) and
member parts (a dependent whose event named a root's service as its `cause`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from unistack.alerts.records import SEVERITIES, Notice
from unistack.event import Event, Kind

# Event kinds that open an incident (or, on an open one, escalate it when ranked higher).
OPENING: dict[str, int] = {
    Kind.UNHEALTHY: 1, Kind.BUSY: 1, Kind.DEGRADED: 2, Kind.CRASHED: 2, Kind.HUNG: 3,
    Kind.FAILED: 4, Kind.LOOPING: 5, Kind.STARTUP_FAILED: 5, Kind.BACKUP_FAILED: 2,
    Kind.KEY_REJECTED: 1,
    Kind.RESOURCE: 1, Kind.ALERT_FIRING: 1, Kind.ALERT_SOURCE_DOWN: 1, Kind.ALERT_SOURCE_ERROR: 1}
# Event kinds that close the part of their fingerprint. `ready`/`adopted` only matter
# when the part is open: a new hub never sends `recovered` for the old hub's incidents.
RESOLVING = frozenset({Kind.RECOVERED, Kind.READY, Kind.ADOPTED, Kind.RESOURCE_OK,
                       Kind.ALERT_RESOLVED, Kind.ALERT_SOURCE_UP, Kind.STARTUP_COMPLETE,
                       Kind.BACKUP_OK, Kind.KEY_VALID})
# One info notice of their own: an operator's control action (audit), and a complete
# startup (which first resolves `startup_failed` if that is open).
ANNOUNCING = frozenset({Kind.STARTUP_COMPLETE, Kind.AUDIT, Kind.MAINTENANCE,
                        Kind.MAINTENANCE_OVER})
# Notes: folded into the cause's incident as a line, never a notice of their own.
NOTING = frozenset({Kind.RESTARTED_WITH})
# Info only, never a notice (as is any kind not named here).
INFO_ONLY = frozenset({Kind.STARTED, Kind.EVENTS_DROPPED, Kind.MODEL_LOADED,
                       Kind.KEY_UNVERIFIED})
SERVICE_KINDS = frozenset({Kind.UNHEALTHY, Kind.BUSY, Kind.DEGRADED, Kind.CRASHED, Kind.HUNG,
                           Kind.FAILED, Kind.LOOPING})

_TITLES: dict[str, str] = {
    Kind.UNHEALTHY: "{service} not ready", Kind.CRASHED: "{service} crashed",
    Kind.BUSY: "{service} busy (not hung)", Kind.DEGRADED: "{service} cannot serve: {detail}",
    Kind.HUNG: "{service} hung", Kind.FAILED: "{service} cannot start (supervisord gave up)",
    Kind.LOOPING: "{service} in a restart loop", Kind.STARTUP_FAILED: "startup failed: {detail}",
    Kind.BACKUP_FAILED: "{service} backup failed", Kind.RESOURCE: "{service}: {detail}",
    Kind.KEY_REJECTED: "{service} API keys refused: {detail}",
    Kind.ALERT_FIRING: "{alert}: {detail}",
    Kind.ALERT_SOURCE_DOWN: "Prometheus alerts unreadable: {detail}",
    Kind.ALERT_SOURCE_ERROR: "Prometheus alerts unreadable: {detail}",
}
DONE: dict[str, str] = {
    Kind.UNHEALTHY: "nothing yet: it is alive, so it is not restarted; the hub keeps probing it",
    Kind.CRASHED: "supervisord respawned it",
    Kind.BUSY: "nothing yet: it is making progress; it is killed only past BUSY_GRACE "
                 "(Redis is first asked to end its script)",
    Kind.DEGRADED: "nothing: a restart would not fix it, so it is not restarted",
    Kind.HUNG: "killed the hung process group; supervisord respawned it",
    Kind.FAILED: "supervisord gave up; the hub restarts it with capped backoff",
    Kind.LOOPING: "holding it stopped with backoff",
    Kind.RESOURCE: "nothing: a threshold warning never restarts a service",
    Kind.KEY_REJECTED: "nothing: the keys are the operator's to replace",
    Kind.ALERT_FIRING: "nothing: a Prometheus alerting rule fired",
    Kind.ALERT_SOURCE_DOWN: "nothing: the hub keeps polling Prometheus",
    Kind.ALERT_SOURCE_ERROR: "nothing: the hub keeps polling Prometheus",
}
DIAGNOSE = "scripts/diagnose_container.sh"
MAX_LINES = 12  # lines of "what happened" kept per notice: the first and the latest

# How a notice stands (Incident.stage).
PENDING = "pending"  # inside its grouping window: OPENED not sent yet
ANNOUNCED = "announced"  # OPENED sent
WITHHELD = "withheld"  # its services were silenced when the window closed


def fingerprint(event: Event) -> str:
    """What identifies the problem an event is about, across events and incidents."""
    kind, service = event["kind"], event["service"]
    if event.get("fingerprint"):
        return str(event["fingerprint"])  # Prometheus alerts: rule:<alertname>:<labels>
    if kind in ("resource", "resource_ok"):
        return f"resource:{service}:{event.get('resource') or _resource(event['detail'])}"
    if kind in (Kind.AUDIT, Kind.MAINTENANCE, Kind.MAINTENANCE_OVER):
        return f"{kind}:{service}"
    if kind.startswith(("startup_", "backup_", "key_")):
        return f"{kind.split('_')[0]}:{service}"
    return f"service:{service}"


def _resource(detail: str) -> str:
    """The resource a ResourceWatcher detail is about: cpu, memory, disk:<directory>."""
    text = detail.rsplit(": ", 1)[0]
    if text.lower().startswith("free disk") and " under " in text:
        return "disk:" + text.split(" under ", 1)[1]
    return text.split(" ", 1)[0].lower()


def severity(value: Any) -> str:
    return str(value) if value in SEVERITIES else "warning"


def ranked(value: str) -> int:
    return SEVERITIES.index(value)


def higher(a: str, b: str) -> str:
    return a if ranked(a) >= ranked(b) else b


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def reminder_at(since: float, schedule: tuple[float, ...], sent: int) -> float:
    """When reminder number SENT (0, 1, ...) is due: since + r1, r2, ..., then every last r."""
    if not schedule:
        return float("inf")
    if sent < len(schedule):
        return since + schedule[sent]
    return since + schedule[-1] * (sent - len(schedule) + 2)


def line(event: Event) -> str:
    """One line of "what happened" for an event."""
    return f"{clock(event['ts'])} {event['service']} {event['kind']}: {event['detail']}"


def line_service(text: str) -> str:
    """The service a line of "what happened" is about."""
    return text.split(" ", 2)[1] if text.count(" ") >= 2 else ""


class IncidentView(NamedTuple):
    """An open incident as `manage_production.sh alerts` and the dashboard show it."""

    id: str
    title: str
    severity: str
    service: str
    since: float
    fingerprints: tuple[str, ...]
    failing: tuple[str, ...]  # services of the parts still open
    members: tuple[str, ...]
    stage: str  # pending, announced or withheld (silenced when its window closed)
    silenced_until: float  # 0.0 when its lead service is not silenced


@dataclass
class Part:
    """One fingerprint inside an incident."""

    fingerprint: str
    service: str
    kind: str  # the highest-ranked opening kind seen
    severity: str
    detail: str
    root: bool  # False: a dependent folded in through its event's `cause`, or an echo
    open: bool = True
    incident_file: str = ""
    next_step: str = ""  # an alert's own `next_step` annotation
    echo: bool = False  # a Prometheus alert repeating the incident's own warning: no member

    def title(self) -> str:
        alert = self.fingerprint.split(":")[1] if ":" in self.fingerprint else self.kind
        template = _TITLES.get(self.kind, "{service} {kind}")
        return template.format(service=self.service, detail=self.detail, alert=alert,
                               kind=self.kind)


@dataclass
class Incident:
    """One incident: its parts, where its notices stand, and its timers."""

    id: str
    since: float
    opened_until: float  # the grouping window ends: OPENED is due then
    parts: dict[str, Part] = field(default_factory=dict)
    stage: str = PENDING
    seq: int = 0  # of the next notice
    lines: list[str] = field(default_factory=list)  # since the last notice
    skipped: int = 0  # lines left out of `lines` (the middle of a long burst)
    reasons: list[str] = field(default_factory=list)  # of the pending UPDATED
    update_due: float | None = None
    resolving_since: float | None = None  # every part closed: RESOLVED a window later
    reminders_sent: int = 0
    flaps: int = 0  # times it relapsed while resolving
    flapping: bool = False  # its failures came too often: it says so, and resolves ...
    quiet_until: float = 0.0  # ... no earlier than this (flap_hold after its last failure)

    def roots(self) -> list[Part]:
        return [p for p in self.parts.values() if p.root] or list(self.parts.values())

    def members(self) -> tuple[str, ...]:
        return tuple(p.service for p in self.parts.values() if not p.root and not p.echo)

    def open_parts(self) -> list[Part]:
        return [p for p in self.parts.values() if p.open]

    @property
    def lead(self) -> Part:
        return self.roots()[0]

    @property
    def severity(self) -> str:
        result = "info"
        for part in self.roots():
            result = higher(part.severity, result)
        return result

    def title(self) -> str:
        flapping = ", flapping" if self.flapping else ""
        roots = self.roots()
        if len(roots) == 1:
            return roots[0].title() + flapping
        if all(p.kind in SERVICE_KINDS for p in roots):
            return f"{len(roots)} services down: {', '.join(p.service for p in roots)}{flapping}"
        return f"{len(roots)} incidents: {'; '.join(p.title() for p in roots)}{flapping}"

    def done(self) -> str:
        roots = [p for p in self.roots() if p.kind in DONE]
        if len(roots) == 1:
            return DONE[roots[0].kind]
        return "; ".join(f"{p.service}: {DONE[p.kind]}" for p in roots)

    def incident_file(self) -> str:
        return next((p.incident_file for p in self.roots() if p.incident_file), "")

    def add_line(self, text: str) -> None:
        if len(self.lines) >= MAX_LINES:
            del self.lines[MAX_LINES // 2]  # keep how it began and the latest
            self.skipped += 1
        self.lines.append(text)

    def take_lines(self) -> tuple[str, ...]:
        lines, half = list(self.lines), MAX_LINES // 2
        if self.skipped:
            lines.insert(half, f"… {self.skipped} more events")
        self.lines, self.skipped = [], 0
        return tuple(lines)

    def notice(self, kind: str, title: str, now: float, resolved: bool = False) -> Notice:
        """The next notice about it: its lines since the last one, the next seq."""
        seq, self.seq = self.seq, self.seq + 1
        path = self.incident_file()
        own = next((p.next_step for p in self.roots() if p.next_step), "")
        step = "; ".join(s for s in (f"read {path}" if path else "", own, f"run {DIAGNOSE}") if s)
        return Notice(self.id, kind, self.severity, self.lead.service, title, self.since, now,
                      self.take_lines(), self.done(), step, path, self.members(), seq, resolved)

    def view(self, silenced_until: float) -> IncidentView:
        return IncidentView(
            self.id, self.title(), self.severity, self.lead.service, self.since,
            tuple(self.parts), tuple(p.service for p in self.open_parts()), self.members(),
            self.stage, silenced_until)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        parts = {fp: Part(**part) for fp, part in data["parts"].items()}
        # A snapshot from before resolutions waited just the window has each one's `hold`.
        fields = {key: value for key, value in data.items() if key != "hold"}
        return cls(**{**fields, "parts": parts})


@dataclass
class Silence:
    """An operator's silence of one service until a time."""

    service: str
    until: float
    reason: str
    since: float
    seq: int = 0  # of the next notice about it
    quiet: bool = False  # a maintenance hold: neither its start nor its end is a notice

    @property
    def id(self) -> str:
        return f"silence:{self.service}@{self.since:.3f}"

    def notice(self, kind: str, title: str, now: float) -> Notice:
        """SILENCED / SILENCE_ENDED: warning, seen where warnings go, never a mention."""
        seq, self.seq = self.seq, self.seq + 1
        return Notice(self.id, kind, "warning", self.service, title, self.since, now,
                      (f"reason: {self.reason}",), seq=seq)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
