"""The alert router: hub events and Prometheus alerts in, `Notice`s out. Pure: no I/O,
no threads, no clock reads (every call takes `now`, epoch seconds like an event's ts).

* An opening event (incident.OPENING) opens a part keyed by its fingerprint. Every part
  opened within `group_window` of the first goes into one incident and one OPENED, sent
  when the window closes (never later). An event with `cause=X` joins X's incident as a
  member. Later failures of an open part fold in silently, unless they escalate it (a
  higher-ranked kind or severity, a member failing on its own): one UPDATED per window.
* A resolving event closes its part; once every part is closed the incident waits the
  group window for a relapse, then sends one RESOLVED: the good news is as prompt as
  the bad. A relapse while it waits sends nothing. An incident that closes inside its
  own window sends one OPENED with `resolved` set.
* Flapping: a fingerprint failing `flap_failures` times within `flap_window` (the
  policy's FLAP_RESTARTS and FLAP_WINDOW) makes its incident flapping. Its OPENED says
  so (or, already announced, one UPDATED in its thread); its later failures fold in
  without a message, and it resolves only `flap_hold` after its last failure. Storms are
  kept away by holding new messages, never by delaying a recovery that is not a flap.
* Reminders at since + r1, since + r2, ... then every last r while it is open.
* A silenced service's events are recorded but send nothing; setting a silence and its
  end each send one notice, and an incident still open when it ends is told then.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

from unistack.alerts import incident as inc
from unistack.alerts.incident import Incident, IncidentView, Part, Silence
from unistack.alerts.records import (
    OPENED,
    REMINDER,
    RESOLVED,
    SILENCE_ENDED,
    SILENCED,
    UPDATED,
    Notice,
)
from unistack.config import Settings
from unistack.event import Event, Kind
from unistack.services import REGISTRY, ServiceSpec

_SEEN_MAX = 2048  # event keys remembered for duplicate detection


FLAP_HOLD = 60.0  # seconds a flapping incident must go without a failure to resolve


class RouterConfig(NamedTuple):
    """Built from Settings only (from_settings): no defaults of its own."""

    group_window: float  # seconds a burst folds into one OPENED
    reminders: tuple[float, ...]  # after each, a reminder; the last repeats
    resolved_notice: bool
    flap_failures: int  # this many failures of one fingerprint ...
    flap_window: float  # ... within this many seconds: flapping
    flap_hold: float  # a flapping incident resolves this long after its last failure
    critical: frozenset[str]  # services whose own failures are critical

    @classmethod
    def from_settings(cls, settings: Settings,
                      registry: tuple[ServiceSpec, ...] = REGISTRY) -> RouterConfig:
        return cls(settings.alert_group_window, settings.alert_reminders,
                   settings.alert_resolved_notice == "1", settings.flap_restarts,
                   settings.flap_window, FLAP_HOLD,
                   frozenset(s.name for s in registry if s.critical))


class Router:
    """Incidents, silences and what to send when."""

    def __init__(self, config: RouterConfig) -> None:
        self._config = config
        self._incidents: dict[str, Incident] = {}  # open incidents by id
        self._index: dict[str, str] = {}  # fingerprint -> id of its open incident
        self._silences: dict[str, Silence] = {}
        self._failures: dict[str, list[float]] = {}  # fingerprint -> within flap_window
        self._seen: dict[tuple[Any, ...], None] = {}  # insertion-ordered event keys
        self._queue: list[Notice] = []  # notices due at once (silences, announcements)

    # --- events -----------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> None:
        """Record one event; an exact duplicate (same ts, service, kind) is ignored."""
        fp = inc.fingerprint(event)
        key = (event["ts"], event["service"], event["kind"], fp)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            del self._seen[next(iter(self._seen))]  # the oldest
        kind = event["kind"]
        if kind in inc.OPENING:
            self._open(event, fp, now)
        elif kind in inc.RESOLVING:
            if not self._resolve(event, fp, now) and kind in inc.ANNOUNCING:
                self._announce(event, fp, now)
        elif kind in inc.ANNOUNCING and not event.get("quiet"):
            self._announce(event, fp, now)
        elif kind in inc.NOTING:
            self._note(event)

    def _open(self, event: Event, fp: str, now: float) -> None:
        known = self._index.get(fp)
        host = self._index.get(f"service:{event.get('cause')}") if event.get("cause") else None
        echoed = self._echoed(event) if known is None and host is None else None
        if known is not None:
            self._relapse(self._incidents[known], self._incidents[known].parts[fp], event, now)
        elif host is not None:
            self._join(self._incidents[host], fp, event, now)
        elif echoed is not None:
            self._echo(self._incidents[echoed], fp, event)
        else:
            self._new_part(fp, event, now)

    def _echoed(self, event: Event) -> str | None:
        """The open incident a Prometheus alert repeats: the hub watches memory and disk
        itself at the same thresholds, seconds before a rule's `for` has passed."""
        if event["kind"] != Kind.ALERT_FIRING:
            return None
        prefix = f"resource:{event['service']}:"
        return next((i.id for i in self._incidents.values()
                     if any(p.fingerprint.startswith(prefix) for p in i.open_parts())), None)

    def _echo(self, incident: Incident, fp: str, event: Event) -> None:
        """Fold the repeated alert in without a notice; it must resolve too."""
        incident.parts[fp] = Part(fp, event["service"], event["kind"], "info",
                                  event["detail"], root=False, echo=True)
        self._index[fp] = incident.id
        incident.add_line(inc.line(event))

    def _new_part(self, fp: str, event: Event, now: float) -> None:
        part = Part(fp, event["service"], event["kind"], self._root_severity(event),
                    event["detail"], root=True, incident_file=event.get("incident", ""),
                    next_step=event.get("next_step", ""))
        # A burst is measured from when the failure began: a hang took its detection
        # time (about a second of probes) to be known, and need not wait a window more.
        began = min(now, float(event.get("onset") or now))
        incident = self._group_for(part.service, event["ts"], fp, now, began)
        incident.parts[fp] = part
        self._index[fp] = incident.id
        incident.add_line(inc.line(event))
        if self._failed(fp, now):
            self._flap(incident, fp, part.service, now)

    def _root_severity(self, event: Event) -> str:
        """A dependent's event arrives as info; with no incident to join it is its own."""
        severity = inc.severity(event.get("severity"))
        if event.get("cause") and severity == "info":
            return "critical" if event["service"] in self._config.critical else "warning"
        return severity

    def _group_for(self, service: str, ts: float, fp: str, now: float,
                   began: float) -> Incident:
        """The incident whose window is still open (and as silenced), else a new one."""
        silenced = self._silenced(service, now)
        for candidate in self._incidents.values():
            if (candidate.stage == inc.PENDING and now < candidate.opened_until
                    and self._incident_silenced(candidate, now) == silenced):
                return candidate
        return self._new_incident(fp, ts, began)

    def _new_incident(self, fp: str, ts: float, began: float) -> Incident:
        new = Incident(f"{fp}@{ts:.3f}", ts, began + self._config.group_window)
        self._incidents[new.id] = new  # -> pending
        return new

    def _failed(self, fp: str, now: float) -> bool:
        """Count a failure of FP: whether it is flapping now."""
        recent = [t for t in self._failures.get(fp, []) if now - t < self._config.flap_window]
        self._failures[fp] = [*recent, now]
        return len(self._failures[fp]) >= self._config.flap_failures

    def _flap(self, incident: Incident, fp: str, service: str, now: float) -> None:
        """A failure of a flapping fingerprint: it resolves only flap_hold after this."""
        incident.quiet_until = now + self._config.flap_hold
        if incident.flapping:
            return
        incident.flapping = True  # -> flapping: one message says so
        failures, config = len(self._failures[fp]), self._config
        incident.add_line(f"{inc.clock(now)} {service} flapping: {failures} failures within "
                          f"{config.flap_window:g} s; resolved only after {config.flap_hold:g} s "
                          "without one")
        self._touch(incident, f"{service} flapping", service, now)

    def _relapse(self, incident: Incident, part: Part, event: Event, now: float) -> None:
        """Another opening event on an open part: fold it in; escalate if it ranks higher."""
        repeat = part.open and part.kind == event["kind"] and part.detail == event["detail"]
        if not part.open:
            part.open = True  # closed -> open: it failed again
            self._cancel_resolution(incident)
            if self._failed(part.fingerprint, now) or incident.flapping:
                self._flap(incident, part.fingerprint, part.service, now)
        reason = self._change(part, event)
        part.detail = event["detail"]
        part.incident_file = event.get("incident") or part.incident_file
        part.next_step = event.get("next_step") or part.next_step
        if not repeat:
            incident.add_line(inc.line(event))
        if reason:
            self._touch(incident, reason, part.service, now)

    def _change(self, part: Part, event: Event) -> str:
        """Apply what EVENT changes in PART: why that is worth an UPDATED, or ""."""
        reason = ""
        if not part.root and not part.echo and not event.get("cause"):
            part.root = True  # member -> root: failing on its own now
            reason = f"{part.service} now failing on its own"
        if inc.OPENING[event["kind"]] > inc.OPENING.get(part.kind, 0):
            reason = f"{part.service} escalated from {part.kind}"
            part.kind = event["kind"]
        severity = self._root_severity(event)
        if part.root and inc.ranked(severity) > inc.ranked(part.severity):
            reason = reason or f"{part.service} now {severity}"
            part.severity = severity
        return reason if part.root else ""

    def _cancel_resolution(self, incident: Incident) -> None:
        if incident.resolving_since is not None:
            incident.resolving_since = None  # resolving -> open: a relapse
            incident.flaps += 1

    def _join(self, incident: Incident, fp: str, event: Event, now: float) -> None:
        """A dependent failed because of the incident's service: a member, no own notice."""
        part = Part(fp, event["service"], event["kind"], "info", event["detail"], root=False,
                    incident_file=event.get("incident", ""))
        incident.parts[fp] = part
        self._index[fp] = incident.id
        self._cancel_resolution(incident)
        incident.add_line(inc.line(event))
        self._touch(incident, f"{part.service} affected too", part.service, now)

    def _touch(self, incident: Incident, reason: str, service: str, now: float) -> None:
        """An announced incident changed: one UPDATED when this window closes."""
        if incident.stage != inc.ANNOUNCED or self._silenced(service, now):
            return
        if reason not in incident.reasons:
            incident.reasons.append(reason)
        if incident.update_due is None:
            incident.update_due = now + self._config.group_window

    def _resolve(self, event: Event, fp: str, now: float) -> bool:
        """Close the part of FP; False when no incident has it."""
        known = self._index.get(fp)
        if known is None:
            return False
        incident = self._incidents[known]
        part = incident.parts[fp]
        if part.open:
            part.open = False  # open -> closed
            incident.add_line(inc.line(event))
        if not incident.open_parts() and incident.resolving_since is None:
            incident.resolving_since = now  # open -> resolving
        return True

    def _announce(self, event: Event, fp: str, now: float) -> None:
        """An info event worth one message of its own (startup complete, an audit: an
        operator's action is told even about a silenced service)."""
        if event["kind"] != Kind.AUDIT and self._silenced(event["service"], now):
            return
        self._queue.append(Notice(
            f"{fp}@{event['ts']:.3f}", OPENED, "info", event["service"],
            f"{event['service']}: {event['detail']}", event["ts"], now,
            what=(inc.line(event),), resolved=True))

    def _note(self, event: Event) -> None:
        host = self._index.get(f"service:{event.get('cause')}")
        if host is not None:
            self._incidents[host].add_line(inc.line(event))

    # --- what to send -----------------------------------------------------------------

    def due(self, now: float) -> list[Notice]:
        """Every notice to send now, each once: queued ones (silences set, announcements),
        silences ending, then incidents oldest first (at most one each per call)."""
        notices, self._queue = self._queue, []
        for silence in [s for s in self._silences.values() if s.until <= now]:
            notices += self._end_silence(silence, now, "expired")
        for incident in list(self._incidents.values()):
            notices += self._incident_due(incident, now)
        window = self._config.flap_window
        self._failures = {fp: times for fp, times in self._failures.items()
                          if now - times[-1] < window}
        return notices

    def _incident_due(self, incident: Incident, now: float) -> list[Notice]:
        """At most one notice per incident and call; resolution beats update and reminder."""
        if incident.stage == inc.PENDING:
            return self._window_closed(incident, now) if now >= incident.opened_until else []
        resolving = incident.resolving_since
        if resolving is not None and now >= self._resolves_at(resolving, incident):
            return self._resolution_due(incident, now)
        if incident.update_due is not None and now >= incident.update_due:
            return self._update_due(incident, now)
        reminding = incident.stage == inc.ANNOUNCED and resolving is None
        if reminding and now >= self._reminder_at(incident):
            return self._reminder_due(incident, now)
        return []

    def _window_closed(self, incident: Incident, now: float) -> list[Notice]:
        self._set_apart_silenced(incident, now)
        if self._incident_silenced(incident, now):
            incident.stage = inc.WITHHELD  # pending -> withheld: its services are silenced
            if not incident.open_parts():
                self._close(incident)
            return []
        incident.stage = inc.ANNOUNCED  # pending -> announced
        if incident.open_parts():
            return [incident.notice(OPENED, incident.title(), now)]
        # It recovered inside its own window: one notice, already resolved.
        notice = incident.notice(OPENED, f"{incident.title()}, recovered", now, resolved=True)
        self._close(incident)
        return [notice]

    def _set_apart_silenced(self, incident: Incident, now: float) -> None:
        """Roots of services silenced inside the window (the rest are not) go to an
        incident of their own, told only if still open when their silence ends."""
        roots = incident.roots()
        apart = [p for p in roots if self._silenced(p.service, now)]
        if not apart or len(apart) == len(roots):
            return
        own = self._new_incident(apart[0].fingerprint, incident.since, incident.since)
        services = {p.service for p in apart}
        for part in apart:
            own.parts[part.fingerprint] = incident.parts.pop(part.fingerprint)
            self._index[part.fingerprint] = own.id
        own.lines = [text for text in incident.lines if inc.line_service(text) in services]
        incident.lines = [text for text in incident.lines if text not in own.lines]
        if not own.open_parts():
            own.resolving_since = now
        if not incident.open_parts() and incident.resolving_since is None:
            incident.resolving_since = now

    def _resolution_due(self, incident: Incident, now: float) -> list[Notice]:
        quiet = (incident.stage != inc.ANNOUNCED or self._incident_silenced(incident, now)
                 or not self._config.resolved_notice)
        title = f"{incident.title()}: resolved"
        notices = [] if quiet else [incident.notice(RESOLVED, title, now, resolved=True)]
        self._close(incident)
        return notices

    def _resolves_at(self, resolving_since: float, incident: Incident) -> float:
        """RESOLVED: a window after every part closed (a relapse inside it folds in), and
        for a flapping incident not before it has been quiet."""
        return max(resolving_since + self._config.group_window, incident.quiet_until)

    def _update_due(self, incident: Incident, now: float) -> list[Notice]:
        reasons = "; ".join(incident.reasons)
        incident.update_due, incident.reasons = None, []
        if self._incident_silenced(incident, now):
            return []
        return [incident.notice(UPDATED, f"{incident.title()}: {reasons}", now)]

    def _reminder_at(self, incident: Incident) -> float:
        return inc.reminder_at(incident.since, self._config.reminders, incident.reminders_sent)

    def _skip_reminders(self, incident: Incident, now: float) -> None:
        while self._reminder_at(incident) <= now:
            incident.reminders_sent += 1  # missed ones (silenced, hub down) are not caught up

    def _reminder_due(self, incident: Incident, now: float) -> list[Notice]:
        self._skip_reminders(incident, now)
        if self._incident_silenced(incident, now):
            return []
        relapsed = f" (relapsed {incident.flaps} times)" if incident.flaps else ""
        title = f"{incident.title()}: still unresolved{relapsed}"
        return [incident.notice(REMINDER, title, now)]

    def _close(self, incident: Incident) -> None:
        del self._incidents[incident.id]  # -> closed
        for fp in incident.parts:
            self._index.pop(fp, None)

    def next_wakeup(self, now: float) -> float | None:
        """When `due` could next return something (at or before NOW: call it now)."""
        times = [now] if self._queue else []
        times += [s.until for s in self._silences.values()]
        for incident in self._incidents.values():
            times += self._wakeups(incident)
        return min(times) if times else None

    def _wakeups(self, incident: Incident) -> list[float]:
        if incident.stage == inc.PENDING:
            return [incident.opened_until]
        if incident.resolving_since is not None:
            return [self._resolves_at(incident.resolving_since, incident)]
        times = [] if incident.update_due is None else [incident.update_due]
        if incident.stage == inc.ANNOUNCED:
            times.append(self._reminder_at(incident))
        return times

    # --- silences ---------------------------------------------------------------------

    def silence(self, service: str, until: float, reason: str, now: float,
                quiet: bool = False) -> None:
        """Silence SERVICE until UNTIL (epoch seconds); setting it again moves the end.
        QUIET: not announced (maintenance announces itself, once for all its services)."""
        if until <= now:
            raise ValueError(f"a silence must end in the future (until={until}, now={now})")
        silence = self._silences.get(service)
        if silence is not None and quiet and not silence.quiet:
            silence.until = max(silence.until, until)  # an operator's silence stays theirs
            return
        silence = silence or Silence(service, until, reason, now)
        silence.until, silence.reason, silence.quiet = until, reason, quiet
        self._silences[service] = silence  # -> silenced
        ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
        title = f"{service} silenced until {ends}: {reason}"
        if not quiet:
            self._queue.append(silence.notice(SILENCED, title, now))

    def unsilence(self, service: str, now: float) -> bool:
        """Lift SERVICE's silence before it expires; False if it has none."""
        silence = self._silences.get(service)
        if silence is not None:
            self._queue += self._end_silence(silence, now, "lifted")
        return silence is not None

    def _end_silence(self, silence: Silence, now: float, how: str) -> list[Notice]:
        del self._silences[silence.service]  # silenced -> not silenced
        notices = [] if silence.quiet else [
            silence.notice(SILENCE_ENDED, f"{silence.service} silence {how}", now)]
        for incident in list(self._incidents.values()):
            affected = any(p.service == silence.service for p in incident.roots())
            if affected and incident.open_parts() and not self._incident_silenced(incident, now):
                notices += self._catch_up(incident, now)
        return notices

    def _catch_up(self, incident: Incident, now: float) -> list[Notice]:
        """An incident still open when its silence ended: tell it once, now."""
        self._skip_reminders(incident, now)
        if incident.stage == inc.WITHHELD:
            incident.stage = inc.ANNOUNCED  # withheld -> announced: its first message
            return [incident.notice(OPENED, incident.title(), now)]
        if incident.stage != inc.ANNOUNCED or incident.resolving_since is not None:
            return []
        incident.update_due, incident.reasons = None, []
        title = f"{incident.title()}: still unresolved after the silence ended"
        return [incident.notice(REMINDER, title, now)]

    def _silenced(self, service: str, now: float) -> bool:
        silence = self._silences.get(service)
        return silence is not None and silence.until > now

    def _incident_silenced(self, incident: Incident, now: float) -> bool:
        """Silenced when every service it is about (its roots) is silenced."""
        return all(self._silenced(p.service, now) for p in incident.roots())

    # --- reading and persistence ------------------------------------------------------

    def open_incidents(self) -> list[IncidentView]:
        """Open incidents, oldest first (`silenced_until`: its lead service's silence, or 0)."""
        ends = {s.service: s.until for s in self._silences.values()}
        return [i.view(ends.get(i.lead.service, 0.0)) for i in self._incidents.values()]

    def open_parts(self, prefix: str) -> list[tuple[str, str]]:
        """(fingerprint, service) of every open part whose fingerprint starts with PREFIX."""
        return [(p.fingerprint, p.service) for i in self._incidents.values()
                for p in i.open_parts() if p.fingerprint.startswith(prefix)]

    def silences(self) -> list[Silence]:
        """The silences in force (copies: changing one changes nothing here)."""
        return [dataclasses.replace(s) for s in self._silences.values()]

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to go on after a hub restart, as JSON-serialisable data."""
        return {
            "version": 1,
            "incidents": [i.to_dict() for i in self._incidents.values()],
            "silences": [s.to_dict() for s in self._silences.values()],
            "failures": [[fp, times] for fp, times in self._failures.items()],
            "seen": [list(key) for key in self._seen],
            "queue": [n._asdict() for n in self._queue],
        }

    @classmethod
    def restore(cls, config: RouterConfig, snapshot: dict[str, Any]) -> Router:
        if snapshot.get("version") != 1:
            raise ValueError(f"unknown router snapshot version {snapshot.get('version')!r}")
        router = cls(config)
        for data in snapshot["incidents"]:
            incident = Incident.from_dict(data)
            router._incidents[incident.id] = incident
            router._index.update(dict.fromkeys(incident.parts, incident.id))
        router._silences = {s["service"]: Silence(**s) for s in snapshot["silences"]}
        # A snapshot from before the flap guard counted failures has none.
        router._failures = {fp: list(times) for fp, times in snapshot.get("failures", [])}
        router._seen = dict.fromkeys(tuple(key) for key in snapshot["seen"])
        router._queue = [_notice_from(n) for n in snapshot["queue"]]
        return router


def _notice_from(data: dict[str, Any]) -> Notice:
    return Notice(**{**data, "what": tuple(data["what"]), "members": tuple(data["members"])})
