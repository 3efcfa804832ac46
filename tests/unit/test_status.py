"""hub.status: every state arrow, the overall verdict and its exit code; hub.events: the ring."""

from __future__ import annotations

from itertools import count

import pytest

from unistack.hub.events import Event, EventLog
from unistack.hub.status import (
    DEGRADED,
    DOWN,
    EXIT_CODES,
    FAILED,
    HEALTHY,
    READY,
    STARTING,
    STOPPED,
    UNHEALTHY,
    ServiceStatus,
    next_state,
    overall,
    status_document,
)

HUB_STATES = (STOPPED, STARTING, READY, UNHEALTHY, FAILED)
STARTED, TIMEOUT = 100.0, 20.0
WITHIN, PAST = STARTED + TIMEOUT - 0.5, STARTED + TIMEOUT + 0.5


def step(current: str, program: str, probe_ok: bool, now: float = WITHIN) -> str:
    return next_state(current, program, probe_ok,
                      started_at=STARTED, now=now, ready_timeout=TIMEOUT)


@pytest.mark.parametrize("current", HUB_STATES)
@pytest.mark.parametrize("probe_ok", [True, False])
def test_fatal_is_failed_whatever_the_probe(current: str, probe_ok: bool) -> None:
    assert step(current, "FATAL", probe_ok) == FAILED


@pytest.mark.parametrize("current", HUB_STATES)
@pytest.mark.parametrize("probe_ok", [True, False])
def test_backoff_is_starting_whatever_the_probe(current: str, probe_ok: bool) -> None:
    assert step(current, "BACKOFF", probe_ok, now=PAST) == STARTING


@pytest.mark.parametrize("program", ["STOPPED", "EXITED", "STOPPING", "UNKNOWN"])
@pytest.mark.parametrize("current", HUB_STATES)
def test_not_running_is_stopped_even_if_a_probe_answers(program: str, current: str) -> None:
    assert step(current, program, probe_ok=True) == STOPPED


@pytest.mark.parametrize("program", ["STARTING", "RUNNING"])
@pytest.mark.parametrize("current", HUB_STATES)
def test_running_and_probe_ok_is_ready(program: str, current: str) -> None:
    assert step(current, program, probe_ok=True, now=PAST) == READY


@pytest.mark.parametrize("current", [READY, UNHEALTHY])
@pytest.mark.parametrize("now", [WITHIN, PAST])
def test_ready_then_failing_probe_is_unhealthy(current: str, now: float) -> None:
    assert step(current, "RUNNING", probe_ok=False, now=now) == UNHEALTHY


@pytest.mark.parametrize("current", [STOPPED, STARTING])
def test_not_ready_within_timeout_is_starting(current: str) -> None:
    assert step(current, "RUNNING", probe_ok=False, now=WITHIN) == STARTING
    assert step(current, "STARTING", probe_ok=False, now=STARTED + TIMEOUT) == STARTING


@pytest.mark.parametrize("current", [STOPPED, STARTING, FAILED])
def test_not_ready_past_timeout_is_failed(current: str) -> None:
    assert step(current, "RUNNING", probe_ok=False, now=PAST) == FAILED


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


# --- events ----------------------------------------------------------------------------


def test_event_carries_its_fields_and_the_injected_clock() -> None:
    log = EventLog(clock=lambda: 123.0)
    event = log.emit("redis", "state", "warning", "READY -> UNHEALTHY")
    assert event == {"ts": 123.0, "service": "redis", "kind": "state",
                     "severity": "warning", "detail": "READY -> UNHEALTHY"}
    assert log.recent() == [event]


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
