"""alerts.router: events become incidents, incidents become notices, on a float clock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from unistack.alerts import incident
from unistack.alerts.records import (
    OPENED,
    REMINDER,
    RESOLVED,
    SILENCE_ENDED,
    SILENCED,
    UPDATED,
    Notice,
)
from unistack.alerts.render import RenderConfig, render
from unistack.alerts.router import Router, RouterConfig
from unistack.config import load_settings
from unistack.event import Kind

T0 = 1_700_000_000.0
WINDOW = 0.5
CONFIG = RouterConfig(group_window=WINDOW, reminders=(60.0, 120.0, 240.0),
                      resolved_notice=True, flap_failures=3, flap_window=600.0, flap_hold=60.0,
                      critical=frozenset({"redis", "ml_engine", "hub"}))
SRC = Path(__file__).resolve().parents[2] / "src" / "unistack"


def ev(ts: float, service: str, kind: str, severity: str = "critical",
       detail: str = "", **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "service": service, "kind": kind, "severity": severity,
            "detail": detail or f"{service} {kind}", **extra}


class Clock:
    """Feeds events at their own ts, calling `due` at every wakeup as the hub's alert
    thread does; `until` returns every notice since it last returned."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.sent: list[Notice] = []
        self._fresh: list[Notice] = []

    def feed(self, *events: dict[str, Any]) -> None:
        for event in events:
            self._run(event["ts"])
            self.router.handle(event, event["ts"])

    def until(self, t: float) -> list[Notice]:
        self._run(t)
        fresh, self._fresh = self._fresh, []
        return fresh

    def _run(self, t: float) -> None:
        while (wake := self.router.next_wakeup(t)) is not None and wake < t:
            self._take(self.router.due(wake))
        self._take(self.router.due(t))

    def _take(self, notices: list[Notice]) -> None:
        self.sent += notices
        self._fresh += notices


def kinds(notices: list[Notice]) -> list[str]:
    return [n.kind for n in notices]


@pytest.fixture
def clock() -> Clock:
    return Clock(Router(CONFIG))


def test_one_crash_one_opened_after_the_window_one_resolved(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed", incident="/var/log/incidents/redis-1.txt"))
    assert clock.until(T0 + WINDOW - 0.01) == []
    [opened] = clock.until(T0 + WINDOW)
    assert (opened.kind, opened.severity, opened.service, opened.seq) == (
        OPENED, "critical", "redis", 0)
    assert opened.title == "redis crashed" and opened.since == T0
    assert opened.done == "supervisord respawned it"
    assert opened.next_step == ("read /var/log/incidents/redis-1.txt; run "
                                "scripts/diagnose_container.sh")
    clock.feed(ev(T0 + 5, "redis", "recovered", "info"))
    [resolved] = clock.until(T0 + 10)
    assert (resolved.kind, resolved.seq, resolved.incident, resolved.resolved) == (
        RESOLVED, 1, opened.incident, True)
    assert clock.until(T0 + 10_000) == []
    assert clock.router.open_incidents() == []


def test_first_message_waits_exactly_the_window(clock: Clock) -> None:
    clock.router.handle(ev(T0, "redis", "crashed"), T0)
    assert clock.router.next_wakeup(T0) == T0 + WINDOW


def test_a_hang_is_told_at_once_when_its_onset_is_a_window_ago(clock: Clock) -> None:
    # Detecting a hang took a second of probes: the burst began then, not now.
    clock.router.handle(ev(T0 + 1.0, "redis", "hung", onset=T0), T0 + 1.0)
    assert clock.router.next_wakeup(T0 + 1.0) == T0 + WINDOW  # already past
    [opened] = clock.router.due(T0 + 1.0)
    assert (opened.kind, opened.title) == (OPENED, "redis hung")


def test_burst_of_five_services_inside_the_window_is_one_notice(clock: Clock) -> None:
    names = ["redis", "prometheus", "ml_engine", "dashboard", "gpu"]
    clock.feed(*(ev(T0 + i * 0.1, name, "crashed") for i, name in enumerate(names)))
    notices = clock.until(T0 + 30)
    assert kinds(notices) == [OPENED]
    assert notices[0].title == "5 services down: " + ", ".join(names)
    assert len(clock.router.open_incidents()) == 1


def test_a_failure_after_the_window_is_its_own_incident(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 1, "prometheus", "crashed", "warning"))
    notices = clock.until(T0 + 5)
    assert kinds(notices) == [OPENED, OPENED]
    assert notices[1].severity == "warning"


def test_flaps_inside_an_open_incident_add_no_notices(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    for i in range(20):
        clock.feed(ev(T0 + 2 + i * 0.4, "redis", "recovered", "info"),
                   ev(T0 + 2.2 + i * 0.4, "redis", "crashed"))
    clock.feed(ev(T0 + 20, "redis", "recovered", "info"))
    clock.until(T0 + 200)
    # The third failure made it flapping: one UPDATED in its thread says so, then
    # nothing until it has gone flap_hold (60 s) without a failure.
    assert kinds(clock.sent) == [OPENED, UPDATED, RESOLVED]
    assert clock.sent[1].title == "redis crashed, flapping: redis flapping"
    assert clock.sent[2].ts == pytest.approx(T0 + 19.8 + 60)  # the last crash + 60 s


def test_a_recovery_is_resolved_one_window_after_it(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "hung"))
    clock.until(T0 + 3)
    clock.feed(ev(T0 + 3, "redis", "recovered", "info"))
    assert clock.router.next_wakeup(T0 + 3) == T0 + 3 + WINDOW
    assert clock.until(T0 + 3 + WINDOW - 0.01) == []
    [resolved] = clock.until(T0 + 3 + WINDOW)
    assert resolved.kind == RESOLVED and resolved.title == "redis hung: resolved"


def test_back_to_back_failures_below_the_flap_count_are_each_told_and_resolved_promptly(
        ) -> None:
    clock = Clock(Router(CONFIG._replace(flap_failures=1000)))
    for i in range(10):  # a crash every 6 s, back 1 s later, as the alerts benchmark does
        clock.feed(ev(T0 + 6 * i, "redis", "crashed"),
                   ev(T0 + 6 * i + 1, "redis", "recovered", "info"))
    clock.until(T0 + 100)
    assert kinds(clock.sent) == [OPENED, RESOLVED] * 10
    resolved = [n.ts for n in clock.sent if n.kind == RESOLVED]
    assert resolved == [pytest.approx(T0 + 6 * i + 1 + WINDOW) for i in range(10)]


def test_a_flapping_service_gets_one_message_until_it_has_been_quiet(clock: Clock) -> None:
    """A relapse every 2 s for 5 minutes: two told and resolved, then one flapping
    incident resolved 60 s after the last failure."""
    for i in range(150):
        clock.feed(ev(T0 + 2 * i, "redis", "crashed"), ev(T0 + 2 * i + 1, "redis", "recovered"))
    clock.until(T0 + 400)
    told = [n for n in clock.sent if n.kind != REMINDER]
    assert kinds(told) == [OPENED, RESOLVED] * 2 + [OPENED, RESOLVED]
    flapping = told[4]
    assert flapping.title == "redis crashed, flapping"
    assert any("redis flapping: 3 failures within 600 s" in line for line in flapping.what)
    assert told[5].ts == pytest.approx(T0 + 2 * 149 + 60)
    reminders = [n for n in clock.sent if n.kind == REMINDER]
    assert len(reminders) == 3 and "relapsed" in reminders[-1].title


def test_failures_older_than_the_flap_window_do_not_count(clock: Clock) -> None:
    for i in range(6):  # 301 s apart: never 3 within 600 s
        clock.feed(ev(T0 + 301 * i, "redis", "crashed"),
                   ev(T0 + 301 * i + 1, "redis", "recovered", "info"))
    clock.until(T0 + 2000)
    assert kinds(clock.sent) == [OPENED, RESOLVED] * 6
    assert not any("flapping" in n.title for n in clock.sent)


def test_flapping_is_per_fingerprint(clock: Clock) -> None:
    for i in range(2):
        clock.feed(ev(T0 + 10 * i, "redis", "crashed"),
                   ev(T0 + 10 * i + 1, "redis", "recovered", "info"))
    clock.feed(ev(T0 + 30, "prometheus", "crashed", "warning"),
               ev(T0 + 31, "prometheus", "recovered", "info"))
    clock.until(T0 + 40)
    assert kinds(clock.sent) == [OPENED, RESOLVED] * 3
    assert clock.sent[4].title == "prometheus crashed"


def test_flap_inside_the_window_is_one_resolved_opened(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.3, "redis", "recovered", "info"))
    [notice] = clock.until(T0 + 100)
    assert (notice.kind, notice.resolved) == (OPENED, True)
    assert notice.title == "redis crashed, recovered"


def test_dependents_fold_into_the_root_incident(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"),
               ev(T0 + 0.1, "ml_engine", "unhealthy", "info", cause="redis"))
    [opened] = clock.until(T0 + 1)
    assert opened.members == ("ml_engine",) and opened.severity == "critical"
    assert opened.title == "redis crashed"
    clock.feed(ev(T0 + 5, "redis", "recovered", "info"),
               ev(T0 + 6, "ml_engine", "recovered", "info"))
    [resolved] = clock.until(T0 + 20)
    assert resolved.kind == RESOLVED and resolved.members == ("ml_engine",)
    assert any("ml_engine recovered" in line for line in resolved.what)


def test_dependents_joining_later_send_one_update_per_window(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "ml_engine", "crashed", "info", cause="redis"),
               ev(T0 + 2.1, "dashboard", "unhealthy", "info", cause="redis"))
    [update] = clock.until(T0 + 10)
    assert update.kind == UPDATED and update.seq == 1
    assert update.members == ("ml_engine", "dashboard")
    assert update.severity == "critical"
    assert len(clock.router.open_incidents()) == 1


def test_dependent_of_a_closed_incident_is_its_own_with_a_real_severity(clock: Clock) -> None:
    clock.feed(ev(T0, "ml_engine", "crashed", "info", cause="redis"))
    [opened] = clock.until(T0 + 1)
    assert (opened.service, opened.severity) == ("ml_engine", "critical")


def test_escalation_to_looping_is_one_update(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "crashed"), ev(T0 + 3, "redis", "looping"),
               ev(T0 + 4, "redis", "hung"))
    [update] = clock.until(T0 + 10)
    assert update.kind == UPDATED
    assert update.title == "redis in a restart loop: redis escalated from crashed"
    assert update.done == "holding it stopped with backoff"


def test_hung_after_crashed_escalates(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "hung"))
    [update] = clock.until(T0 + 10)
    assert update.done == "killed the hung process group; supervisord respawned it"


def test_reminders_follow_the_schedule_then_repeat_the_last(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    times = []
    for t in range(2, 1000):
        times += [n.ts - T0 for n in clock.until(T0 + t) if n.kind == REMINDER]
    assert times == [60, 120, 240, 480, 720, 960]


def test_resolved_notice_can_be_turned_off() -> None:
    clock = Clock(Router(CONFIG._replace(resolved_notice=False)))
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 5, "redis", "recovered", "info"))
    assert kinds(clock.until(T0 + 100)) == [OPENED]
    assert clock.router.open_incidents() == []


def test_silence_sends_nothing_for_the_service_and_announces_itself(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"), ev(T0 + 5, "redis", "recovered"),
               ev(T0 + 10, "redis", "crashed"))
    notices = clock.until(T0 + 99)
    assert [o.stage for o in clock.router.open_incidents()] == ["withheld"]
    assert clock.router.open_incidents()[0].silenced_until == T0 + 100
    assert kinds(notices) == [SILENCED]
    assert notices[0].service == "redis" and "maintenance" in notices[0].what[0]
    ended = clock.until(T0 + 100)  # expiry by time alone
    assert kinds(ended) == [SILENCE_ENDED, OPENED]  # still open: told once, now
    assert ended[0].incident == notices[0].incident and ended[0].seq == 1
    assert kinds(clock.until(T0 + 101)) == []


def test_silence_does_not_hide_other_services(clock: Clock) -> None:
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0)
    clock.feed(ev(T0 + 1, "prometheus", "crashed", "warning"), ev(T0 + 1.1, "redis", "crashed"))
    assert kinds(clock.until(T0 + 5)) == [SILENCED, OPENED]


SLACK = RenderConfig("bot", {"info": "#info", "warning": "#warn", "critical": "#crit"},
                    "<!here>", (), "unistack on box1 · /srv/unistack")


def slack_text(notice: Notice) -> str:
    """Everything the Slack messages of NOTICE carry, as one string."""
    return json.dumps([message._asdict() for message in render(notice, SLACK)])


@pytest.mark.parametrize("offset", [0.0, 0.15, 0.3], ids=["first", "between", "last"])
def test_a_silenced_service_never_appears_in_another_services_message(
    clock: Clock, offset: float
) -> None:
    clock.router.silence("prometheus", T0 + 1000, "upgrade", T0)
    assert kinds(clock.until(T0)) == [SILENCED]
    burst = [ev(T0 + 1.1, "redis", "crashed", incident="/var/log/incidents/redis-1.txt"),
             ev(T0 + 1.2, "ml_engine", "crashed"),
             ev(T0 + 1 + offset, "prometheus", "crashed", "warning",
                incident="/var/log/incidents/prometheus-1.txt")]
    clock.feed(*sorted(burst, key=lambda event: event["ts"]))  # all inside one window
    [opened] = clock.until(T0 + 5)
    assert (opened.kind, opened.service, opened.severity) == (OPENED, "redis", "critical")
    assert opened.title == "2 services down: redis, ml_engine"
    assert opened.members == ()
    assert [line.split(" ", 2)[1] for line in opened.what] == ["redis", "ml_engine"]
    assert opened.incident_file == "/var/log/incidents/redis-1.txt"
    assert "prometheus" not in repr(opened)  # nor in its id, done, next step
    assert "prometheus" not in slack_text(opened)
    views = {view.service: view for view in clock.router.open_incidents()}
    assert views["redis"].failing == ("redis", "ml_engine")
    assert (views["prometheus"].failing, views["prometheus"].stage) == (
        ("prometheus",), "withheld")
    clock.feed(ev(T0 + 10, "redis", "recovered", "info"),
               ev(T0 + 10, "ml_engine", "recovered", "info"))
    [resolved] = clock.until(T0 + 999)
    assert (resolved.kind, resolved.incident) == (RESOLVED, opened.incident)
    assert "prometheus" not in slack_text(resolved)
    told = clock.until(T0 + 1000)  # the silence ends: its own incident, on its own
    assert kinds(told) == [SILENCE_ENDED, OPENED]
    assert (told[1].service, told[1].title) == ("prometheus", "prometheus crashed")
    assert "redis" not in repr(told[1]) and "ml_engine" not in repr(told[1])


def test_a_silence_set_inside_the_window_keeps_the_service_out_of_the_grouped_message(
        clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "prometheus", "crashed", "warning"))
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0 + 0.2)
    told = clock.until(T0 + 5)
    assert kinds(told) == [SILENCED, OPENED]
    assert told[1].title == "redis crashed"
    assert "prometheus" not in slack_text(told[1])
    views = {view.service: view for view in clock.router.open_incidents()}
    assert (views["prometheus"].failing, views["prometheus"].stage) == (
        ("prometheus",), "withheld")
    clock.feed(ev(T0 + 10, "redis", "recovered", "info"))
    [resolved] = clock.until(T0 + 99)
    assert resolved.kind == RESOLVED and "prometheus" not in slack_text(resolved)
    told = clock.until(T0 + 100)  # the silence ends with prometheus still down
    assert kinds(told) == [SILENCE_ENDED, OPENED]
    assert told[1].title == "prometheus crashed"
    assert [line.split(" ", 2)[1] for line in told[1].what] == ["prometheus"]


def test_a_service_silenced_inside_the_window_and_recovered_is_never_told(
        clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "prometheus", "crashed", "warning"),
               ev(T0 + 0.3, "prometheus", "recovered", "info"))
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0 + 0.35)
    clock.feed(ev(T0 + 10, "redis", "recovered", "info"))
    clock.until(T0 + 200)
    assert kinds(clock.sent) == [SILENCED, OPENED, RESOLVED, SILENCE_ENDED]
    assert clock.router.open_incidents() == []


def test_announced_incident_gets_one_reminder_when_its_silence_is_lifted(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.router.silence("redis", T0 + 1000, "looking into it", T0 + 2)
    clock.feed(ev(T0 + 3, "redis", "looping"))
    assert kinds(clock.until(T0 + 500)) == [SILENCED]  # no update, no reminders
    clock.router.unsilence("redis", T0 + 501)
    notices = clock.until(T0 + 502)
    assert kinds(notices) == [SILENCE_ENDED, REMINDER]
    assert clock.router.silences() == []


def test_silence_must_end_in_the_future(clock: Clock) -> None:
    with pytest.raises(ValueError, match="future"):
        clock.router.silence("redis", T0, "x", T0)


def test_snapshot_restore_mid_incident_gives_the_same_future(clock: Clock) -> None:
    clock.router.silence("prometheus", T0 + 50, "upgrade", T0)
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "ml_engine", "hung", "info",
                                              cause="redis"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "looping"))
    copy = Clock(Router.restore(CONFIG, json.loads(json.dumps(clock.router.snapshot()))))
    rest = [ev(T0 + 3, "redis", "recovered"), ev(T0 + 3.1, "redis", "crashed"),
            ev(T0 + 70, "prometheus", "failed", "warning"), ev(T0 + 90, "redis", "recovered"),
            ev(T0 + 91, "ml_engine", "recovered")]
    for c in (clock, copy):
        c.sent.clear()
        c.feed(*rest)
        c.until(T0 + 300)
    assert copy.sent == clock.sent and len(clock.sent) >= 4
    assert copy.router.open_incidents() == clock.router.open_incidents()


def test_a_restored_router_remembers_recent_failures(clock: Clock) -> None:
    for i in range(2):
        clock.feed(ev(T0 + 10 * i, "redis", "crashed"),
                   ev(T0 + 10 * i + 1, "redis", "recovered", "info"))
    clock.until(T0 + 15)
    snapshot = json.loads(json.dumps(clock.router.snapshot()))
    copy = Clock(Router.restore(CONFIG, snapshot))
    copy.feed(ev(T0 + 20, "redis", "crashed"))
    [opened] = copy.until(T0 + 21)
    assert opened.title == "redis crashed, flapping"
    # A snapshot written before failures were counted restores without them.
    del snapshot["failures"]
    older = Clock(Router.restore(CONFIG, snapshot))
    older.feed(ev(T0 + 20, "redis", "crashed"))
    assert [n.title for n in older.until(T0 + 21)] == ["redis crashed"]


def test_duplicate_event_is_ignored_also_after_restore(clock: Clock) -> None:
    crash = ev(T0, "redis", "crashed")
    clock.feed(crash, dict(crash))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "recovered"))
    restored = Router.restore(CONFIG, json.loads(json.dumps(clock.router.snapshot())))
    restored.handle(dict(crash), T0 + 2.5)  # replayed from Redis by a new hub
    assert kinds(restored.due(T0 + 100)) == [RESOLVED]


def test_a_new_hubs_adopted_event_closes_the_old_hubs_incident(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 30, "redis", "adopted", "info"))
    assert kinds(clock.until(T0 + 40)) == [RESOLVED]


def test_info_only_kinds_send_nothing(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "ready", "info"), ev(T0 + 1, "hub", "started", "info"),
               ev(T0 + 3, "ml_engine", "model_loaded", "info"),
               ev(T0 + 4, "ml_engine", "restarted_with", "info", cause="redis"))
    assert clock.until(T0 + 10_000) == [] and clock.router.next_wakeup(T0) is None


def test_every_event_kind_is_classified() -> None:
    known = (set(incident.OPENING) | incident.RESOLVING | incident.NOTING | incident.INFO_ONLY
             | incident.ANNOUNCING)
    assert set(Kind) <= known
    assert not known - set(Kind)  # no kind the event record does not name


def test_no_event_kind_is_spelt_as_a_string_outside_the_record() -> None:
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name != "event.py")
    spelt = re.findall(r'(?:Action\(EVENT, |_restart\(|_open\(|emit\([^,()]+, |_emit\(|'
                       r'alert_event\()"(\w+)"', source)
    assert spelt == []


def test_resources_have_a_fingerprint_per_resource(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "resource", "warning", "CPU 97% of one core: above 90%"),
               ev(T0 + 0.1, "redis", "resource", "warning",
                  "memory 91.0% of the machine: above 90%"))
    [opened] = clock.until(T0 + 1)
    assert opened.title.startswith("2 incidents: redis: CPU 97%")
    clock.feed(ev(T0 + 5, "redis", "resource_ok", "info", "CPU 40% of one core: back to normal"))
    assert clock.until(T0 + 10) == []  # memory is still high
    clock.feed(ev(T0 + 6, "redis", "resource_ok", "info",
                  "memory 50.0% of the machine: back to normal"))
    assert kinds(clock.until(T0 + 10)) == [RESOLVED]


def test_disk_fingerprint_names_the_directory() -> None:
    event = ev(T0, "hub", "resource", "warning",
               "free disk 4.0% (100 MiB) under /srv/var/data: below 10%")
    assert incident.fingerprint(event) == "resource:hub:disk:/srv/var/data"


def test_prometheus_alerts_use_their_fingerprint(clock: Clock) -> None:
    fp = "rule:RedisMemoryHigh:instance=a,service=redis"
    clock.feed(ev(T0, "redis", "alert_firing", "warning", "Redis memory high", fingerprint=fp),
               ev(T0 + 0.01, "stack", "alert_firing", "critical", "Disk low",
                  fingerprint="rule:DiskLow:"))
    [opened] = clock.until(T0 + 1)
    assert opened.severity == "critical"
    assert opened.title == "2 incidents: RedisMemoryHigh: Redis memory high; DiskLow: Disk low"
    clock.feed(ev(T0 + 2, "redis", "alert_resolved", "info", fingerprint=fp),
               ev(T0 + 2, "stack", "alert_resolved", "info", fingerprint="rule:DiskLow:"))
    assert kinds(clock.until(T0 + 10)) == [RESOLVED]


def test_startup_complete_is_one_info_notice(clock: Clock) -> None:
    clock.feed(ev(T0, "stack", "startup_complete", "info", "4 services ready"))
    [notice] = clock.until(T0 + 1)
    assert (notice.kind, notice.severity, notice.resolved) == (OPENED, "info", True)


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)})
    config = RouterConfig.from_settings(settings)
    assert config.group_window == 0.5 and config.resolved_notice
    assert config.reminders == settings.alert_reminders
    assert "redis" in config.critical and "prometheus" not in config.critical


def test_an_alerts_next_step_and_a_rise_in_severity(clock: Clock) -> None:
    fp = "rule:MLLatencyHigh:service=ml_engine"
    clock.feed(ev(T0, "ml_engine", "alert_firing", "warning", "p99 1.2 s", fingerprint=fp,
                  next_step="check the engine's batch size"))
    [opened] = clock.until(T0 + 1)
    assert opened.next_step == ("check the engine's batch size; run "
                                "scripts/diagnose_container.sh")
    clock.feed(ev(T0 + 2, "ml_engine", "alert_firing", "critical", "p99 3 s", fingerprint=fp))
    [update] = clock.until(T0 + 5)
    assert (update.kind, update.severity) == (UPDATED, "critical")
    assert update.title.endswith("ml_engine now critical")


def test_prometheus_unreadable_is_one_incident_until_it_answers(clock: Clock) -> None:
    source = {"fingerprint": "alert_source:prometheus"}
    clock.feed(ev(T0, "prometheus", "alert_source_down", "warning", "connection refused",
                  **source),
               ev(T0 + 20, "prometheus", "alert_source_up", "info", "answers", **source))
    assert kinds(clock.until(T0 + 30)) == [OPENED, RESOLVED]
    assert clock.sent[0].title == "Prometheus alerts unreadable: connection refused"


def test_restore_refuses_an_unknown_snapshot() -> None:
    with pytest.raises(ValueError, match="version"):
        Router.restore(CONFIG, {"version": 99})


def test_a_prometheus_rule_repeating_the_hubs_resource_warning_sends_nothing(
    clock: Clock
) -> None:
    clock.feed(ev(T0, "stack", "resource", "warning", "free disk 8.0% (900 MiB) under /v: "
                  "below 10%"))
    [opened] = clock.until(T0 + 1)
    rule = "rule:UnistackDiskFreeLow:path=/v,service=stack"
    clock.feed(ev(T0 + 10, "stack", "alert_firing", "warning", "free disk on /v is 8%",
                  fingerprint=rule))
    assert clock.until(T0 + 15) == []  # the same full disk: no second message
    clock.feed(ev(T0 + 20, "stack", "resource_ok", "info", "free disk 30.0% (3 GiB) under "
                  "/v: back to normal"))
    assert clock.until(T0 + 25) == []  # the rule still fires: not over yet
    clock.feed(ev(T0 + 30, "stack", "alert_resolved", "warning", "free disk on /v is 30%",
                  fingerprint=rule))
    [resolved] = clock.until(T0 + 40)
    assert (resolved.kind, resolved.incident) == (RESOLVED, opened.incident)


def test_an_operators_action_is_one_message_even_for_a_silenced_service(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 3600, "maintenance", T0)
    clock.until(T0)  # the silence's own announcement
    clock.feed(ev(T0 + 1, "redis", "audit", "info",
                  "restart of redis by dashboard from 10.0.0.7: done",
                  actor="dashboard from 10.0.0.7"))
    [told] = clock.until(T0 + 2)
    assert (told.kind, told.severity, told.service) == (OPENED, "info", "redis")
    assert "restart of redis by dashboard from 10.0.0.7: done" in told.title
    assert clock.until(T0 + 3000) == []  # nothing to resolve, no reminder


def test_a_quiet_audit_sends_nothing_its_action_speaks_for_itself(clock: Clock) -> None:
    clock.feed(ev(T0, "stack", "audit", "info", "test alert by cli (ops): done", quiet=True))
    assert clock.until(T0 + 10_000) == []


# --- quiet silences: a maintenance hold announces itself, once for all its services --------


def test_a_quiet_silence_is_not_announced_nor_is_its_expiry(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    assert clock.router.next_wakeup(T0) == T0 + 100  # nothing queued to send now
    assert clock.until(T0 + 99) == []
    assert [s.service for s in clock.router.silences()] == ["redis"]
    assert clock.until(T0 + 200) == []
    assert clock.router.silences() == []


def test_lifting_a_quiet_silence_sends_nothing(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    assert clock.router.unsilence("redis", T0 + 10) is True
    assert clock.until(T0 + 200) == []
    assert clock.router.silences() == []


def test_a_quiet_silence_withholds_incidents_and_tells_one_still_open_when_it_ends(
    clock: Clock
) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    clock.feed(ev(T0 + 1, "redis", "crashed"))
    assert clock.until(T0 + 99) == []
    assert [o.stage for o in clock.router.open_incidents()] == ["withheld"]
    notices = clock.until(T0 + 100)
    assert kinds(notices) == [OPENED]  # the incident, no SILENCE_ENDED
    assert notices[0].service == "redis"


def test_an_incident_over_before_a_quiet_silence_ends_is_never_told(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    clock.feed(ev(T0 + 1, "redis", "crashed"), ev(T0 + 5, "redis", "recovered", "info"))
    assert clock.until(T0 + 1000) == []
    assert clock.router.open_incidents() == []


def test_a_normal_silence_is_still_announced_and_so_is_its_end(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0)
    assert [(n.kind, n.service) for n in clock.until(T0 + 1)] == [(SILENCED, "prometheus")]
    assert [(n.kind, n.service) for n in clock.until(T0 + 100)] == [
        (SILENCE_ENDED, "prometheus")]


def test_a_silence_set_normally_over_a_quiet_one_is_announced_and_ends_aloud(
    clock: Clock
) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    clock.router.silence("redis", T0 + 500, "looking into it", T0 + 10)
    assert kinds(clock.until(T0 + 11)) == [SILENCED]
    assert kinds(clock.until(T0 + 500)) == [SILENCE_ENDED]


def test_a_quiet_silence_stays_quiet_across_a_snapshot(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0, quiet=True)
    copy = Clock(Router.restore(CONFIG, json.loads(json.dumps(clock.router.snapshot()))))
    assert [s.quiet for s in copy.router.silences()] == [True]
    assert copy.until(T0 + 200) == []


def test_an_operators_silence_outlives_a_shorter_maintenance_hold(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 86_400, "noisy, looking into it", T0)
    clock.until(T0 + 1)
    clock.router.silence("redis", T0 + 100, "maintenance: restore", T0 + 2, quiet=True)
    assert clock.until(T0 + 1000) == []
    assert [s.until for s in clock.router.silences()] == [T0 + 86_400]
