"""hub.reconcile: the loop against a scripted supervisord whose programs are real children.

Every "program" is a real process in its own session (as supervisord makes them), so a
SIGKILL of its process group can only reach the test's own children.
"""

from __future__ import annotations

import os
import queue
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.waiting import wait_for
from unistack import policy
from unistack.config import load_settings
from unistack.hub.events import Event, EventLog
from unistack.hub.incidents import IncidentRecorder
from unistack.hub.metrics import HubMetrics
from unistack.hub.monitor import Seen, Verdict
from unistack.hub.reconcile import Exited, Reconciler, build_services
from unistack.services import ProbeSpec, ServiceSpec
from unistack.supervisor import ProcessInfo

ROOT = Path(__file__).resolve().parents[2]
DB = ServiceSpec("db", "REDIS_PORT", "infrastructure", critical=True,
                 liveness=ProbeSpec("redis-alive"), readiness=ProbeSpec("redis-ready"))
APP = ServiceSpec("app", "PROMETHEUS_PORT", "applications", critical=False,
                  liveness=ProbeSpec("http", "/health"), readiness=ProbeSpec("http", "/ready"),
                  depends_on=("db",))
HUB = ServiceSpec("hub", "HUB_PORT", "infrastructure", critical=True,
                  liveness=ProbeSpec("http", "/health"), readiness=ProbeSpec("http", "/health"),
                  autostart=True, python=True)
REGISTRY = (APP, DB, HUB)  # not in start order on purpose
SLEEPER = ("sleep", "60")
UP_FOR = 5.0  # seconds a program has been running: past supervisord's startsecs




def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class FakeSupervisor:
    """supervisord, scripted: records start/stop; a started program is a real child."""

    def __init__(self) -> None:
        self.programs: dict[str, ProcessInfo] = {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started: list[tuple[str, float]] = []
        self.stopped: list[str] = []
        self.observed = 0

    def run(self, name: str, up_for: float = UP_FOR,
            argv: tuple[str, ...] = SLEEPER, state: str = "RUNNING") -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, start_new_session=True)
        self.children[f"{name}-{child.pid}"] = child
        self.programs[name] = ProcessInfo(name, state, child.pid, time.time() - up_for,
                                          f"pid {child.pid}")
        return child

    def set(self, name: str, state: str, description: str = "") -> None:
        self.programs[name] = ProcessInfo(name, state, 0, 0.0, description)

    def processes(self) -> dict[str, ProcessInfo]:
        self.observed += 1
        return dict(self.programs)

    def start(self, name: str) -> None:
        self.started.append((name, time.monotonic()))
        self.run(name, up_for=0.0)

    def stop(self, name: str) -> None:
        self.stopped.append(name)
        self.set(name, "STOPPED", "Stopped")

    def close(self) -> None:
        for child in self.children.values():
            child.kill()
            child.wait(5)


@dataclass
class FakeMonitor:
    """Stands in for a Monitor thread: records what the reconciler asked of it."""

    service: str
    calls: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


@dataclass
class Hub:
    reconciler: Reconciler
    supervisor: FakeSupervisor
    events: EventLog
    metrics: HubMetrics
    monitors: dict[str, FakeMonitor]
    incidents: Path

    def post(self, message: Verdict | Exited) -> None:
        self.reconciler.inbox.put(message)

    def ready(self, name: str) -> None:
        self.post(Verdict(name, Seen.READY, "ready", 0.001))
        self.until(lambda: self.state(name) == policy.READY)

    def until(self, condition: Callable[[], object], timeout: float = 3.0) -> None:
        def turned() -> object:
            self.reconciler.round(0.005)
            return condition()

        wait_for(turned, timeout)

    def syncs(self, count: int) -> None:
        """Turn the loop until supervisord was observed COUNT more times."""
        target = self.supervisor.observed + count
        self.until(lambda: self.supervisor.observed >= target)

    def state(self, name: str) -> str:
        return next(s.state for s in self.reconciler.statuses() if s.name == name)

    def kinds(self, service: str | None = None) -> list[str]:
        return [e["kind"] for e in self.events.recent()
                if service is None or e["service"] == service]

    def event(self, service: str, kind: str) -> Event:
        (found,) = [e for e in self.events.recent()
                    if e["service"] == service and e["kind"] == kind]
        return found

    def pid(self, name: str) -> int:
        return next(s.pid for s in self.reconciler.statuses() if s.name == name)

    def started(self) -> list[str]:
        return [name for name, _ in self.supervisor.started]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    supervisors: list[FakeSupervisor] = []

    def build(registry: tuple[ServiceSpec, ...] = REGISTRY, **environ: str) -> Hub:
        settings = load_settings(
            environ={"UNISTACK_HOME": str(tmp_path), "HUB_LOOP_INTERVAL": "0.05",
                     "RESTART_BACKOFF_INITIAL": "0.05", **environ},
            root=ROOT)
        monitors: dict[str, FakeMonitor] = {}

        def make_monitor(spec: ServiceSpec, pid: Callable[[], int]) -> Any:
            if spec.autostart:
                return None
            monitors[spec.name] = FakeMonitor(spec.name)
            return monitors[spec.name]

        services = build_services(settings, registry, make_monitor)
        incidents = tmp_path / "incidents"
        incidents.mkdir(exist_ok=True)
        (tmp_path / "log").mkdir(exist_ok=True)
        supervisor = FakeSupervisor()
        supervisors.append(supervisor)
        events, metrics = EventLog(), HubMetrics()
        reconciler = Reconciler(
            settings, supervisor, services,
            events=events, metrics=metrics,
            incidents=IncidentRecorder(incidents, tmp_path / "log", 10, settings.redact),
            inbox=queue.SimpleQueue())
        return Hub(reconciler, supervisor, events, metrics, monitors, incidents)

    yield build
    for supervisor in supervisors:
        supervisor.close()


def test_services_are_tracked_in_start_order_and_the_hub_is_ready(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    statuses = hub.reconciler.statuses()
    assert [s.name for s in statuses] == ["db", "app", "hub"]
    assert [s.state for s in statuses] == [policy.STOPPED, policy.STOPPED, policy.READY]
    assert statuses[2].pid == os.getpid()
    assert set(hub.monitors) == {"db", "app"}


# --- starting in dependency order ---------------------------------------------------------


def test_first_sync_starts_services_without_dependencies_then_dependents_once_ready(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    hub.supervisor.set("db", "STOPPED", "Not started")
    hub.supervisor.set("app", "STOPPED", "Not started")
    hub.reconciler.round()
    assert hub.started() == ["db"]
    app = next(s for s in hub.reconciler.statuses() if s.name == "app")
    assert app.detail == "waiting for db to be ready"
    hub.until(lambda: hub.monitors["db"].calls == ["resume"])  # its pid was observed
    assert hub.pid("db") == hub.supervisor.programs["db"].pid
    assert hub.state("db") == policy.STARTING  # STOPPED -> STARTING
    hub.syncs(3)
    assert hub.started() == ["db"]  # db runs but is not ready: app waits
    hub.ready("db")
    hub.until(lambda: "app" in hub.started())
    assert hub.started() == ["db", "app"]
    hub.until(lambda: hub.monitors["app"].calls == ["resume"])
    assert hub.state("app") == policy.STARTING
    assert [(e["service"], e["kind"]) for e in hub.events.recent()] == [("db", "ready")]


# --- adoption -------------------------------------------------------------------------


@pytest.mark.parametrize("up_for", [
    UP_FOR,
    3600.0,
])
def test_running_programs_are_adopted_not_restarted(
    make_hub: Callable[..., Hub], up_for: float
) -> None:
    hub = make_hub()
    db = hub.supervisor.run("db", up_for=up_for)
    app = hub.supervisor.run("app", up_for=up_for)
    hub.reconciler.round()
    assert hub.monitors["db"].calls == ["resume"]
    assert hub.monitors["app"].calls == ["resume"]
    assert (hub.pid("db"), hub.pid("app")) == (db.pid, app.pid)
    assert hub.state("db") == policy.STARTING
    hub.syncs(2)
    hub.ready("db")
    hub.ready("app")
    hub.syncs(2)
    assert hub.supervisor.started == []
    assert hub.supervisor.stopped == []
    assert db.poll() is None
    assert app.poll() is None
    assert [(e["service"], e["kind"]) for e in hub.events.recent()] == [
        ("db", "adopted"), ("app", "adopted")]
    assert list(hub.incidents.iterdir()) == []
    assert all(s.restarts == 0 and s.incident == "" for s in hub.reconciler.statuses())
    assert b'unistack_service_ready{service="db"} 1.0' in hub.metrics.render()


# --- exits ----------------------------------------------------------------------------


def running_and_ready(hub: Hub, *names: str) -> dict[str, subprocess.Popen[bytes]]:
    children = {name: hub.supervisor.run(name) for name in names}
    hub.reconciler.round()
    for name in names:
        hub.ready(name)
    return children


def test_an_exit_of_the_tracked_running_pid_is_a_crash(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: "crashed" in hub.kinds("db"))
    crashed = hub.event("db", "crashed")
    assert crashed["severity"] == "critical"
    assert str(db.pid) in crashed["detail"]
    assert "cause" not in crashed
    assert hub.state("db") == policy.RESTARTING  # READY -> RESTARTING
    assert hub.monitors["db"].calls[-1] == "pause"
    db_status = next(s for s in hub.reconciler.statuses() if s.name == "db")
    assert (db_status.incident, db_status.restarts) == ("crashed", 1)
    assert hub.supervisor.started == []  # supervisord respawns it, not the hub


def test_an_exit_while_supervisord_is_still_starting_it_is_not_a_crash(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = hub.supervisor.run("db", up_for=0.0, state="STARTING")
    hub.reconciler.round()
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.syncs(2)
    assert "crashed" not in hub.kinds()
    assert hub.monitors["db"].calls == ["resume", "pause"]


def test_an_exit_the_hub_expected_is_not_a_crash(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    hub.reconciler.expect_exit("db")
    assert hub.monitors["db"].calls[-1] == "pause"  # a stopping process fails its probes
    # Not ready while it stops on request: its dependents wait instead of being judged
    # hung (a Redis saving 2M keys on SIGTERM answers nothing for seconds).
    assert hub.state("db") == policy.RESTARTING
    assert hub.reconciler.waiting_for("app") == "db"
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.syncs(2)
    assert hub.kinds() == ["adopted"]  # no crash, no incident
    assert hub.state("db") == policy.RESTARTING  # until a new process passes its probe


def test_a_stop_that_did_not_happen_is_probed_again(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    hub.reconciler.expect_exit("db")
    hub.reconciler.exit_not_expected("db")  # supervisord refused the stop
    assert hub.monitors["db"].calls[-2:] == ["pause", "resume"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.syncs(2)
    assert "crashed" in hub.kinds()  # its exit is a crash again


def test_an_exit_of_another_pid_is_ignored(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    running_and_ready(hub, "db")
    hub.post(Exited("db", 999_999_999))
    hub.syncs(2)
    assert hub.kinds() == ["adopted"]
    assert hub.state("db") == policy.READY


def test_one_crash_of_a_long_running_service_is_one_restart(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(SERVICE_READY_TIMEOUT="0.5")
    hub.supervisor.set("db", "STOPPED", "Not started")
    hub.reconciler.round()
    hub.until(lambda: hub.monitors["db"].calls == ["resume"])
    hub.ready("db")
    spawned = hub.supervisor.programs["db"].since
    hub.until(lambda: time.time() - spawned > 1.2)  # up past startsecs and the ready timeout
    (child,) = hub.supervisor.children.values()
    child.kill()
    child.wait(5)
    hub.post(Exited("db", child.pid))
    hub.reconciler.round()
    assert hub.kinds() == ["ready", "crashed"]
    status = next(s for s in hub.reconciler.statuses() if s.name == "db")
    assert status.restarts == 1
    assert list(hub.incidents.iterdir()) == []


# --- hung -------------------------------------------------------------------------------


def test_hung_writes_an_incident_and_kills_the_process_group(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = hub.supervisor.run("db", argv=("sh", "-c", "sleep 60 & wait"))
    wait_for(lambda: psutil.Process(db.pid).children())
    (grandchild,) = psutil.Process(db.pid).children()
    hub.reconciler.round()
    hub.ready("db")
    detail = "liveness failed 2 times in a row (timed out); process state sleeping"
    hub.post(Verdict("db", Seen.HUNG, detail, 0.4, onset=1_700_000_000.5))
    hub.until(lambda: "hung" in hub.kinds("db"))
    (incident,) = hub.incidents.iterdir()
    text = incident.read_text()
    assert f"verdict: {detail}" in text
    assert f"pid: {db.pid}" in text
    hung = hub.event("db", "hung")
    assert hung["severity"] == "critical"
    assert hung["incident"] == str(incident)
    assert hung["onset"] == 1_700_000_000.5  # for the alert router's window
    wait_for(lambda: db.poll() is not None)
    assert db.returncode == -9
    wait_for(lambda: gone(grandchild.pid))  # the whole group, not just the leader
    assert hub.monitors["db"].calls[-1] == "pause"
    assert hub.state("db") == policy.RESTARTING
    hub.post(Exited("db", db.pid))  # the exit of its own kill is not a crash
    hub.syncs(2)
    assert hub.kinds() == ["adopted", "hung"]
    status = next(s for s in hub.reconciler.statuses() if s.name == "db")
    assert status.last_incident == str(incident)


# --- FATAL: the hub takes over -------------------------------------------------------------


def test_fatal_is_failed_then_started_after_the_backoff(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(INCIDENT_RESOLVE_AFTER="0.2")
    hub.supervisor.set("db", "FATAL", "Exited too quickly (process log may have details)")
    hub.supervisor.set("app", "STOPPED", "Not started")
    first_round = time.monotonic()
    hub.reconciler.round()
    assert hub.kinds() == ["failed"]
    failed = hub.event("db", "failed")
    assert failed["severity"] == "critical"
    assert "Exited too quickly" in failed["detail"]
    assert hub.state("db") == policy.FAILED
    assert hub.supervisor.started == []
    hub.until(lambda: "db" in hub.started())
    (name, started_at), *_ = hub.supervisor.started
    assert name == "db"
    assert started_at - first_round >= 0.05 * (1 - 0.2)  # the backoff, jitter included
    assert hub.kinds() == ["failed"]  # one event however many syncs saw FATAL
    hub.until(lambda: hub.monitors["db"].calls == ["resume"])
    assert hub.state("db") == policy.STARTING  # FAILED -> STARTING
    hub.ready("db")
    hub.until(lambda: "recovered" in hub.kinds())
    assert hub.kinds() == ["failed", "recovered"]


def test_a_restart_asked_during_the_backoff_starts_it_now(make_hub: Callable[..., Hub]
                                                           ) -> None:
    hub = make_hub(RESTART_BACKOFF_INITIAL="30")
    hub.supervisor.set("db", "FATAL", "Exited too quickly (process log may have details)")
    hub.supervisor.set("app", "STOPPED", "Not started")
    hub.reconciler.round()
    assert hub.state("db") == policy.FAILED
    hub.syncs(3)
    assert hub.supervisor.started == []  # held down for about 30 s
    asked = time.monotonic()
    assert hub.reconciler.start_now("db")
    hub.until(lambda: "db" in hub.started())
    assert hub.supervisor.started[0][1] - asked < 5
    assert not hub.reconciler.start_now("db")  # not held down any more: nothing to hurry


def test_a_crash_loop_is_stopped_in_supervisord_and_started_after_the_backoff(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(FLAP_RESTARTS="1")
    db = running_and_ready(hub, "db")["db"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: "looping" in hub.kinds())
    assert hub.kinds() == ["adopted", "crashed", "looping"]
    assert hub.state("db") == policy.LOOPING
    hub.until(lambda: hub.supervisor.stopped == ["db"])
    hub.until(lambda: hub.started() == ["db"])
    hub.until(lambda: hub.pid("db") == hub.supervisor.programs["db"].pid)
    assert hub.monitors["db"].calls[-1] == "resume"


# --- dependencies ---------------------------------------------------------------------------


def test_a_dependents_event_names_the_dependency_that_caused_it(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db", "app")["db"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: "crashed" in hub.kinds("db"))
    hub.post(Verdict("app", Seen.NOT_READY, "GET /ready answered HTTP 503", 0.01))
    hub.until(lambda: "unhealthy" in hub.kinds("app"))
    unhealthy = hub.event("app", "unhealthy")
    assert unhealthy["cause"] == "db"
    assert unhealthy["severity"] == "info"  # db's incident is the one to act on
    assert "(caused by db: crashed)" in unhealthy["detail"]
    assert "HTTP 503" in unhealthy["detail"]
    assert hub.event("db", "crashed")["severity"] == "critical"


def test_without_a_failing_dependency_there_is_no_cause(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    running_and_ready(hub, "db", "app")
    hub.post(Verdict("app", Seen.NOT_READY, "GET /ready answered HTTP 503", 0.01))
    hub.until(lambda: "unhealthy" in hub.kinds("app"))
    unhealthy = hub.event("app", "unhealthy")
    assert "cause" not in unhealthy
    assert unhealthy["severity"] == "warning"


def test_a_restart_with_edge_restarts_the_dependent_when_the_dependency_is_back(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub(registry=(replace(APP, restart_with=("db",)), DB, HUB))
    children = running_and_ready(hub, "db", "app")
    db, app = children["db"], children["app"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: hub.state("db") == policy.RESTARTING)
    assert app.poll() is None  # waiting for db, not restarted yet
    fresh = hub.supervisor.run("db")
    hub.reconciler.round()
    hub.ready("db")
    assert app.wait(5) == -9  # db is back: app restarted with it
    restarted = hub.event("app", "restarted_with")
    assert restarted["cause"] == "db"
    fresh.kill()


def test_a_plain_dependency_edge_only_waits(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    children = running_and_ready(hub, "db", "app")
    db, app = children["db"], children["app"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: hub.state("db") == policy.RESTARTING)
    fresh = hub.supervisor.run("db")
    hub.reconciler.round()
    hub.ready("db")
    assert app.poll() is None
    assert "restarted_with" not in hub.kinds("app")
    fresh.kill()


# --- maintenance ------------------------------------------------------------------------

RESTORE = "restore of unistack-20231114T221320000000Z.tar.zst"


def status_of(hub: Hub, name: str) -> Any:
    return next(s for s in hub.reconciler.statuses() if s.name == name)


def test_a_held_service_is_in_maintenance_and_says_why(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    running_and_ready(hub, "db", "app")
    hub.reconciler.hold(["db"], RESTORE)
    db = status_of(hub, "db")
    assert (db.state, db.ready, db.detail) == (
        policy.MAINTENANCE, False, f"maintenance: {RESTORE}")  # READY -> MAINTENANCE
    assert hub.monitors["db"].calls[-1] == "pause"  # its probes fail while it is stopped
    assert hub.reconciler.held() == {"db": RESTORE}
    assert hub.state("app") == policy.READY  # not held: untouched
    assert hub.kinds() == ["adopted", "adopted"]


def test_verdicts_and_exits_of_a_held_service_are_not_acted_on(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    hub.reconciler.hold(["db"], RESTORE)
    for kind in ("not_ready", "degraded", "busy", "hung"):
        hub.post(Verdict("db", kind, f"{kind} while stopped on purpose", 0.4,
                         onset=1_700_000_000.5))
    hub.syncs(2)
    assert db.poll() is None  # not killed as hung
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.supervisor.set("db", "FATAL", "Exited too quickly (process log may have details)")
    hub.syncs(3)
    assert hub.kinds() == ["adopted"]  # no incident, no event
    assert list(hub.incidents.iterdir()) == []
    assert (hub.supervisor.started, hub.supervisor.stopped) == ([], [])
    status = status_of(hub, "db")
    assert (status.state, status.restarts, status.incident) == (policy.MAINTENANCE, 0, "")
    assert status.detail == f"maintenance: {RESTORE}"


def test_a_held_program_stopped_in_supervisord_is_not_started(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    running_and_ready(hub, "db")
    hub.reconciler.hold(["db"], RESTORE)
    hub.supervisor.stop("db")  # the restore stops it
    hub.syncs(3)
    assert hub.supervisor.started == []
    assert hub.state("db") == policy.MAINTENANCE


def test_a_released_service_is_started_again_and_announced_ready(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    old = running_and_ready(hub, "db")["db"]
    hub.reconciler.hold(["db"], RESTORE)
    hub.supervisor.stop("db")
    hub.syncs(2)
    hub.reconciler.release(["db"])
    released = status_of(hub, "db")
    assert (released.state, released.pid, released.detail) == (
        policy.STOPPED, 0, "maintenance over; starting")  # MAINTENANCE -> STOPPED
    assert hub.reconciler.held() == {}
    hub.until(lambda: hub.started() == ["db"])
    hub.until(lambda: hub.pid("db") == hub.supervisor.programs["db"].pid)
    assert hub.pid("db") != old.pid
    assert hub.state("db") == policy.STARTING  # STOPPED -> STARTING
    assert hub.monitors["db"].calls[-1] == "resume"
    hub.ready("db")
    assert hub.kinds() == ["adopted", "ready"]


def test_released_services_start_dependencies_first(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    running_and_ready(hub, "db", "app")
    hub.reconciler.hold(["db", "app"], RESTORE)
    hub.supervisor.stop("app")
    hub.supervisor.stop("db")
    hub.reconciler.release(["db", "app"])
    hub.until(lambda: hub.started() == ["db"])
    hub.syncs(3)
    assert hub.started() == ["db"]
    assert status_of(hub, "app").detail == "waiting for db to be ready"
    hub.until(lambda: hub.pid("db") == hub.supervisor.programs["db"].pid)
    hub.ready("db")
    hub.until(lambda: hub.started() == ["db", "app"])


def test_a_held_service_that_kept_running_is_tracked_again_once_released(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    hub.reconciler.hold(["db"], RESTORE)
    hub.reconciler.release(["db"])  # the restore never stopped it
    hub.until(lambda: hub.pid("db") == db.pid)
    assert hub.supervisor.started == []
    assert hub.state("db") == policy.STARTING
    assert hub.monitors["db"].calls[-1] == "resume"
    hub.ready("db")
    assert db.poll() is None


def test_releasing_a_service_that_is_not_held_changes_nothing(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    hub.reconciler.release(["db"])
    hub.syncs(2)
    assert (hub.state("db"), hub.pid("db")) == (policy.READY, db.pid)
    assert hub.supervisor.started == []


def test_a_crash_after_release_is_a_crash_again(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub()
    running_and_ready(hub, "db")
    hub.reconciler.hold(["db"], RESTORE)
    hub.supervisor.stop("db")
    hub.reconciler.release(["db"])
    hub.until(lambda: hub.started() == ["db"])
    hub.until(lambda: hub.pid("db") == hub.supervisor.programs["db"].pid)
    hub.ready("db")
    fresh = hub.supervisor.children[f"db-{hub.pid('db')}"]
    hub.until(lambda: time.time() - hub.supervisor.programs["db"].since > 1.1)  # startsecs
    fresh.kill()
    fresh.wait(5)
    hub.post(Exited("db", fresh.pid))
    hub.until(lambda: "crashed" in hub.kinds("db"))


def test_a_hold_from_the_start_is_no_failed_startup(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(START_TIMEOUT="0.1")
    hub.reconciler.hold(["db", "app"], RESTORE)  # resumed by a hub restarted mid-restore
    began = time.monotonic()
    hub.until(lambda: time.monotonic() - began > 0.3)
    assert "startup_failed" not in hub.kinds()


@pytest.mark.parametrize(("age", "crash"), [(0.4, False), (1.6, True)])
def test_an_exit_counts_as_a_crash_only_past_startsecs_by_supervisords_start(
    make_hub: Callable[..., Hub], age: float, crash: bool
) -> None:
    """Measured from supervisord's `start` (whole seconds, so up to 1 s early: the bound
    _STARTSECS's comment explains): a young exit is supervisord's to retry, an older one
    is a crash."""
    hub = make_hub()
    db = hub.supervisor.run("db", up_for=age)
    hub.reconciler.round()
    hub.until(lambda: hub.pid("db") == db.pid)
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.syncs(3)
    assert ("crashed" in hub.kinds("db")) is crash, hub.kinds("db")


def test_a_crash_respawned_before_its_exit_reached_the_loop_is_still_one_crash(
    make_hub: Callable[..., Hub]
) -> None:
    """Under load supervisord may respawn a killed program before the exit's own message
    is handled: the new pid seen first still means the old process crashed, once."""
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    db.kill()
    db.wait(5)
    hub.supervisor.run("db", up_for=0.0)  # respawned; its Exited is still on the way
    hub.reconciler.round()
    hub.until(lambda: "crashed" in hub.kinds("db"))
    hub.post(Exited("db", db.pid))  # ... and arrives late: about a pid no longer tracked
    hub.syncs(3)
    assert hub.kinds("db").count("crashed") == 1
    assert str(db.pid) in hub.event("db", "crashed")["detail"]


def test_an_exit_already_handled_is_not_counted_again_when_the_new_pid_is_seen(
    make_hub: Callable[..., Hub]
) -> None:
    hub = make_hub()
    db = running_and_ready(hub, "db")["db"]
    db.kill()
    db.wait(5)
    hub.post(Exited("db", db.pid))
    hub.until(lambda: "crashed" in hub.kinds("db"))
    hub.supervisor.run("db", up_for=0.0)
    hub.syncs(3)
    assert hub.kinds("db").count("crashed") == 1
