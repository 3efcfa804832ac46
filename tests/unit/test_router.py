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


def test_a_snapshot_with_the_old_resolution_hold_restores(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    snapshot = json.loads(json.dumps(clock.router.snapshot()))
    snapshot["incidents"][0]["hold"] = 8.0  # written before the hold became the window
    copy = Clock(Router.restore(CONFIG, snapshot))
    copy.feed(ev(T0 + 5, "redis", "recovered", "info"))
    [resolved] = copy.until(T0 + 10)
    assert resolved.kind == RESOLVED and resolved.ts == T0 + 5 + WINDOW


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


def test_a_repeating_rule_that_fires_again_stays_folded_into_the_hubs_warning(
        clock: Clock) -> None:
    clock.feed(ev(T0, "stack", "resource", "warning", "free disk 8.0% (900 MiB) under /v: "
                  "below 10%"))
    clock.until(T0 + 1)
    rule = "rule:UnistackDiskFreeLow:path=/v,service=stack"
    clock.feed(ev(T0 + 10, "stack", "alert_firing", "warning", "free disk on /v is 8%",
                  fingerprint=rule),
               ev(T0 + 20, "stack", "alert_resolved", "warning", "free disk on /v is 11%",
                  fingerprint=rule),
               ev(T0 + 30, "stack", "alert_firing", "warning", "free disk on /v is 7%",
                  fingerprint=rule))
    assert clock.until(T0 + 40) == []  # the rule flapping is no news: the disk still is
    [view] = clock.router.open_incidents()
    assert view.members == () and view.title.startswith("stack: free disk 8.0%")


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


# --- exact texts, ids and times of what an operator reads ---------------------------------


def test_incident_ids_and_times_of_opened_updated_and_recovered_notices(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    [opened] = clock.until(T0 + 1)
    assert (opened.incident, opened.since, opened.ts) == (
        "service:redis@1700000000.000", T0, T0 + WINDOW)
    clock.feed(ev(T0 + 2, "redis", "looping"))
    assert clock.router.next_wakeup(T0 + 2) == T0 + 2 + WINDOW  # the update, before reminders
    [update] = clock.until(T0 + 10)
    assert (update.kind, update.ts) == (UPDATED, T0 + 2 + WINDOW)
    assert [view.silenced_until for view in clock.router.open_incidents()] == [0.0]
    other = Clock(Router(CONFIG))
    other.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.3, "redis", "recovered", "info"))
    [recovered] = other.until(T0 + 10)
    assert (recovered.title, recovered.ts) == ("redis crashed, recovered", T0 + WINDOW)


def test_an_update_names_every_reason_in_order(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "ml_engine", "crashed", "info", cause="redis"),
               ev(T0 + 2.1, "dashboard", "unhealthy", "info", cause="redis"))
    [update] = clock.until(T0 + 10)
    assert update.title == "redis crashed: ml_engine affected too; dashboard affected too"


def test_reminder_titles_say_how_often_it_relapsed() -> None:
    clock = Clock(Router(CONFIG._replace(flap_failures=1000)))
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 5, "redis", "recovered", "info"),
               ev(T0 + 5.2, "redis", "crashed"), ev(T0 + 6, "redis", "recovered", "info"),
               ev(T0 + 6.2, "redis", "crashed"))
    reminders = [n for n in clock.until(T0 + 61) if n.kind == REMINDER]
    assert [(n.title, n.ts) for n in reminders] == [
        ("redis crashed: still unresolved (relapsed 2 times)", T0 + 60)]


def test_a_reminder_without_relapses_names_the_latest_detail(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "degraded", "warning", "no GPU"))
    [opened] = clock.until(T0 + 1)
    assert opened.title == "redis cannot serve: no GPU"
    clock.feed(ev(T0 + 2, "redis", "degraded", "warning", "disk full"))
    [reminder] = clock.until(T0 + 61)
    assert (reminder.kind, reminder.title) == (
        REMINDER, "redis cannot serve: disk full: still unresolved")


def test_silence_notices_name_the_service_the_end_and_how_it_ended() -> None:
    router = Router(CONFIG)
    router.silence("redis", T0 + 100, "maintenance", T0)
    assert router.next_wakeup(T0) == T0  # queued: send it now
    [silenced] = router.due(T0 + 1)
    assert (silenced.kind, silenced.title, silenced.ts, silenced.what) == (
        SILENCED, "redis silenced until 2023-11-14 22:15 UTC: maintenance", T0,
        ("reason: maintenance",))
    assert (silenced.incident, silenced.severity) == (
        "silence:redis@1700000000.000", "warning")
    [ended] = router.due(T0 + 100)
    assert (ended.kind, ended.title, ended.ts, ended.seq) == (
        SILENCE_ENDED, "redis silence expired", T0 + 100, 1)
    router.silence("prometheus", T0 + 300, "upgrade", T0 + 200)
    router.due(T0 + 200)
    assert router.unsilence("prometheus", T0 + 250) is True
    assert router.unsilence("prometheus", T0 + 251) is False
    [lifted] = router.due(T0 + 260)
    assert (lifted.title, lifted.ts) == ("prometheus silence lifted", T0 + 250)


def test_a_queued_notice_is_not_lost_when_a_silence_ends_in_the_same_call() -> None:
    router = Router(CONFIG)
    router.silence("prometheus", T0 + 10, "upgrade", T0)
    router.silence("hub", T0 + 100, "debugging", T0)
    router.due(T0)
    router.silence("redis", T0 + 100, "maintenance", T0 + 5)  # queued, not yet sent
    assert [(n.kind, n.service) for n in router.due(T0 + 10)] == [
        (SILENCED, "redis"), (SILENCE_ENDED, "prometheus")]
    router.silence("gpu", T0 + 100, "driver", T0 + 20)  # queued
    router.unsilence("hub", T0 + 21)  # queued after it
    assert [(n.kind, n.service) for n in router.due(T0 + 22)] == [
        (SILENCED, "gpu"), (SILENCE_ENDED, "hub")]


def test_next_wakeup_is_the_earliest_of_silences_and_incidents(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    assert clock.router.next_wakeup(T0 + 1) == T0 + 60  # the first reminder
    clock.router.silence("prometheus", T0 + 10, "upgrade", T0 + 2, quiet=True)
    assert clock.router.next_wakeup(T0 + 2) == T0 + 10


def test_announcements_carry_their_own_id_times_and_line() -> None:
    router = Router(CONFIG)
    complete = ev(T0, "stack", "startup_complete", "info", "4 services ready")
    router.handle(complete, T0 + 0.25)
    audit = ev(T0 + 1, "redis", "audit", "info", "restart of redis by cli: done")
    router.handle(audit, T0 + 1.25)
    first, second = router.due(T0 + 2)
    assert first == Notice(
        "startup:stack@1700000000.000", OPENED, "info", "stack",
        "stack: 4 services ready", T0, T0 + 0.25, what=(incident.line(complete),),
        resolved=True)
    assert (second.incident, second.title, second.since, second.ts, second.what) == (
        "audit:redis@1700000001.000", "redis: restart of redis by cli: done", T0 + 1,
        T0 + 1.25, (incident.line(audit),))


def test_a_silenced_services_startup_is_not_announced_until_the_silence_ends() -> None:
    router = Router(CONFIG)
    router.silence("stack", T0 + 10, "maintenance", T0)
    router.due(T0)
    router.handle(ev(T0 + 5, "stack", "startup_complete", "info", "4 services ready"), T0 + 5)
    assert router.due(T0 + 6) == []
    # At the very end of the silence it is over: told.
    router.handle(ev(T0 + 10, "stack", "startup_complete", "info", "4 services up"), T0 + 10)
    assert [(n.kind, n.title) for n in router.due(T0 + 10)] == [
        (OPENED, "stack: 4 services up"), (SILENCE_ENDED, "stack silence expired")]


def test_a_completed_startup_resolves_a_failed_one_without_a_second_message(
        clock: Clock) -> None:
    clock.feed(ev(T0, "stack", "startup_failed", "critical", "redis not ready"))
    [opened] = clock.until(T0 + 1)
    assert opened.title == "startup failed: redis not ready"
    clock.feed(ev(T0 + 5, "stack", "startup_complete", "info", "4 services ready"))
    assert kinds(clock.until(T0 + 10)) == [RESOLVED]


def test_a_dependent_with_no_incident_to_join_gets_its_services_severity(
        clock: Clock) -> None:
    clock.feed(ev(T0, "dashboard", "unhealthy", "info", cause="redis"))
    [opened] = clock.until(T0 + 1)
    assert (opened.service, opened.severity) == ("dashboard", "warning")
    clock.feed(ev(T0 + 10, "stack", "alert_firing", "info", "a note", fingerprint="rule:N:"))
    [note] = clock.until(T0 + 11)
    assert note.severity == "info"  # an info alert with no cause stays info


def test_a_failure_at_the_very_end_of_the_window_opens_its_own_incident() -> None:
    router = Router(CONFIG)
    router.handle(ev(T0, "redis", "crashed"), T0)
    router.handle(ev(T0 + WINDOW, "prometheus", "crashed", "warning"), T0 + WINDOW)
    assert [n.title for n in router.due(T0 + WINDOW)] == ["redis crashed"]
    assert [n.title for n in router.due(T0 + 2 * WINDOW)] == ["prometheus crashed"]


# --- members, echoes and notes ---------------------------------------------------------


def test_snapshot_records_roots_members_and_their_lines(clock: Clock) -> None:
    events = [ev(T0, "redis", "crashed"),
              ev(T0 + 0.1, "ml_engine", "hung", "info", cause="redis",
                 incident="/var/log/incidents/ml_engine-1.txt"),
              ev(T0 + 0.2, "dashboard", "unhealthy", "info", cause="redis")]
    for event in events:
        clock.router.handle(event, event["ts"])
    [data] = clock.router.snapshot()["incidents"]
    assert data["parts"] == {
        "service:redis": {"fingerprint": "service:redis", "service": "redis",
                          "kind": "crashed", "severity": "critical", "detail": "redis crashed",
                          "root": True, "open": True, "incident_file": "", "next_step": "",
                          "echo": False},
        "service:ml_engine": {"fingerprint": "service:ml_engine", "service": "ml_engine",
                              "kind": "hung", "severity": "info", "detail": "ml_engine hung",
                              "root": False, "open": True,
                              "incident_file": "/var/log/incidents/ml_engine-1.txt",
                              "next_step": "", "echo": False},
        "service:dashboard": {"fingerprint": "service:dashboard", "service": "dashboard",
                              "kind": "unhealthy", "severity": "info",
                              "detail": "dashboard unhealthy", "root": False, "open": True,
                              "incident_file": "", "next_step": "", "echo": False}}
    assert data["lines"] == [incident.line(event) for event in events]
    clock.router.handle(ev(T0 + 0.3, "redis", "recovered", "info"), T0 + 0.3)
    [data] = clock.router.snapshot()["incidents"]
    assert data["parts"]["service:redis"]["open"] is False


def test_a_repeated_prometheus_alert_is_recorded_as_an_info_echo(clock: Clock) -> None:
    clock.feed(ev(T0, "stack", "resource", "warning", "free disk 8.0% (900 MiB) under /v: "
                  "below 10%"))
    clock.until(T0 + 1)
    rule = "rule:UnistackDiskFreeLow:path=/v,service=stack"
    firing = ev(T0 + 10, "stack", "alert_firing", "warning", "free disk on /v is 8%",
                fingerprint=rule)
    clock.feed(firing)
    [data] = clock.router.snapshot()["incidents"]
    assert data["parts"][rule] == {
        "fingerprint": rule, "service": "stack", "kind": "alert_firing", "severity": "info",
        "detail": "free disk on /v is 8%", "root": False, "open": True, "incident_file": "",
        "next_step": "", "echo": True}
    assert data["lines"] == [incident.line(firing)]
    assert clock.router.open_parts("rule:") == [(rule, "stack")]
    [view] = clock.router.open_incidents()
    assert view.title == "stack: free disk 8.0% (900 MiB) under /v: below 10%"


def test_a_member_stays_a_member_until_it_fails_on_its_own(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"),
               ev(T0 + 0.1, "ml_engine", "unhealthy", "info", cause="redis"))
    [opened] = clock.until(T0 + 1)
    assert opened.members == ("ml_engine",)
    # Worse, but still because of redis: folded in without a message.
    clock.feed(ev(T0 + 2, "ml_engine", "crashed", "info", cause="redis"))
    assert clock.until(T0 + 10) == []
    assert [view.members for view in clock.router.open_incidents()] == [("ml_engine",)]
    clock.feed(ev(T0 + 11, "ml_engine", "crashed", "critical"))  # no cause: its own
    [update] = clock.until(T0 + 20)
    assert (update.kind, update.members) == (UPDATED, ())
    assert update.title == "2 services down: redis, ml_engine: ml_engine now failing on its own"


def test_a_silenced_dependent_joining_sends_no_update(clock: Clock) -> None:
    clock.router.silence("ml_engine", T0 + 1000, "rebuilding", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"))
    clock.until(T0 + 2)
    clock.feed(ev(T0 + 3, "ml_engine", "crashed", "info", cause="redis"))
    clock.until(T0 + 50)
    assert kinds(clock.sent) == [SILENCED, OPENED]
    assert [view.members for view in clock.router.open_incidents()] == [("ml_engine",)]


def test_a_silenced_root_escalating_or_flapping_in_a_shared_incident_is_not_told(
        clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "prometheus", "crashed", "warning"))
    clock.until(T0 + 1)
    clock.router.silence("prometheus", T0 + 1000, "upgrade", T0 + 2)
    clock.feed(ev(T0 + 3, "prometheus", "looping", "warning"))
    clock.until(T0 + 4)
    for i in range(2):  # the second and third failures: flapping
        clock.feed(ev(T0 + 4 + i, "prometheus", "recovered", "info"),
                   ev(T0 + 4.1 + i, "prometheus", "crashed", "warning"))
    clock.until(T0 + 50)
    assert kinds(clock.sent) == [OPENED, SILENCED]
    assert [view.title for view in clock.router.open_incidents()] == [
        "2 services down: redis, prometheus, flapping"]


def test_a_note_is_a_line_of_its_causes_incident(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    note = ev(T0 + 2, "ml_engine", "restarted_with", "info", cause="redis")
    recovered = ev(T0 + 5, "redis", "recovered", "info")
    clock.feed(note, ev(T0 + 3, "hub", "started", "info"), recovered)
    [resolved] = clock.until(T0 + 10)
    assert resolved.what == (incident.line(note), incident.line(recovered))


def test_a_relapse_adds_a_line_a_repeat_does_not(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "crashed"))  # the same failure again: nothing new
    back = ev(T0 + 5, "redis", "recovered", "info")
    again = ev(T0 + 5.2, "redis", "crashed")  # the same detail, but it had recovered
    clock.feed(back, again)
    assert [view.failing for view in clock.router.open_incidents()] == [("redis",)]
    assert clock.router.snapshot()["failures"] == [["service:redis", [T0, T0 + 5.2]]]
    last = ev(T0 + 6, "redis", "recovered", "info")
    clock.feed(last)
    [resolved] = clock.until(T0 + 10)
    assert resolved.what == (incident.line(back), incident.line(again), incident.line(last))


def test_the_latest_incident_file_and_next_step_are_kept(clock: Clock) -> None:
    fp = "rule:MLLatencyHigh:service=ml_engine"
    clock.feed(ev(T0, "ml_engine", "alert_firing", "warning", "p99 1.2 s", fingerprint=fp,
                  incident="/i/a.txt", next_step="check batch size"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "ml_engine", "alert_firing", "warning", "p99 1.2 s", fingerprint=fp,
                  incident="/i/b.txt", next_step="check the GPU"),
               ev(T0 + 3, "ml_engine", "alert_firing", "warning", "p99 1.2 s", fingerprint=fp),
               ev(T0 + 5, "ml_engine", "alert_resolved", "info", fingerprint=fp))
    [resolved] = clock.until(T0 + 10)
    assert resolved.incident_file == "/i/b.txt"
    assert resolved.next_step == "read /i/b.txt; check the GPU; run scripts/diagnose_container.sh"


# --- flapping ---------------------------------------------------------------------------


def test_a_flapping_incident_says_so_once_and_sends_no_reminder_while_it_holds(
        clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 1, "redis", "recovered", "info"),
               ev(T0 + 1.2, "redis", "crashed"), ev(T0 + 2, "redis", "recovered", "info"),
               ev(T0 + 2.2, "redis", "crashed"), ev(T0 + 50, "redis", "recovered", "info"))
    clock.until(T0 + 61)  # past the first reminder's time, inside the hold: none
    clock.until(T0 + 100)
    assert kinds(clock.sent) == [OPENED, UPDATED, RESOLVED]
    update = clock.sent[1]
    assert update.title == "redis crashed, flapping: redis flapping"
    assert (f"{incident.clock(T0 + 2.2)} redis flapping: 3 failures within 600 s; resolved "
            "only after 60 s without one") in update.what
    assert clock.sent[2].ts == pytest.approx(T0 + 62.2)


def test_failures_exactly_a_flap_window_apart_do_not_count_together(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 1, "redis", "recovered", "info"),
               ev(T0 + 300, "redis", "crashed"), ev(T0 + 301, "redis", "recovered", "info"))
    clock.until(T0 + 600)
    clock.feed(ev(T0 + 600, "redis", "crashed"))
    assert [n.title for n in clock.until(T0 + 601)] == ["redis crashed"]
    other = Router(CONFIG)
    other.handle(ev(T0, "redis", "crashed"), T0)
    other.due(T0 + 600)  # its failure is a flap window old: forgotten
    assert other.snapshot()["failures"] == []


# --- silences and incidents --------------------------------------------------------------


def test_a_silence_ending_tells_only_its_own_services_incidents(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 10, "looking", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"), ev(T0 + 2, "prometheus", "crashed", "warning"))
    told = clock.until(T0 + 10)
    assert [(n.kind, n.service) for n in told] == [
        (SILENCED, "redis"), (OPENED, "prometheus"), (SILENCE_ENDED, "redis"),
        (OPENED, "redis")]
    assert (told[3].ts, told[3].title) == (T0 + 10, "redis crashed")
    clock.feed(ev(T0 + 20, "redis", "recovered", "info"))
    assert [(n.kind, n.service) for n in clock.until(T0 + 30)] == [(RESOLVED, "redis")]


def test_lifting_a_silence_while_its_incident_is_resolving_tells_nothing(
        clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "looking", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"))
    clock.until(T0 + 5)  # withheld
    clock.feed(ev(T0 + 10, "redis", "recovered", "info"))
    clock.router.unsilence("redis", T0 + 10.1)
    clock.until(T0 + 200)
    assert kinds(clock.sent) == [SILENCED, SILENCE_ENDED]
    assert clock.router.open_incidents() == []


def test_a_withheld_incident_resolving_after_its_silence_ended_is_never_told(
        clock: Clock) -> None:
    clock.router.silence("redis", T0 + 10, "looking", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"), ev(T0 + 9.8, "redis", "recovered", "info"))
    clock.until(T0 + 200)
    assert kinds(clock.sent) == [SILENCED, SILENCE_ENDED]


def test_an_announced_incident_resolving_while_silenced_sends_nothing(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.feed(ev(T0 + 2, "redis", "looping"))
    clock.router.silence("redis", T0 + 1000, "looking", T0 + 2.1)  # before the update
    clock.feed(ev(T0 + 5, "redis", "recovered", "info"))
    clock.until(T0 + 100)
    assert kinds(clock.sent) == [OPENED, SILENCED]
    assert clock.router.open_incidents() == []


def test_one_of_two_silenced_services_ending_tells_their_shared_incident(
        clock: Clock) -> None:
    clock.router.silence("prometheus", T0 + 1000, "upgrade", T0)
    clock.router.silence("redis", T0 + 1000, "looking", T0)
    clock.feed(ev(T0 + 1, "prometheus", "crashed", "warning"), ev(T0 + 1.1, "redis", "crashed"))
    clock.until(T0 + 5)
    assert [view.stage for view in clock.router.open_incidents()] == ["withheld"]
    clock.router.unsilence("redis", T0 + 6)
    assert [(n.kind, n.title) for n in clock.until(T0 + 7)] == [
        (SILENCE_ENDED, "redis silence lifted"), (OPENED, "2 services down: prometheus, redis")]
    assert [view.stage for view in clock.router.open_incidents()] == ["announced"]


def test_a_silence_lifted_inside_the_window_sends_the_opened_once(clock: Clock) -> None:
    clock.router.silence("redis", T0 + 100, "looking", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"))
    clock.router.unsilence("redis", T0 + 1.2)
    assert kinds(clock.until(T0 + 1.2)) == [SILENCED, SILENCE_ENDED]
    [opened] = clock.until(T0 + 2)
    assert (opened.kind, opened.title) == (OPENED, "redis crashed")


def test_a_lifted_silence_tells_the_open_incident_once_with_its_time(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"))
    clock.until(T0 + 1)
    clock.router.silence("redis", T0 + 1000, "looking into it", T0 + 2)
    clock.feed(ev(T0 + 3, "redis", "looping"))
    clock.until(T0 + 500)
    clock.router.unsilence("redis", T0 + 501)
    _ended, reminder = clock.until(T0 + 502)
    assert (reminder.kind, reminder.ts, reminder.title) == (
        REMINDER, T0 + 501, "redis in a restart loop: still unresolved after the silence ended")


def test_a_service_silenced_before_its_failure_keeps_its_own_incident_id(
        clock: Clock) -> None:
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0)
    clock.feed(ev(T0 + 1, "redis", "crashed"), ev(T0 + 1.2, "prometheus", "crashed", "warning"))
    clock.until(T0 + 100)
    told = clock.sent[-1]
    assert (told.kind, told.incident, told.since) == (
        OPENED, "service:prometheus@1700000001.200", T0 + 1.2)


def test_a_service_silenced_inside_the_window_gets_an_incident_of_its_own(
        clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "prometheus", "crashed", "warning"))
    clock.router.silence("prometheus", T0 + 100, "upgrade", T0 + 0.2)
    clock.until(T0 + 5)
    views = {view.service: view for view in clock.router.open_incidents()}
    assert views["prometheus"].id == "service:prometheus@1700000000.000"
    clock.feed(ev(T0 + 10, "prometheus", "recovered", "info"))  # closes the part set apart
    clock.until(T0 + 200)
    assert [k for k in kinds(clock.sent) if k != REMINDER] == [SILENCED, OPENED, SILENCE_ENDED]
    assert [view.service for view in clock.router.open_incidents()] == ["redis"]


# --- persistence and configuration ------------------------------------------------------


def test_queued_notices_survive_a_snapshot(clock: Clock) -> None:
    clock.feed(ev(T0, "redis", "crashed"), ev(T0 + 0.1, "ml_engine", "crashed", "info",
                                              cause="redis"))
    clock.until(T0 + 1)
    clock.router.silence("redis", T0 + 100, "looking", T0 + 2)
    clock.router.handle(ev(T0 + 2, "stack", "audit", "info", "restart: done"), T0 + 2)
    clock.router.unsilence("redis", T0 + 3)  # its end tells the open incident, queued
    copy = Router.restore(CONFIG, json.loads(json.dumps(clock.router.snapshot())))
    expected = clock.router.due(T0 + 4)
    assert [n.kind for n in expected] == [SILENCED, OPENED, SILENCE_ENDED, REMINDER]
    assert expected[3].members == ("ml_engine",)
    assert copy.due(T0 + 4) == expected


def test_restore_names_the_unknown_version() -> None:
    with pytest.raises(ValueError, match="unknown router snapshot version 99"):
        Router.restore(CONFIG, {"version": 99})


def test_config_from_settings_takes_the_flap_guard(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)})
    config = RouterConfig.from_settings(settings)
    assert (config.flap_failures, config.flap_window, config.flap_hold) == (
        settings.flap_restarts, settings.flap_window, 60.0)


def test_the_oldest_event_keys_are_forgotten_past_the_limit() -> None:
    router = Router(CONFIG)
    for i in range(2048):
        router.handle(ev(T0 + i, "hub", "started", "info"), T0 + i)
    seen = router.snapshot()["seen"]
    assert len(seen) == 2048 and seen[0][0] == T0
    router.handle(ev(T0 + 2048, "hub", "started", "info"), T0 + 2048)
    seen = router.snapshot()["seen"]
    assert len(seen) == 2048 and seen[0][0] == T0 + 1
