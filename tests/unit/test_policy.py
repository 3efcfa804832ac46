"""policy: every transition arrow, backoff with jitter, the flap guard and incidents.

Time is a plain float passed as `now`; the jitter's random source is injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise

import pytest

from unistack.policy import (
    CAPTURE,
    DEGRADED,
    EVENT,
    FAILED,
    KILL,
    LOOPING,
    MAINTENANCE,
    READY,
    RESTARTING,
    START,
    STARTING,
    STOP,
    STOPPED,
    UNHEALTHY,
    Action,
    PolicyConfig,
    ServicePolicy,
    Threshold,
)

CONFIG = PolicyConfig(
    backoff_initial=1.0, backoff_max=300.0, jitter=0.2, stable_period=600.0, flap_restarts=3,
    flap_window=600.0, resolve_after=3.0, loop_resolve_after=60.0, ready_timeout=20.0,
)


def make(config: PolicyConfig = CONFIG, critical: bool = True, rng: float = 0.5) -> ServicePolicy:
    """A policy whose jitter draws RNG every time (0.5 means no jitter at all)."""
    return ServicePolicy("redis", config, critical, rng=lambda: rng)


def events(actions: list[Action]) -> list[str]:
    return [a.event for a in actions if a.kind == EVENT]


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions]


def ready_at(now: float, config: PolicyConfig = CONFIG) -> ServicePolicy:
    """A policy that was started at 0 and became ready at NOW."""
    p = make(config)
    p.started(0.0)
    p.ready(now)
    return p


def crash_loop(p: ServicePolicy, times: list[float]) -> list[Action]:
    """Crash at each of TIMES; supervisord respawns 0.1 s after each crash."""
    actions: list[Action] = []
    for now in times:
        actions += p.exited(now, "exit status 1")
        p.started(now + 0.1)
    return actions


# --- STOPPED -> STARTING -> READY ----------------------------------------------------


def test_started_moves_stopped_to_starting() -> None:
    p = make()
    assert (p.state, p.since) == (STOPPED, 0.0)
    assert p.started(5.0) == []
    assert (p.state, p.since) == (STARTING, 5.0)


def test_a_stop_on_request_is_not_ready_and_no_failure() -> None:
    p = make()
    p.started(0.0)
    p.ready(1.0)
    assert p.stopping(10.0) == []  # no event, no incident, no restart counted
    assert (p.state, p.incident, len(p.restarts)) == (RESTARTING, None, 0)
    p.started(12.0)  # the new process
    assert p.ready(13.0) == [] and p.state == READY
    assert p.tick(100.0) == []  # nothing to resolve


def test_first_ready_emits_one_ready_event() -> None:
    p = make()
    p.started(0.0)
    assert p.ready(1.0) == [Action(EVENT, "ready", "info", "ready")]
    assert (p.state, p.since) == (READY, 1.0)
    assert p.ready(2.0) == []
    assert p.tick(700.0) == []
    assert p.incident is None


def test_a_new_processs_first_ready_resolves_a_crash_at_once_without_a_ready_event() -> None:
    p = ready_at(1.0)
    p.exited(10.0, "exit status 1")
    p.started(10.1)
    recovered = p.ready(11.0)  # RESTARTING -> READY: the incident says it, not `ready`
    assert events(recovered) == ["recovered"]
    assert recovered[0].detail == "ready again after crashed; a new process is ready"
    assert p.incident is None
    assert p.tick(14.0) == [] and p.ready(15.0) == []


def test_a_hang_and_a_failed_start_resolve_at_the_new_processs_first_ready() -> None:
    hung = ready_at(1.0)
    hung.hung(10.0, "PING timed out")
    hung.started(10.2)
    assert hung.tick(10.5) == []  # respawned, not ready yet: still open
    assert events(hung.ready(10.6)) == ["recovered"]
    failed = make()
    failed.started(0.0)
    failed.fatal(1.0, "supervisord gave up")
    failed.tick(2.0)
    failed.started(2.0)
    assert events(failed.ready(2.5)) == ["recovered"]


def test_a_ready_before_the_new_process_started_waits_resolve_after() -> None:
    # The old process answering once more (a probe in flight) is no confirmation.
    p = ready_at(1.0)
    p.hung(10.0, "PING timed out")
    assert p.ready(10.1) == []
    assert p.tick(13.0) == []
    assert events(p.tick(13.1)) == ["recovered"]


def test_an_unhealthy_service_that_recovers_by_itself_waits_resolve_after() -> None:
    p = ready_at(1.0)
    assert events(p.not_ready(10.0, "503")) == ["unhealthy"]
    assert p.ready(11.0) == []  # the same process: ready once is not yet stable
    assert p.tick(13.9) == []
    assert events(p.tick(14.0)) == ["recovered"]


# --- READY -> UNHEALTHY --------------------------------------------------------------


def test_not_ready_moves_ready_to_unhealthy_and_opens_a_warning_incident() -> None:
    p = ready_at(1.0)
    actions = p.not_ready(5.0, "GET /-/ready answered HTTP 503")
    assert actions == [Action(EVENT, "unhealthy", "warning",
                              "not ready: GET /-/ready answered HTTP 503")]
    assert (p.state, p.since, p.incident, p.incident_since) == (UNHEALTHY, 5.0, "unhealthy", 5.0)
    assert p.not_ready(6.0, "still 503") == []  # one event per incident
    assert p.restarts == type(p.restarts)()  # unhealthy is not a restart


def test_not_ready_while_starting_changes_nothing() -> None:
    p = make()
    p.started(0.0)
    assert p.not_ready(1.0, "connection refused") == []
    assert (p.state, p.incident) == (STARTING, None)


def test_unhealthy_back_to_ready_resolves_after_resolve_after() -> None:
    p = ready_at(1.0)
    p.not_ready(5.0, "503")
    assert p.ready(10.0) == []  # UNHEALTHY -> READY
    assert p.state == READY
    assert p.tick(12.9) == []
    assert events(p.tick(13.0)) == ["recovered"]
    assert p.incident is None


# --- hung and crashed ----------------------------------------------------------------


def test_hung_captures_first_then_opens_an_incident_and_kills() -> None:
    p = ready_at(1.0)
    detail = "liveness failed 2 times in a row (timed out); process state sleeping"
    actions = p.hung(50.0, detail)
    assert actions == [
        Action(CAPTURE, "hung", "critical", detail),
        Action(EVENT, "hung", "critical", detail),
        Action(KILL, "hung", "critical", detail),
    ]
    assert (p.state, p.incident, list(p.restarts)) == (RESTARTING, "hung", [50.0])


def test_hung_while_unhealthy_is_restarted_within_the_same_incident() -> None:
    p = ready_at(1.0)
    p.not_ready(5.0, "503")
    actions = p.hung(8.0, "timed out")
    assert kinds(actions) == [CAPTURE, KILL]  # UNHEALTHY -> RESTARTING
    assert (p.state, p.incident, list(p.restarts)) == (RESTARTING, "unhealthy", [8.0])


def test_hung_of_a_non_critical_service_is_a_warning() -> None:
    p = ServicePolicy("prometheus", CONFIG, critical=False, rng=lambda: 0.5)
    p.started(0.0)
    p.ready(1.0)
    assert {a.severity for a in p.hung(5.0, "timed out")} == {"warning"}


def test_hung_while_restarting_or_stopped_does_nothing() -> None:
    p = ready_at(1.0)
    p.exited(5.0, "exit status 1")
    assert p.hung(5.1, "timed out") == []
    assert list(p.restarts) == [5.0]
    assert make().hung(1.0, "timed out") == []


def test_exited_opens_a_crashed_incident_and_leaves_the_respawn_to_supervisord() -> None:
    p = ready_at(1.0)
    actions = p.exited(50.0, "process 42 exited")
    assert actions == [Action(EVENT, "crashed", "critical", "process 42 exited")]
    assert (p.state, p.since, p.incident) == (RESTARTING, 50.0, "crashed")
    assert p.started(50.2) == []  # supervisord respawned it: still RESTARTING until ready
    assert p.state == RESTARTING


def test_exited_while_stopped_is_not_a_crash() -> None:
    p = make()
    assert p.exited(1.0, "exit status 0") == []
    assert (p.state, p.incident) == (STOPPED, None)


def test_a_second_failure_while_an_incident_is_open_emits_no_event() -> None:
    p = ready_at(1.0)
    assert events(p.not_ready(10.0, "503")) == ["unhealthy"]
    p.ready(11.0)  # UNHEALTHY -> READY, the incident still open (not stable yet)
    second = p.hung(12.0, "timed out")
    assert events(second) == []
    assert kinds(second) == [CAPTURE, KILL]  # it still acts
    assert (p.incident, p.incident_since) == ("unhealthy", 10.0)


# --- the flap guard: -> LOOPING ------------------------------------------------------


def test_flap_restarts_within_the_window_is_looping_with_one_looping_event() -> None:
    p = ready_at(0.0)
    first = crash_loop(p, [10.0, 20.0])
    assert events(first) == ["crashed"]
    assert p.state == RESTARTING
    third = p.exited(30.0, "exit status 1")
    assert kinds(third) == [EVENT, STOP]  # any -> LOOPING
    assert third[0].event == "looping"
    assert third[0].severity == "critical"
    assert "3 restarts within 600 s" in third[0].detail
    assert p.state == LOOPING
    assert p.next_start == pytest.approx(31.0)  # backoff(1) = 1 s
    assert KILL not in kinds(third)


def test_looping_is_announced_once_however_many_restarts_follow() -> None:
    p = ready_at(0.0)
    announced = crash_loop(p, [10.0, 20.0, 30.0])
    for now in (40.0, 50.0, 60.0, 70.0):
        p.started(now - 5)
        more = p.exited(now, "exit status 1")
        announced += more
        assert kinds(more) == [STOP]
        assert p.state == LOOPING
    assert events(announced) == ["crashed", "looping"]


def test_looping_schedules_starts_with_doubling_backoff() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    delays = [p.next_start - 30.0 if p.next_start else None]
    for now in (40.0, 50.0, 60.0):
        assert p.tick(p.next_start or 0.0) == [Action(START, detail="backoff elapsed")]
        p.started(now - 1)
        p.exited(now, "exit status 1")
        delays.append(p.next_start - now if p.next_start else None)
    assert delays == pytest.approx([1.0, 2.0, 4.0, 8.0])


def test_tick_at_next_start_starts_it_once() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    assert p.next_start == pytest.approx(31.0)
    assert p.tick(30.9) == []
    assert p.tick(31.0) == [Action(START, detail="backoff elapsed")]
    assert p.next_start is None
    assert p.tick(31.1) == []


def test_restarts_older_than_the_window_are_forgotten() -> None:
    p = ready_at(0.0)
    seen: list[Action] = []
    for now in (100.0, 701.0, 1302.0, 1903.0):  # 601 s apart: never 3 in 600 s
        seen += p.exited(now, "exit status 1")
        p.started(now + 0.1)
        seen += p.ready(now + 1)
        seen += p.tick(now + 5)
        assert list(p.restarts) == [now]
    assert events(seen) == ["crashed", "recovered"] * 4
    assert p.state == READY


def test_a_looping_service_stays_held_once_its_capped_backoff_spreads_crashes_wider() -> None:
    """At the 300 s cap, crashes come more than flap_window / (flap_restarts - 1) apart:
    fewer than flap_restarts fall in the window, and it is still a loop held by backoff."""
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    assert p.state == LOOPING
    crash, delays = 30.0, [(p.next_start or 0.0) - 30.0]
    seen: list[Action] = []
    for _ in range(13):
        start = p.next_start or 0.0
        assert p.tick(start) == [Action(START, detail="backoff elapsed")]
        p.started(start)
        crash = start + 0.5
        more = p.exited(crash, "exit status 1")
        seen += more
        assert kinds(more) == [STOP]  # held: supervisord must not respawn it
        assert (p.state, p.incident) == (LOOPING, "crashed")
        delays.append((p.next_start or 0.0) - crash)
    assert delays == pytest.approx(
        [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0, 300.0, 300.0])
    assert len(p.restarts) < CONFIG.flap_restarts  # the window alone no longer sees a loop
    assert list(p.restarts) == [crash - 300.5, crash]
    assert events(seen) == []  # the same incident throughout: no new crashed, no new looping


def test_a_looping_service_crashing_once_per_flap_window_is_still_held() -> None:
    config = replace(CONFIG, backoff_initial=100.0, backoff_max=1000.0, jitter=0.0,
                          flap_restarts=3, flap_window=60.0, ready_timeout=20.0)
    p = make(config)
    p.started(0.0)
    crash_loop(p, [1.0, 2.0, 3.0])
    assert p.state == LOOPING
    assert p.next_start == pytest.approx(103.0)
    delays: list[float] = []
    for _ in range(4):
        start = p.next_start or 0.0
        assert p.tick(start)[0].kind == START
        p.started(start)
        crash = start + 5.0
        assert kinds(p.exited(crash, "exit status 1")) == [STOP]
        assert list(p.restarts) == [crash]  # alone in its window, yet a loop still
        assert p.state == LOOPING
        delays.append((p.next_start or 0.0) - crash)
    assert delays == pytest.approx([200.0, 400.0, 800.0, 1000.0])


def test_a_looping_service_not_ready_in_time_is_held_again_not_killed() -> None:
    config = replace(CONFIG, backoff_initial=100.0, backoff_max=1000.0, jitter=0.0,
                          flap_restarts=3, flap_window=60.0, ready_timeout=20.0)
    p = make(config)
    p.started(0.0)
    crash_loop(p, [1.0, 2.0, 3.0])
    delays: list[float] = []
    for _ in range(3):
        start = p.next_start or 0.0
        assert p.tick(start)[0].kind == START
        p.started(start)
        p.not_ready(start + 1.0, "connection refused")
        assert p.tick(start + 20.0) == []
        hung = start + 20.5
        actions = p.tick(hung)
        assert kinds(actions) == [CAPTURE, STOP]  # stopped and held, not killed to respawn
        assert actions[0].event == "hung"
        assert (p.state, list(p.restarts)) == (LOOPING, [hung])
        delays.append((p.next_start or 0.0) - hung)
    assert delays == pytest.approx([200.0, 400.0, 800.0])


def test_a_crash_before_a_loop_has_resolved_is_held_even_alone_in_its_window() -> None:
    config = replace(CONFIG, backoff_initial=100.0, backoff_max=1000.0, jitter=0.0,
                          flap_restarts=3, flap_window=60.0, loop_resolve_after=60.0)
    p = make(config)
    p.started(0.0)
    crash_loop(p, [1.0, 2.0, 3.0])
    assert p.tick(103.0)[0].kind == START
    p.started(103.0)
    assert p.ready(104.0) == []  # LOOPING -> READY
    assert p.tick(163.9) == []  # 59.9 s of ready: the loop is not over yet
    crashed = p.exited(164.0, "exit status 1")
    assert kinds(crashed) == [STOP]  # READY -> LOOPING again, held, no new incident
    assert (p.state, p.incident, list(p.restarts)) == (LOOPING, "crashed", [164.0])
    assert p.next_start == pytest.approx(364.0)  # backoff(2): the loop goes on


def test_a_resolved_loop_releases_the_hold_but_its_backoff_restarts_only_when_stable() -> None:
    config = replace(CONFIG, backoff_initial=100.0, backoff_max=1000.0, jitter=0.0,
                          flap_restarts=3, flap_window=60.0, loop_resolve_after=60.0,
                          stable_period=600.0)
    p = make(config)
    p.started(0.0)
    crash_loop(p, [1.0, 2.0, 3.0])
    p.tick(103.0)
    p.started(103.0)
    p.ready(104.0)
    assert events(p.tick(164.0)) == ["recovered"]  # the loop is over after 60 s of ready
    alone = p.exited(300.0, "exit status 1")  # the only restart in its window
    assert kinds(alone) == [EVENT] and events(alone) == ["crashed"]
    assert (p.state, p.next_start) == (RESTARTING, None)  # supervisord respawns it
    p.started(300.1)
    again = crash_loop(p, [301.0, 302.0])  # 3 in the window: a loop again
    assert events(again) == ["looping"]
    assert p.next_start == pytest.approx(502.0)  # backoff(2): not ready 600 s yet
    p.tick(502.0)
    p.started(502.0)
    p.ready(503.0)
    assert events(p.tick(563.0)) == ["recovered"]
    p.tick(1102.9)
    assert len(p.restarts) == 3
    p.tick(1103.0)  # ready for stable_period: the history is forgotten
    assert len(p.restarts) == 0
    crash_loop(p, [1200.0, 1201.0, 1202.0])
    assert p.next_start == pytest.approx(1302.0)  # backoff(1) again


# --- backoff --------------------------------------------------------------------------


@pytest.mark.parametrize("rng", [0.0, 0.5, 1.0])
def test_backoff_doubles_within_the_jitter_and_is_capped(rng: float) -> None:
    config = replace(CONFIG, backoff_initial=1.0, backoff_max=100.0, jitter=0.2)
    p = make(config, rng=rng)
    for attempt in range(1, 15):
        base = 2.0 ** (attempt - 1)
        delay = p.backoff(attempt)
        assert min(100.0, base * 0.8) <= delay <= min(100.0, base * 1.2)
        assert delay == pytest.approx(min(100.0, base * (1 + 0.2 * (2 * rng - 1))))
        assert delay <= 100.0
    assert p.backoff(40) == 100.0


def test_backoff_without_jitter_doubles_exactly() -> None:
    p = make(rng=0.5)
    assert [p.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_stays_capped_however_many_attempts() -> None:
    assert make().backoff(1025) == CONFIG.backoff_max


# --- incidents resolve ------------------------------------------------------------------


def test_incident_resolves_once_after_resolve_after_of_ready() -> None:
    p = ready_at(0.0)
    p.not_ready(10.0, "503")
    p.ready(20.0)
    assert p.tick(22.9) == []
    recovered = p.tick(23.0)
    assert events(recovered) == ["recovered"]
    assert recovered[0].severity == "info"
    assert recovered[0].detail == "ready again after unhealthy; stable 3.0 s"
    assert p.incident is None
    assert p.tick(24.0) == []
    assert p.tick(100.0) == []


def test_a_failure_before_resolution_keeps_the_same_incident() -> None:
    p = ready_at(0.0)
    p.degraded(10.0, "MISCONF")
    p.ready(20.0)
    assert p.tick(22.0) == []
    assert p.not_ready(22.5, "503") == []  # READY -> UNHEALTHY, inside the open incident
    assert (p.state, p.incident, p.incident_since) == (UNHEALTHY, "degraded", 10.0)
    p.ready(23.0)
    assert p.tick(25.9) == []  # the resolve period starts again from the last ready
    assert events(p.tick(26.0)) == ["recovered"]


def test_a_looping_incident_resolves_only_after_loop_resolve_after() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    assert p.tick(31.0)[0].kind == START
    p.started(31.0)
    assert p.ready(40.0) == []  # LOOPING -> READY
    assert p.state == READY
    assert p.tick(43.0) == []  # resolve_after is not enough for a loop
    assert p.tick(99.9) == []
    assert events(p.tick(100.0)) == ["recovered"]
    assert p.tick(101.0) == []


def test_after_the_stable_period_restarts_and_backoff_start_over() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    p.tick(31.0)
    p.started(31.0)
    p.ready(40.0)
    assert events(p.tick(100.0)) == ["recovered"]
    assert len(p.restarts) == 3
    p.tick(639.9)
    assert len(p.restarts) == 3
    p.tick(640.0)
    assert len(p.restarts) == 0
    again = crash_loop(p, [700.0, 710.0, 720.0])
    assert events(again) == ["crashed", "looping"]
    assert p.next_start == pytest.approx(721.0)  # backoff(1) again


def test_before_the_stable_period_a_new_crash_continues_the_loop() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    p.tick(31.0)
    p.started(31.0)
    p.ready(40.0)
    assert events(p.tick(100.0)) == ["recovered"]
    again = p.exited(200.0, "exit status 1")
    assert events(again) == ["crashed", "looping"]  # a new incident, at once a loop
    assert p.next_start == pytest.approx(202.0)  # backoff(2): the history is kept


# --- FATAL: the hub takes over ----------------------------------------------------------


def test_fatal_fails_with_one_event_and_schedules_a_start() -> None:
    p = make()
    p.started(0.0)
    actions = p.fatal(1.0, "supervisord gave up: Exited too quickly")
    assert actions == [Action(EVENT, "failed", "critical",
                              "supervisord gave up: Exited too quickly")]
    assert (p.state, p.incident) == (FAILED, "failed")  # any -> FAILED
    assert p.next_start == pytest.approx(2.0)
    assert p.fatal(1.5, "still FATAL") == []  # a start is pending: nothing new
    assert p.next_start == pytest.approx(2.0)
    assert p.tick(2.0) == [Action(START, detail="backoff elapsed")]
    p.started(2.0)
    assert p.state == STARTING  # FAILED -> STARTING
    assert events(p.ready(3.0)) == ["recovered"]  # a new process is ready: over
    assert p.tick(6.0) == []


def test_failed_is_not_restarted_as_hung_while_it_waits() -> None:
    p = make(replace(CONFIG, backoff_initial=50.0, ready_timeout=20.0, jitter=0.0))
    p.started(0.0)
    p.fatal(1.0, "gave up")
    assert p.tick(30.0) == []
    assert p.tick(51.0)[0].kind == START


# --- ready timeout ------------------------------------------------------------------------


def test_starting_not_ready_within_ready_timeout_is_restarted_as_hung() -> None:
    p = make()
    p.started(10.0)
    p.not_ready(12.0, "connection refused")
    assert p.tick(30.0) == []
    actions = p.tick(30.5)
    assert kinds(actions) == [CAPTURE, EVENT, KILL]
    assert actions[1].event == "hung"
    assert "not ready 20 s after start: connection refused" in actions[1].detail
    assert p.state == RESTARTING  # STARTING -> RESTARTING


def test_restarting_not_ready_within_ready_timeout_is_killed_again() -> None:
    p = ready_at(1.0)
    p.exited(5.0, "exit status 1")
    p.started(10.0)
    assert p.tick(30.0) == []
    actions = p.tick(30.5)
    assert kinds(actions) == [CAPTURE, KILL]  # the crash incident is still open
    assert p.incident == "crashed"


def test_a_long_running_service_that_crashes_is_not_hung_at_the_next_tick() -> None:
    p = ready_at(1.0)
    p.exited(1000.0, "exit status 1")
    assert p.tick(1000.05) == []  # supervisord respawns it; give it ready_timeout
    assert list(p.restarts) == [1000.0]


def test_looping_waits_for_a_backoff_longer_than_ready_timeout() -> None:
    p = make(replace(CONFIG, backoff_initial=40.0, backoff_max=300.0, ready_timeout=20.0,
                          jitter=0.0))
    p.started(0.0)
    crash_loop(p, [1.0, 2.0, 3.0])
    assert p.next_start == pytest.approx(43.0)
    for now in range(4, 43):
        assert p.tick(float(now)) == []
    assert p.tick(43.0) == [Action(START, detail="backoff elapsed")]


# --- adoption and operator stops --------------------------------------------------------


def test_adopted_then_ready_is_ready_without_a_restart_or_an_incident() -> None:
    p = make()
    assert p.adopted(100.0, running_since=95.0) == []
    assert p.state == STARTING  # STOPPED -> STARTING
    assert p.tick(100.1) == []
    actions = p.ready(100.2)
    assert kinds(actions) == [EVENT]
    assert actions[0].event == "adopted"
    assert actions[0].severity == "info"
    assert (p.state, p.incident, len(p.restarts), p.next_start) == (READY, None, 0, None)
    assert p.ready(101.0) == []


def test_a_later_start_of_an_adopted_service_is_announced_as_ready() -> None:
    p = make()
    p.adopted(100.0, running_since=95.0)
    p.ready(100.2)
    p.stopped(200.0)
    p.started(201.0)
    assert events(p.ready(202.0)) == ["ready"]


def test_adopted_long_running_program_is_not_restarted_before_its_probe_answers() -> None:
    p = make()
    p.adopted(3600.0, running_since=0.0)
    assert p.tick(3600.01) == []
    assert events(p.ready(3600.2)) == ["adopted"]


def test_stopped_clears_the_scheduled_start() -> None:
    p = make()
    p.started(0.0)
    p.fatal(1.0, "gave up")
    assert p.next_start is not None
    assert p.stopped(1.5) == []
    assert p.state == STOPPED  # any -> STOPPED
    assert p.next_start is None
    assert p.tick(1000.0) == []


# --- a whole crash loop ------------------------------------------------------------------


@dataclass
class World:
    """supervisord and one program, simulated in 0.1 s steps.

    The program crashes 0.5 s after each start while CRASHES remain, then stays up and
    answers its probe. supervisord respawns a crashed program after 0.1 s unless the hub
    stopped it; the hub's START actions spawn it.
    """

    policy: ServicePolicy
    crashes: int
    log: list[tuple[float, Action]] = field(default_factory=list)
    crash_times: list[float] = field(default_factory=list)
    start_times: list[float] = field(default_factory=list)
    running_since: float | None = None
    respawn_at: float | None = None

    def spawn(self, now: float) -> None:
        self.running_since, self.respawn_at = now, None
        self.policy.started(now)

    def step(self, now: float) -> None:
        actions: list[Action] = []
        if self.running_since is not None and now - self.running_since >= 0.5 - 1e-9:
            if self.crashes:
                self.crashes -= 1
                self.crash_times.append(now)
                self.running_since, self.respawn_at = None, now + 0.1
                actions += self.policy.exited(now, "exit status 1")
            elif self.policy.state != READY:
                actions += self.policy.ready(now)
        if self.respawn_at is not None and now >= self.respawn_at - 1e-9:
            self.spawn(now)
        actions += self.policy.tick(now)
        for action in actions:
            self.log.append((now, action))
            if action.kind == STOP:
                self.running_since = self.respawn_at = None
            elif action.kind == START:
                self.start_times.append(now)
                self.spawn(now)

    def run(self, seconds: float) -> None:
        self.spawn(0.0)
        for tenth in range(1, round(seconds * 10) + 1):
            self.step(tenth / 10)


def test_ten_crashes_then_up_is_one_incident_with_capped_backoff() -> None:
    config = replace(CONFIG, backoff_initial=1.0, backoff_max=8.0, jitter=0.2, flap_restarts=3,
                          flap_window=600.0, resolve_after=3.0, loop_resolve_after=60.0,
                          ready_timeout=20.0)
    world = World(make(config, rng=0.5), crashes=10)
    world.run(200.0)
    assert [a.event for _, a in world.log if a.kind == EVENT] == [
        "crashed", "looping", "recovered"]
    assert len(world.crash_times) == 10
    # The first two crashes are respawned by supervisord; from the third the hub waits.
    looped = world.crash_times[2:]
    assert len(world.start_times) == len(looped) == 8
    delays = [start - crash for start, crash in zip(world.start_times, looped, strict=True)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0])
    assert world.start_times == sorted(world.start_times)
    assert [a.kind for _, a in world.log].count(STOP) == 8
    assert KILL not in [a.kind for _, a in world.log]
    (recovered_at,) = [t for t, a in world.log if a.event == "recovered"]
    up_at = world.start_times[-1] + 0.5
    assert recovered_at == pytest.approx(up_at + 60.0)
    assert (world.policy.state, world.policy.incident) == (READY, None)


@pytest.mark.parametrize("rng", [0.0, 1.0])
def test_crash_loop_delays_stay_within_the_jitter_and_the_cap(rng: float) -> None:
    config = replace(CONFIG, backoff_initial=1.0, backoff_max=8.0, jitter=0.2)
    world = World(make(config, rng=rng), crashes=10)
    world.run(200.0)
    looped = world.crash_times[2:]
    delays = [start - crash for start, crash in zip(world.start_times, looped, strict=True)]
    for attempt, delay in enumerate(delays, start=1):
        base = 2.0 ** (attempt - 1)
        # 0.1 s steps: a start is seen at the first step at or after next_start
        assert min(8.0, base * 0.8) - 1e-9 <= delay <= min(8.0, base * 1.2) + 0.1 + 1e-9
    assert max(delays) <= 8.0 + 0.1


def test_ten_crashes_then_up_with_the_default_config() -> None:
    world = World(make(CONFIG, rng=0.5), crashes=10)
    world.run(400.0)
    assert [a.event for _, a in world.log if a.kind == EVENT] == [
        "crashed", "looping", "recovered"]
    assert CAPTURE not in [a.kind for _, a in world.log]
    looped = world.crash_times[2:]
    delays = [start - crash for start, crash in zip(world.start_times, looped, strict=True)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])


def test_a_long_crash_loop_with_the_default_config_stays_held_at_the_backoff_cap() -> None:
    """Past 256 s of backoff the crashes come 300 s apart, two per 600 s window."""
    world = World(make(CONFIG, rng=0.5), crashes=15)
    world.run(2000.0)
    assert [a.event for _, a in world.log if a.kind == EVENT] == [
        "crashed", "looping", "recovered"]
    looped = world.crash_times[2:]
    assert len(looped) == 13
    assert [a.kind for _, a in world.log].count(STOP) == len(looped)  # every one held
    delays = [start - crash for start, crash in zip(world.start_times, looped, strict=True)]
    assert delays == pytest.approx(
        [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0, 300.0])
    gaps = [later - earlier for earlier, later in pairwise(looped)]
    assert gaps[-3:] == pytest.approx([300.5] * 3)  # > flap_window / (flap_restarts - 1)
    assert (world.policy.state, world.policy.incident) == (READY, None)


# --- resource thresholds with hysteresis -------------------------------------------------


def test_threshold_raises_once_and_clears_only_past_the_margin() -> None:
    level = Threshold(limit=90.0, margin=5.0)
    assert [level.update(v) for v in (80.0, 89.9, 90.0, 95.0, 89.0, 85.1, 90.0)] == [
        None, None, "raised", None, None, None, None]  # OK -> RAISED at the limit
    assert level.raised
    assert level.update(85.0) is None  # exactly at the margin: still raised
    assert level.update(84.9) == "cleared"  # RAISED -> OK
    assert level.update(84.0) is None
    assert level.update(90.0) == "raised"


def test_threshold_below_watches_falling_values() -> None:
    free_disk = Threshold(limit=10.0, margin=5.0, above=False)
    assert [free_disk.update(v) for v in (50.0, 10.1, 10.0, 9.0, 14.9, 15.0, 15.1)] == [
        None, None, "raised", None, None, None, "cleared"]


# --- maintenance: an operator's command holds it stopped ---------------------------------


def test_maintenance_moves_a_ready_service_to_maintenance_with_no_failure() -> None:
    p = ready_at(1.0)
    assert p.maintenance(50.0) == []
    assert (p.state, p.since, p.incident, len(p.restarts)) == (MAINTENANCE, 50.0, None, 0)
    assert p.tick(50.0 + CONFIG.ready_timeout + 1) == []  # not restarted as hung
    assert p.tick(10_000.0) == []


def test_maintenance_cancels_a_scheduled_start() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0, 30.0])
    assert p.next_start is not None
    assert p.maintenance(30.5) == []
    assert (p.state, p.next_start) == (MAINTENANCE, None)  # LOOPING -> MAINTENANCE
    assert p.tick(1000.0) == []  # no start is due while it is held


def test_maintenance_of_a_starting_service_is_not_a_hang() -> None:
    p = make()
    p.started(0.0)
    p.maintenance(1.0)  # STARTING -> MAINTENANCE
    assert p.tick(1.0 + CONFIG.ready_timeout + 5) == []
    assert p.state == MAINTENANCE


def test_maintenance_over_is_stopped_so_the_hub_starts_it() -> None:
    p = ready_at(1.0)
    p.maintenance(50.0)
    assert p.maintenance_over(80.0) == []
    assert (p.state, p.since, p.next_start) == (STOPPED, 80.0, None)  # MAINTENANCE -> STOPPED
    assert p.tick(1000.0) == []  # the hub's sync starts it, not a backoff


def test_after_maintenance_the_service_starts_like_a_first_start() -> None:
    p = ready_at(1.0)
    p.maintenance(50.0)
    p.maintenance_over(80.0)
    p.started(81.0)
    assert p.state == STARTING  # STOPPED -> STARTING
    assert p.ready(82.0) == [Action(EVENT, "ready", "info", "ready")]
    assert p.tick(2000.0) == []


def test_after_maintenance_the_ready_timeout_counts_from_the_new_start() -> None:
    p = ready_at(1.0)
    p.maintenance(50.0)
    p.maintenance_over(80.0)
    p.started(100.0)
    assert p.tick(100.0 + CONFIG.ready_timeout) == []
    actions = p.tick(100.0 + CONFIG.ready_timeout + 0.5)
    assert kinds(actions) == [CAPTURE, EVENT, KILL]
    assert actions[1].event == "hung"


def test_an_incident_open_before_maintenance_resolves_once_ready_after_it() -> None:
    p = ready_at(1.0)
    assert events(p.exited(10.0, "exit status 1")) == ["crashed"]
    p.maintenance(11.0)
    p.maintenance_over(40.0)
    p.started(41.0)
    assert events(p.ready(42.0)) == ["recovered"]  # not a `ready`: the incident says it
    assert p.incident is None


# --- construction ---------------------------------------------------------------------


def test_a_new_policy_is_stopped_with_nothing_open_and_critical_by_default() -> None:
    p = ServicePolicy("redis", CONFIG)
    assert (p.name, p.state, p.since, p.incident, p.incident_since, p.next_start) == (
        "redis", STOPPED, 0.0, None, 0.0, None)
    p.started(0.0)
    p.ready(1.0)
    assert {a.severity for a in p.hung(5.0, "timed out")} == {"critical"}


# --- busy and degraded: alive, not serving, never killed for it -------------------------


def test_busy_moves_a_ready_service_to_degraded_with_one_warning_incident() -> None:
    p = ready_at(1.0)  # critical, yet busy is only a warning: it is making progress
    assert p.busy(10.0, "probe timed out; cpu +80 %") == [
        Action(EVENT, "busy", "warning", "probe timed out; cpu +80 %")]
    assert (p.state, p.since, p.incident, p.incident_since) == (DEGRADED, 10.0, "busy", 10.0)
    assert p.busy(11.0, "still busy") == []  # one event per incident
    assert (p.since, p.incident_since) == (10.0, 10.0)
    assert p.tick(12.0) == []  # not ready: nothing to resolve, no restart
    assert p.state == DEGRADED


def test_a_busy_service_ready_again_resolves_after_resolve_after() -> None:
    p = ready_at(1.0)
    p.busy(10.0, "busy")
    assert p.ready(20.0) == []  # the same process: ready once is not yet stable
    assert p.state == READY  # DEGRADED -> READY
    assert p.tick(22.9) == []
    assert events(p.tick(23.0)) == ["recovered"]


def test_busy_or_degraded_while_not_running_does_nothing() -> None:
    stopped = make()
    restarting = ready_at(1.0)
    restarting.exited(5.0, "exit status 1")
    failed = make()
    failed.started(0.0)
    failed.fatal(1.0, "gave up")
    looping = ready_at(0.0)
    crash_loop(looping, [10.0, 20.0, 30.0])
    for p, state in ((stopped, STOPPED), (restarting, RESTARTING), (failed, FAILED),
                     (looping, LOOPING)):
        incident = p.incident
        assert p.busy(40.0, "busy") == []
        assert p.degraded(41.0, "MISCONF") == []
        assert (p.state, p.incident) == (state, incident)


def test_degraded_moves_a_ready_service_to_degraded_with_an_incident_of_its_severity() -> None:
    p = ready_at(1.0)
    assert p.degraded(10.0, "MISCONF: failed save") == [
        Action(EVENT, "degraded", "critical", "MISCONF: failed save")]
    assert (p.state, p.since, p.incident) == (DEGRADED, 10.0, "degraded")
    minor = ServicePolicy("prometheus", CONFIG, critical=False, rng=lambda: 0.5)
    minor.started(0.0)
    assert minor.degraded(1.0, "bad model") == [
        Action(EVENT, "degraded", "warning", "bad model")]  # STARTING -> DEGRADED
    assert minor.state == DEGRADED


def test_a_busy_or_degraded_incident_escalates_when_the_service_hangs_or_crashes() -> None:
    busy = ready_at(1.0)
    busy.busy(10.0, "busy")
    hung = busy.hung(100.0, "busy past its grace")
    assert events(hung) == ["hung"]  # a worse failure: one more event
    assert (busy.incident, busy.incident_since) == ("hung", 100.0)
    degraded = ready_at(1.0)
    degraded.degraded(10.0, "MISCONF")
    assert events(degraded.exited(20.0, "exit status 1")) == ["crashed"]
    assert (degraded.incident, degraded.incident_since) == ("crashed", 20.0)
    degraded.started(20.1)
    assert events(degraded.exited(30.0, "exit status 1")) == []  # no further escalation


# --- more of the flap guard, fatal, adoption and stops ---------------------------------


def test_the_looping_event_names_the_last_failure_and_looping_starts_then() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0])
    looping = p.exited(30.0, "exit status 137")
    assert looping[0] == Action(
        EVENT, "looping", "critical",
        "3 restarts within 600 s; restarting with backoff (cap 300 s); last: exit status 137")
    assert (p.state, p.since) == (LOOPING, 30.0)


def test_restarts_exactly_flap_window_apart_are_still_within_it() -> None:
    p = ready_at(0.0)
    crash_loop(p, [100.0, 400.0])
    assert events(p.exited(700.0, "exit status 1")) == ["looping"]
    assert list(p.restarts) == [100.0, 400.0, 700.0]


def test_a_fatal_that_completes_a_loop_reports_the_failure_and_the_loop() -> None:
    p = ready_at(0.0)
    crash_loop(p, [10.0, 20.0])
    assert events(p.ready(21.0)) == ["recovered"]  # the restarts are remembered
    actions = p.fatal(30.0, "supervisord gave up")
    assert actions == [
        Action(EVENT, "failed", "critical", "supervisord gave up"),
        Action(EVENT, "looping", "critical", "3 restarts within 600 s; restarting with "
               "backoff (cap 300 s); last: supervisord gave up"),
    ]
    assert (p.state, p.since, p.incident, p.incident_since) == (FAILED, 30.0, "failed", 30.0)


def test_a_ready_of_the_old_process_after_fatal_waits_resolve_after() -> None:
    p = make(replace(CONFIG, backoff_initial=50.0, jitter=0.0))
    p.started(0.0)
    p.fatal(1.0, "gave up")
    assert p.ready(1.5) == []  # no new process yet: no confirmation
    assert p.incident == "failed"
    assert p.tick(4.4) == []
    assert events(p.tick(4.5)) == ["recovered"]


def test_adopted_announces_that_it_was_running_before_this_hub() -> None:
    p = make()
    p.adopted(100.0, running_since=95.0)
    assert (p.state, p.since) == (STARTING, 100.0)
    assert p.ready(100.2) == [
        Action(EVENT, "adopted", "info", "running before this hub started; ready")]


def test_a_stop_on_request_restarts_the_ready_timeout_and_stopped_records_when() -> None:
    p = ready_at(1.0)
    p.stopping(10.0)
    assert (p.state, p.since) == (RESTARTING, 10.0)
    assert p.tick(30.0) == []  # the ready timeout counts from the stop
    assert events(p.tick(30.5)) == ["hung"]
    p.stopped(40.0)
    assert (p.state, p.since) == (STOPPED, 40.0)


# --- held by a dependency, the ready timeout, the stable period, backoff ----------------


def test_held_by_a_dependency_starts_the_ready_timeout_only_once_released() -> None:
    p = make()
    p.started(0.0)
    assert p.held(15.0) == []
    assert p.held(5.0) == []  # an earlier time never moves it back
    assert p.tick(35.0) == []
    assert events(p.tick(35.1)) == ["hung"]


def test_not_ready_in_time_without_a_probe_detail_says_only_so() -> None:
    p = make()
    p.started(0.0)
    actions = p.tick(20.5)
    assert actions[1] == Action(EVENT, "hung", "critical", "not ready 20 s after start")


def test_restarts_are_forgotten_only_while_ready() -> None:
    p = make(replace(CONFIG, stable_period=1.0))
    p.started(0.0)
    p.ready(1.0)
    p.exited(10.0, "exit status 1")
    p.started(10.1)
    assert p.tick(15.0) == []
    assert list(p.restarts) == [10.0]  # not ready: nothing is stable
    p.ready(16.0)
    p.tick(17.0)
    assert list(p.restarts) == []


def test_backoff_doubling_stops_at_two_to_the_64_so_no_attempt_overflows() -> None:
    p = make(replace(CONFIG, backoff_max=float("inf"), jitter=0.0))
    assert p.backoff(65) == 2.0 ** 64
    assert p.backoff(10_000) == 2.0 ** 64


def test_threshold_starts_lowered_and_is_lowered_again_once_cleared() -> None:
    level = Threshold(limit=90.0, margin=5.0)
    assert level.raised is False
    assert level.update(95.0) == "raised"
    assert level.raised is True
    assert level.update(80.0) == "cleared"
    assert level.raised is False
