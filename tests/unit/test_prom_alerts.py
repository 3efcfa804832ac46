"""alerts.prom_alerts: the /api/v1/alerts document, firing and resolved transitions, and a
Prometheus that cannot be reached or answers garbage (state kept, reported once)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from unistack.alerts.prom_alerts import (
    AlertDocumentError,
    AlertTracker,
    PromAlert,
    PrometheusAlerts,
    parse_alerts,
)

BACKLOG: dict[str, Any] = {
    "labels": {"alertname": "MLEngineBacklogHigh", "severity": "warning",
               "service": "ml_engine"},
    "annotations": {"summary": "50k ML requests are waiting", "next_step": "add replicas"},
    "state": "firing",
    "activeAt": "2026-01-02T03:04:05.678Z",
    "value": "5e+04",
}
DISK: dict[str, Any] = {
    "labels": {"alertname": "UnistackDiskFreeLow", "severity": "warning", "service": "stack",
               "path": "/srv/var/log"},
    "annotations": {"summary": "free disk on /srv/var/log is 8%", "next_step": "free space"},
    "state": "firing",
    "activeAt": "2026-01-02T03:04:05Z",
    "value": "8e-02",
}


def document(*alerts: object) -> dict[str, Any]:
    return {"status": "success", "data": {"alerts": list(alerts)}}


def with_state(alert: dict[str, Any], state: str) -> dict[str, Any]:
    return {**alert, "state": state}


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["alertname"]) for e in events]


# --- parse_alerts ------------------------------------------------------------------------


def test_parse_reads_labels_annotations_state_active_at_and_value() -> None:
    (alert,) = parse_alerts(document(DISK))
    assert alert == PromAlert(DISK["labels"], DISK["annotations"], "firing",
                              "2026-01-02T03:04:05Z", "8e-02")
    assert alert.alertname == "UnistackDiskFreeLow"


def test_fingerprint_sorts_labels_and_leaves_out_alertname_and_severity() -> None:
    (alert,) = parse_alerts(document(DISK))
    assert alert.fingerprint == "rule:UnistackDiskFreeLow:path=/srv/var/log,service=stack"
    critical = {**DISK, "labels": {**DISK["labels"], "severity": "critical"}}
    assert parse_alerts(document(critical))[0].fingerprint == alert.fingerprint


def test_parse_of_no_alerts_is_an_empty_list() -> None:
    assert parse_alerts(document()) == []


@pytest.mark.parametrize("answer", [
    [],
    "alerts",
    {"status": "error", "errorType": "bad_data", "error": "nope"},
    {"status": "success"},
    {"status": "success", "data": {"alerts": {}}},
    {"status": "success", "data": []},
    document("not an alert"),
    document({**BACKLOG, "labels": {"severity": "warning"}}),
    document({**BACKLOG, "labels": {"alertname": "X", "n": 1}}),
    document({**BACKLOG, "labels": None}),
    document({**BACKLOG, "annotations": ["summary"]}),
    document(with_state(BACKLOG, "inactive")),
    document({k: v for k, v in BACKLOG.items() if k != "state"}),
])
def test_parse_rejects_every_unexpected_shape_with_one_error(answer: object) -> None:
    with pytest.raises(AlertDocumentError):
        parse_alerts(answer)


def test_an_error_answer_names_prometheus_s_error() -> None:
    with pytest.raises(AlertDocumentError, match="bad_data nope"):
        parse_alerts({"status": "error", "errorType": "bad_data", "error": "nope"})


# --- AlertTracker: firing and resolved ---------------------------------------------------


def test_a_firing_alert_fires_once_as_a_hub_shaped_event() -> None:
    tracker = AlertTracker(resolve_after=0)
    first = tracker.observe(parse_alerts(document(BACKLOG)), now=100.0)
    assert first == [{
        "ts": 100.0, "service": "ml_engine", "kind": "alert_firing", "severity": "warning",
        "detail": "50k ML requests are waiting",
        "fingerprint": "rule:MLEngineBacklogHigh:service=ml_engine",
        "next_step": "add replicas", "alertname": "MLEngineBacklogHigh",
    }]
    assert tracker.observe(parse_alerts(document(BACKLOG)), now=101.0) == []


def test_pending_is_ignored_until_it_fires() -> None:
    tracker = AlertTracker(resolve_after=0)
    assert tracker.observe(parse_alerts(document(with_state(BACKLOG, "pending"))), 1.0) == []
    fired = tracker.observe(parse_alerts(document(BACKLOG)), 2.0)
    assert kinds(fired) == [("alert_firing", "MLEngineBacklogHigh")]


def test_an_alert_that_disappears_is_resolved_once() -> None:
    tracker = AlertTracker(resolve_after=0)
    tracker.observe(parse_alerts(document(BACKLOG, DISK)), 1.0)
    resolved = tracker.observe(parse_alerts(document(DISK)), 2.0)
    assert kinds(resolved) == [("alert_resolved", "MLEngineBacklogHigh")]
    assert resolved[0]["detail"] == "50k ML requests are waiting"
    assert resolved[0]["fingerprint"] == "rule:MLEngineBacklogHigh:service=ml_engine"
    assert resolved[0]["severity"] == "warning" and resolved[0]["ts"] == 2.0
    assert tracker.observe(parse_alerts(document(DISK)), 3.0) == []
    assert [a.alertname for a in tracker.firing] == ["UnistackDiskFreeLow"]


def test_an_alert_back_in_pending_is_resolved_and_fires_again_later() -> None:
    tracker = AlertTracker(resolve_after=0)
    tracker.observe(parse_alerts(document(BACKLOG)), 1.0)
    pending = parse_alerts(document(with_state(BACKLOG, "pending")))
    assert kinds(tracker.observe(pending, 2.0)) == [("alert_resolved", "MLEngineBacklogHigh")]
    again = tracker.observe(parse_alerts(document(BACKLOG)), 3.0)
    assert kinds(again) == [("alert_firing", "MLEngineBacklogHigh")]


def test_a_short_absence_is_not_a_resolution() -> None:
    # A restarted Prometheus lists nothing until its first evaluation, then pending.
    tracker = AlertTracker(resolve_after=10)
    tracker.observe(parse_alerts(document(BACKLOG)), 100.0)
    assert tracker.observe([], 105.0) == []
    assert tracker.observe(parse_alerts(document(with_state(BACKLOG, "pending"))), 108.0) == []
    assert tracker.observe(parse_alerts(document(BACKLOG)), 109.0) == []
    assert tracker.observe([], 118.0) == []
    assert kinds(tracker.observe([], 119.0)) == [("alert_resolved", "MLEngineBacklogHigh")]


def test_the_default_waits_two_evaluation_intervals_before_resolving() -> None:
    tracker = AlertTracker()
    tracker.observe(parse_alerts(document(BACKLOG)), 0.0)
    assert tracker.observe([], 9.9) == []
    assert kinds(tracker.observe([], 10.0)) == [("alert_resolved", "MLEngineBacklogHigh")]


def test_labels_without_service_or_with_an_unknown_severity_still_alert() -> None:
    odd = {**BACKLOG, "labels": {"alertname": "Odd", "severity": "page"}, "annotations": {}}
    (event,) = AlertTracker().observe(parse_alerts(document(odd)), 1.0)
    assert (event["service"], event["severity"], event["detail"]) == ("stack", "warning", "Odd")
    assert event["fingerprint"] == "rule:Odd:" and event["next_step"] == ""


# --- AlertTracker: the source ------------------------------------------------------------


def test_an_unreachable_prometheus_keeps_state_and_is_reported_once() -> None:
    tracker = AlertTracker(resolve_after=0)
    tracker.observe(parse_alerts(document(BACKLOG)), 1.0)
    down = tracker.unreachable("ConnectionError: refused", 2.0)
    assert [(e["kind"], e["service"], e["severity"]) for e in down] == [
        ("alert_source_down", "prometheus", "warning")]
    assert "refused" in down[0]["detail"] and down[0]["fingerprint"] == "alert_source:prometheus"
    assert tracker.unreachable("ConnectionError: refused", 3.0) == []
    assert [a.alertname for a in tracker.firing] == ["MLEngineBacklogHigh"]
    back = tracker.observe(parse_alerts(document(BACKLOG)), 4.0)
    assert [e["kind"] for e in back] == ["alert_source_up"]


def test_after_an_outage_the_absence_clock_starts_when_prometheus_answers() -> None:
    tracker = AlertTracker(resolve_after=10)
    tracker.observe(parse_alerts(document(BACKLOG)), 0.0)
    tracker.unreachable("Timeout", 1.0)
    assert [e["kind"] for e in tracker.observe([], 60.0)] == ["alert_source_up"]
    assert kinds(tracker.observe([], 70.0)) == [("alert_resolved", "MLEngineBacklogHigh")]


def test_an_alert_resolved_during_an_outage_is_resolved_when_prometheus_is_back() -> None:
    tracker = AlertTracker(resolve_after=0)
    tracker.observe(parse_alerts(document(BACKLOG)), 1.0)
    tracker.unreachable("Timeout", 2.0)
    back = tracker.observe(parse_alerts(document(DISK)), 3.0)
    assert kinds(back) == [("alert_source_up", ""), ("alert_firing", "UnistackDiskFreeLow"),
                           ("alert_resolved", "MLEngineBacklogHigh")]


def test_unreachable_from_the_first_poll_is_reported_and_up_at_first_is_silent() -> None:
    assert kinds(AlertTracker().unreachable("refused", 1.0)) == [("alert_source_down", "")]
    assert AlertTracker().observe([], 1.0) == []


def test_a_malformed_answer_keeps_state_and_is_reported_once() -> None:
    tracker = AlertTracker(resolve_after=0)
    tracker.observe(parse_alerts(document(BACKLOG)), 1.0)
    assert [e["kind"] for e in tracker.malformed("no data.alerts", 2.0)] == [
        "alert_source_error"]
    assert tracker.malformed("no data.alerts", 3.0) == []
    assert [e["kind"] for e in tracker.unreachable("refused", 4.0)] == ["alert_source_down"]
    assert tracker.observe(parse_alerts(document(BACKLOG)), 5.0)[0]["kind"] == "alert_source_up"


# --- PrometheusAlerts --------------------------------------------------------------------


class FakeGet:
    """Answers each GET with the next of ANSWERS: bytes are a body, exceptions are raised."""

    def __init__(self, *answers: bytes | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls.append((url, timeout))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def body(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(document(*alerts)).encode()


def test_poll_gets_the_alerts_endpoint_with_the_timeout() -> None:
    get = FakeGet(body(BACKLOG))
    poller = PrometheusAlerts("http://127.0.0.1:9090/", 0.5, get=get)
    assert kinds(poller.poll(1.0)) == [("alert_firing", "MLEngineBacklogHigh")]
    assert get.calls == [("http://127.0.0.1:9090/api/v1/alerts", 0.5)]


def test_poll_turns_transport_failures_into_one_down_event_and_keeps_alerts() -> None:
    get = FakeGet(body(BACKLOG), requests.ConnectionError("refused"),
                  requests.Timeout("slow"), OSError("reset"), body(BACKLOG))
    poller = PrometheusAlerts("http://p", 1, get=get, tracker=AlertTracker(resolve_after=0))
    poller.poll(1.0)
    down = poller.poll(2.0)
    assert [e["kind"] for e in down] == ["alert_source_down"]
    assert down[0]["detail"] == "Prometheus alerts unreachable: ConnectionError"
    assert poller.poll(3.0) == [] and poller.poll(4.0) == []
    assert [e["kind"] for e in poller.poll(5.0)] == ["alert_source_up"]


@pytest.mark.parametrize("answer", [b"<html>not json</html>", b"\xff\xfe\x00", b"{}",
                                    b'{"status": "error", "error": "x"}', b"[1, 2]"])
def test_poll_turns_a_garbled_answer_into_an_error_event(answer: bytes) -> None:
    poller = PrometheusAlerts("http://p", 1, get=FakeGet(answer))
    (event,) = poller.poll(1.0)
    assert event["kind"] == "alert_source_error" and event["service"] == "prometheus"
    assert event["detail"].startswith("Prometheus alerts unreadable: ")


def test_poll_of_an_http_error_status_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    response = requests.Response()
    response.status_code = 503
    monkeypatch.setattr(requests, "get", lambda url, timeout: response)
    (event,) = PrometheusAlerts("http://p", 1).poll(1.0)
    assert event["kind"] == "alert_source_down" and "503" in event["detail"]
