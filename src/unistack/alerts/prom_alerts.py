"""Prometheus's alerts as hub events: the document of `GET /api/v1/alerts` parsed into
`PromAlert` records (`parse_alerts`), successive polls turned into `alert_firing` and
`alert_resolved` events once per alert (`AlertTracker`, pure), and the client that
fetches, parses and tracks without ever raising into the hub's loop (`PrometheusAlerts`).

Whether Prometheus answers is tracked too: an unreachable or garbled Prometheus resolves
nothing (it says nothing about the alerts) and is reported once, as `alert_source_down`
or `alert_source_error`, then `alert_source_up` when it answers properly again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

import requests

from unistack.alerts.records import SEVERITIES
from unistack.event import Event, Kind, Severity, event

Getter = Callable[[str, float], bytes]  # (url, timeout) -> body of a 2xx answer, or raises

SOURCE = "prometheus"  # the service whose API the alerts come from
SOURCE_FINGERPRINT = "alert_source:prometheus"
_STATES = ("pending", "firing")  # /api/v1/alerts lists active alerts only
_DEFAULT_SERVICE = "stack"  # an alert without a `service` label is about the stack
_DEFAULT_SEVERITY = Severity.WARNING  # an alert with no valid `severity` is not dropped


class AlertDocumentError(ValueError):
    """The answer is not the `/api/v1/alerts` document this module understands."""


class PromAlert(NamedTuple):
    """One active alert as Prometheus reports it."""

    labels: Mapping[str, str]  # alertname, severity, service, and the expression's labels
    annotations: Mapping[str, str]  # summary, next_step
    state: str  # pending | firing
    active_at: str  # RFC 3339, when the expression first became true
    value: str  # the expression's value at the last evaluation, as Prometheus sends it

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    @property
    def fingerprint(self) -> str:
        """`rule:<alertname>:<k=v,...>`, every label but alertname and severity, sorted:
        a change of severity is the same incident, not a new one."""
        pairs = sorted((k, v) for k, v in self.labels.items()
                       if k not in ("alertname", "severity"))
        return f"rule:{self.alertname}:" + ",".join(f"{k}={v}" for k, v in pairs)


def _strings(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise AlertDocumentError(f"{what} is not an object of strings: {value!r:.200}")
    return dict(value)


def _alert(item: object) -> PromAlert:
    if not isinstance(item, dict):
        raise AlertDocumentError(f"an alert is not an object: {item!r:.200}")
    labels = _strings(item.get("labels"), "alert labels")
    if not labels.get("alertname"):
        raise AlertDocumentError(f"an alert has no alertname: {labels!r:.200}")
    state = item.get("state")
    if state not in _STATES:
        raise AlertDocumentError(f"alert {labels['alertname']} has state {state!r}")
    return PromAlert(labels, _strings(item.get("annotations", {}), "alert annotations"),
                     str(state), str(item.get("activeAt", "")), str(item.get("value", "")))


def parse_alerts(document: object) -> list[PromAlert]:
    """The alerts of a decoded `GET /api/v1/alerts` answer; AlertDocumentError for an
    error answer or any shape other than `{status: success, data: {alerts: [...]}}`."""
    if not isinstance(document, dict):
        raise AlertDocumentError(f"the answer is not a JSON object: {document!r:.200}")
    if document.get("status") != "success":
        raise AlertDocumentError(f"Prometheus answered status {document.get('status')!r}: "
                                 f"{document.get('errorType', '')} {document.get('error', '')}")
    data = document.get("data")
    alerts = data.get("alerts") if isinstance(data, dict) else None
    if not isinstance(alerts, list):
        raise AlertDocumentError(f"the answer has no data.alerts list: {data!r:.200}")
    return [_alert(item) for item in alerts]


def alert_event(kind: Kind, alert: PromAlert, now: float) -> Event:
    """An `alert_firing` or `alert_resolved` event, shaped like the hub's own events."""
    severity = alert.labels.get("severity", "")
    return event(alert.labels.get("service") or _DEFAULT_SERVICE, kind,
                 Severity(severity) if severity in SEVERITIES else _DEFAULT_SEVERITY,
                 alert.annotations.get("summary") or alert.alertname, now,
                 fingerprint=alert.fingerprint, alertname=alert.alertname,
                 next_step=alert.annotations.get("next_step", ""))


_SOURCE_EVENTS = {  # source state -> (kind, severity, next_step)
    "up": (Kind.ALERT_SOURCE_UP, Severity.INFO, ""),
    "down": (Kind.ALERT_SOURCE_DOWN, Severity.WARNING,
             "rule alerts (disk, memory, ML latency, backlog) are not seen until Prometheus "
             "answers again; the hub reports the prometheus service's own state"),
    "error": (Kind.ALERT_SOURCE_ERROR, Severity.WARNING,
              "check that PROMETHEUS_PORT is Prometheus's port and its version serves "
              "/api/v1/alerts; rule alerts are not seen meanwhile"),
}


def source_event(state: str, detail: str, now: float) -> Event:
    kind, severity, next_step = _SOURCE_EVENTS[state]
    return event(SOURCE, kind, severity, detail, now, fingerprint=SOURCE_FINGERPRINT,
                 alertname="", next_step=next_step)


class _Firing(NamedTuple):
    alert: PromAlert  # as last seen firing (its summary names the last value)
    seen: float  # when a poll last showed it firing, or the source came back


class AlertTracker:
    """Pure: successive polls of Prometheus → one event per change. Remembers the alerts
    that fire (by fingerprint) and whether the source answered (unknown, up, down, error).

    An alert that stops firing is resolved once it has been missing, or back in pending,
    for RESOLVE_AFTER seconds of answered polls: a restarted Prometheus lists no alerts
    until its first rule evaluation and restores them as pending for one more, so
    resolving at once would resolve and re-fire every alert (two evaluation intervals:
    10 s with PROMETHEUS_SCRAPE_INTERVAL=5s). 0 resolves on the first poll without it."""

    def __init__(self, resolve_after: float = 10.0) -> None:
        self._resolve_after = resolve_after
        self._firing: dict[str, _Firing] = {}
        self._source = "unknown"

    @property
    def firing(self) -> list[PromAlert]:
        return [entry.alert for entry in self._firing.values()]

    def observe(self, alerts: list[PromAlert], now: float) -> list[Event]:
        """One answered poll: the alerts Prometheus lists now."""
        events = self._source_is("up", "Prometheus answers /api/v1/alerts again", now)
        current = {a.fingerprint: a for a in alerts if a.state == "firing"}
        return events + self._fire(current, now) + self._resolve(current.keys(), now)

    def _fire(self, current: dict[str, PromAlert], now: float) -> list[Event]:
        events = [alert_event(Kind.ALERT_FIRING, alert, now)  # inactive/pending -> firing
                  for fingerprint, alert in current.items() if fingerprint not in self._firing]
        self._firing.update({fp: _Firing(alert, now) for fp, alert in current.items()})
        return events

    def _resolve(self, current: Collection[str], now: float) -> list[Event]:
        gone = [fp for fp, entry in self._firing.items()
                if fp not in current and now - entry.seen >= self._resolve_after]
        # firing -> missing or pending for RESOLVE_AFTER: resolved
        return [alert_event(Kind.ALERT_RESOLVED, self._firing.pop(fp).alert, now) for fp in gone]

    def unreachable(self, detail: str, now: float) -> list[Event]:
        """A poll that got no answer: the alerts keep their state."""
        return self._source_is("down", f"Prometheus alerts unreachable: {detail}", now)

    def malformed(self, detail: str, now: float) -> list[Event]:
        """A poll whose answer could not be read: the alerts keep their state."""
        return self._source_is("error", f"Prometheus alerts unreadable: {detail}", now)

    def _source_is(self, state: str, detail: str, now: float) -> list[Event]:
        previous, self._source = self._source, state
        if state == "up" and previous in ("down", "error"):
            # The time without answers does not count as missing: restart the clocks.
            self._firing = {fp: entry._replace(seen=now) for fp, entry in self._firing.items()}
        if state == previous or (state == "up" and previous == "unknown"):
            return []
        return [source_event(state, detail, now)]


def http_get(url: str, timeout: float) -> bytes:
    """The body of a 2xx answer to GET URL; requests.RequestException otherwise."""
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    return response.content


def _why(exc: Exception) -> str:
    """Short: requests' own text repeats the URL and its connection pool's internals."""
    response = getattr(exc, "response", None)
    if isinstance(exc, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code}"
    return type(exc).__name__


class PrometheusAlerts:
    """The hub's poller of Prometheus's alerts: `poll(now)` returns the events of one poll
    and never raises. Poll once the prometheus service is READY: one that has not answered
    since the poller was made is reported as down too."""

    def __init__(self, base_url: str, timeout: float, get: Getter = http_get,
                 tracker: AlertTracker | None = None) -> None:
        self.url = base_url.rstrip("/") + "/api/v1/alerts"
        self._timeout = timeout
        self._get = get
        self.tracker = tracker or AlertTracker()

    def poll(self, now: float) -> list[Event]:
        try:
            body = self._get(self.url, self._timeout)
        except (requests.RequestException, OSError) as exc:
            return self.tracker.unreachable(_why(exc), now)
        try:
            alerts = parse_alerts(json.loads(body))
        except ValueError as exc:  # bad JSON, bad UTF-8, or AlertDocumentError
            return self.tracker.malformed(f"{type(exc).__name__}: {exc}", now)
        return self.tracker.observe(alerts, now)
