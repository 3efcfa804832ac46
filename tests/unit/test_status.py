"""hub.status: the overall verdict and its exit code; hub.events: the ring.

The state arrows are policy's, tested in test_policy.py."""

from __future__ import annotations

import threading
import time
from itertools import count

import pytest

from unistack.event import Event, Kind, Severity
from unistack.hub.events import EventLog
from unistack.hub.status import (
    DEGRADED,
    DOWN,
    EXIT_CODES,
    HEALTHY,
    ServiceStatus,
    Startup,
    overall,
    status_document,
)
from unistack.policy import FAILED, READY


def service(name: str, critical: bool, ready: bool) -> ServiceStatus:
    return ServiceStatus(name=name, group="infrastructure", critical=critical,
                         state=READY if ready else FAILED, ready=ready, pid=0, since=0.0,
                         detail="", url="")


@pytest.mark.parametrize(
    ("services", "verdict"),
    [
        ([], HEALTHY),
        ([service("redis", True, True), service("prometheus", False, True)], HEALTHY),
        ([service("redis", True, True), service("prometheus", False, False)], DEGRADED),
        ([service("redis", True, False), service("prometheus", False, True)], DOWN),
        ([service("redis", True, False), service("prometheus", False, False)], DOWN),
    ],
    ids=["empty", "all-ready", "non-critical-down", "critical-down", "all-down"],
)
def test_overall(services: list[ServiceStatus], verdict: str) -> None:
    assert overall(services) == verdict


def test_exit_codes() -> None:
    assert EXIT_CODES == {HEALTHY: 0, DEGRADED: 1, DOWN: 2}


def test_status_document() -> None:
    services = [service("redis", True, True), service("prometheus", False, False)]
    document = status_document(services, now=12.5, hub={"pid": 7})
    assert document["overall"] == DEGRADED
    assert document["ts"] == 12.5
    assert document["hub"] == {"pid": 7}
    assert [s["name"] for s in document["services"]] == ["redis", "prometheus"]
    assert document["services"][1]["ready"] is False
    assert document["services"][1]["restarts"] == 0
    assert document["services"][1]["incident"] == ""
    assert document["services"][1]["last_incident"] == ""


def test_status_carries_restarts_and_incidents() -> None:
    status = ServiceStatus(name="redis", group="infrastructure", critical=True, state=READY,
                           ready=True, pid=42, since=1.0, detail="ready", url="redis://x",
                           restarts=2, incident="crashed",
                           last_incident="/var/log/incidents/x-redis.txt")
    assert status.to_json()["restarts"] == 2
    assert status.to_json()["incident"] == "crashed"
    assert status.to_json()["last_incident"] == "/var/log/incidents/x-redis.txt"


# --- events ----------------------------------------------------------------------------


def test_event_carries_its_fields_an_id_and_the_injected_clock() -> None:
    log = EventLog(clock=lambda: 123.0)
    event = log.emit("redis", Kind.UNHEALTHY, Severity.WARNING, "READY -> UNHEALTHY")
    assert event == {"id": 123_000_000, "ts": 123.0, "service": "redis", "kind": "unhealthy",
                     "severity": "warning", "detail": "READY -> UNHEALTHY"}
    assert log.recent() == [event]


def test_event_carries_extra_fields() -> None:
    log = EventLog(clock=lambda: 5.0)
    event = log.emit("prometheus", Kind.CRASHED, Severity.INFO, "caused by redis",
                     cause="redis", incident="/var/log/incidents/x.txt")
    assert event == {"id": 5_000_000, "ts": 5.0, "service": "prometheus", "kind": "crashed",
                     "severity": "info", "detail": "caused by redis", "cause": "redis",
                     "incident": "/var/log/incidents/x.txt"}


def test_ids_grow_even_when_the_clock_stands_still_or_goes_back() -> None:
    times = iter([10.0, 10.0, 9.0])
    log = EventLog(clock=lambda: next(times))
    ids = [log.emit("redis", Kind.READY, Severity.INFO, "ready")["id"] for _ in range(3)]
    assert ids == [10_000_000, 10_000_001, 10_000_002]


def test_after_returns_what_a_reconnecting_reader_missed() -> None:
    ticks = count(1)
    log = EventLog(clock=lambda: float(next(ticks)))
    first, second, third = (log.emit("redis", Kind.READY, Severity.INFO, str(n))
                            for n in range(3))
    assert log.after(first["id"]) == [second, third]
    assert log.after(third["id"]) == []


def test_wait_wakes_on_an_event_or_a_status_change_and_times_out_without_one() -> None:
    log = EventLog()
    began = time.monotonic()
    log.wait(0, log.revision, timeout=0.05)
    assert time.monotonic() - began >= 0.05
    timer = threading.Timer(0.05, lambda: log.emit("redis", Kind.HUNG, Severity.CRITICAL, "x"))
    timer.start()
    log.wait(0, log.revision, timeout=5)
    assert [e["kind"] for e in log.after(0)] == ["hung"]
    newest, revision = log.after(0)[-1]["id"], log.revision
    threading.Timer(0.05, log.status_changed).start()
    log.wait(newest, revision, timeout=5)  # no event: a service's state changed
    assert log.revision == revision + 1
    assert time.monotonic() - began < 2


def test_preloaded_history_keeps_ids_and_gives_old_events_one() -> None:
    log = EventLog(clock=lambda: 100.0)
    mine = log.emit("hub", Kind.STARTED, Severity.INFO, "hub started")
    log.preload([{"ts": 50.0, "service": "redis", "kind": Kind.CRASHED,
                  "severity": Severity.CRITICAL, "detail": "old hub, no id"}])
    assert [e["id"] for e in log.recent()] == [50_000_000, mine["id"]]


def test_ring_keeps_only_the_newest_capacity_events() -> None:
    ticks = count()
    log = EventLog(capacity=3, clock=lambda: float(next(ticks)))
    for i in range(5):
        log.emit("hub", "tick", "info", str(i))
    assert [e["detail"] for e in log.recent()] == ["2", "3", "4"]
    assert [e["detail"] for e in log.recent(limit=2)] == ["3", "4"]
    assert [e["ts"] for e in log.recent()] == [2.0, 3.0, 4.0]


def test_every_subscriber_sees_every_event_in_order() -> None:
    log = EventLog(capacity=1)
    first: list[Event] = []
    second: list[Event] = []
    log.subscribe(first.append)
    log.subscribe(second.append)
    emitted = [log.emit("redis", "state", "info", str(i)) for i in range(3)]
    assert first == emitted
    assert second == emitted
    assert log.recent() == emitted[-1:]


def test_preload_puts_earlier_hubs_events_first_without_duplicates() -> None:
    log = EventLog(capacity=4, clock=lambda: 10.0)
    own = log.emit("hub", "started", "info", "hub started")
    history: list[Event] = [
        {"ts": 5.0, "service": "redis", "kind": "crashed", "severity": "critical", "detail": ""},
        {"ts": 10.0, "service": "hub", "kind": "started", "severity": "info", "detail": "old"},
        {"ts": 3.0, "service": "redis", "kind": "ready", "severity": "info", "detail": ""},
        {"ts": 1.0, "service": "redis", "kind": "adopted", "severity": "info", "detail": ""},
        {"ts": 2.0, "service": "redis", "kind": "hung", "severity": "critical", "detail": ""},
    ]
    log.preload(history)
    assert [e["ts"] for e in log.recent()] == [2.0, 3.0, 5.0, 10.0]  # oldest dropped
    assert log.recent()[-1] is own


def _ready(name: str, ready: bool) -> ServiceStatus:
    return ServiceStatus(name, "infrastructure", True, "READY" if ready else "STARTING",
                         ready, 1, 0.0, "", "")


def test_startup_is_told_once_complete_or_failed_then_complete() -> None:
    said: list[tuple[str, str, str]] = []
    startup = Startup(100.0, 30.0, lambda *event: said.append(event))
    startup.started()
    startup.check(110.0, [_ready("redis", True), _ready("ml_engine", False)])
    assert said == []
    startup.check(131.0, [_ready("redis", True), _ready("ml_engine", False)])
    startup.check(132.0, [_ready("redis", True), _ready("ml_engine", False)])
    assert said == [("startup_failed", "critical",
                     "not ready 30 s after the hub started: ml_engine")]
    startup.check(140.0, [_ready("redis", True), _ready("ml_engine", True)])
    startup.check(150.0, [_ready("redis", True), _ready("ml_engine", True)])
    assert said[1:] == [("startup_complete", "info",
                         "startup complete: every service ready in 40.0 s")]


def test_a_hub_that_only_adopted_running_services_says_nothing() -> None:
    said: list[tuple[str, str, str]] = []
    startup = Startup(100.0, 30.0, lambda *event: said.append(event))
    startup.check(101.0, [_ready("redis", True)])
    assert said == []
