"""hub.maintenance: an operator's hold of some services, against a recording reconciler,
a recording alerts service and a scripted set of live pids; a dead holder's restore is
rolled back from a real journal in a temp home."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unistack.backup import journal
from unistack.config import Settings, load_settings
from unistack.event import Kind
from unistack.hub.events import EventLog
from unistack.hub.maintenance import HOLD_MAX, BadHold, Maintenance

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("redis", "ml_engine", "dashboard", "prometheus")
HOLDER, OTHER = 4242, 4343
REASON = "restore of unistack-20231114T221320000000Z.tar.zst"


@dataclass
class FakeReconciler:
    """Records what the hold asked of the reconcile loop."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def hold(self, names: list[str], reason: str) -> None:
        self.calls.append(("hold", list(names), reason))

    def release(self, names: list[str]) -> None:
        self.calls.append(("release", list(names)))


@dataclass
class FakeAlerts:
    """Records the silences the hold set."""

    silences: list[tuple[str, float, str, bool]] = field(default_factory=list)

    def silence(self, service: str, seconds: float, reason: str, quiet: bool = False) -> float:
        self.silences.append((service, seconds, reason, quiet))
        return seconds


@dataclass
class Rig:
    settings: Settings
    reconciler: FakeReconciler
    alerts: FakeAlerts
    events: EventLog
    live: set[int]

    def maintenance(self) -> Maintenance:
        """A Maintenance as a (re)started hub makes it."""
        return Maintenance(self.settings, self.reconciler,
                           events=self.events, alerts=self.alerts,
                           services=SERVICES, alive=lambda pid: pid in self.live)

    @property
    def file(self) -> Path:
        return self.settings.run_dir / "maintenance.json"

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events.recent()]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    settings.run_dir.mkdir(parents=True)
    return Rig(settings, FakeReconciler(), FakeAlerts(), EventLog(), {HOLDER, OTHER})


def body(services: Any = ("redis", "ml_engine"), reason: Any = REASON,
         pid: Any = HOLDER) -> dict[str, Any]:
    return {"services": list(services) if isinstance(services, tuple) else services,
            "reason": reason, "pid": pid}


@dataclass
class Restore:
    """A restore killed between its swaps: the live directory is the restored one, the
    old one is moved aside, and the journal says so."""

    live: Path
    aside: Path

    @classmethod
    def interrupted(cls, settings: Settings, placed: bool = False) -> Restore:
        live = settings.data_dir / "redis"
        live.mkdir(parents=True)
        (live / "dump.rdb").write_bytes(b"the data before the restore")
        staged = settings.unistack_home / "staging" / "redis"
        staged.mkdir(parents=True)
        (staged / "dump.rdb").write_bytes(b"restored data")
        swap = journal.Swap(live, settings.data_dir / ".redis.before-restore", staged)
        journal.begin(settings, [swap], "unistack-20231114T221320000000Z.tar.zst")
        journal.apply([swap])
        if placed:
            journal.placed(settings)
        assert (live / "dump.rdb").read_bytes() == b"restored data"
        return cls(live, swap.aside)

    def data(self) -> bytes:
        return (self.live / "dump.rdb").read_bytes()


# --- beginning a hold -------------------------------------------------------------------


def test_a_hold_holds_the_services_writes_itself_down_and_is_announced_once(
    rig: Rig
) -> None:
    maintenance = rig.maintenance()
    assert maintenance.begin(body()) == {"held": ["redis", "ml_engine"], "reason": REASON}
    assert rig.reconciler.calls == [("hold", ["redis", "ml_engine"], REASON)]
    written = json.loads(rig.file.read_text())
    assert {k: written[k] for k in ("services", "reason", "pid")} == {
        "services": ["redis", "ml_engine"], "reason": REASON, "pid": HOLDER}
    assert isinstance(written["since"], float)
    assert stat.S_IMODE(rig.file.stat().st_mode) == 0o600
    assert maintenance.status() == written
    [announced] = rig.events.recent()
    assert (announced["service"], announced["kind"], announced["severity"]) == (
        "stack", Kind.MAINTENANCE, "info")
    assert announced["detail"] == (f"redis, ml_engine in maintenance ({REASON}): stopped on "
                                   "purpose; no restarts or alerts for them until it ends")


def test_a_hold_is_shown_only_once_its_services_are_held(rig: Rig) -> None:
    """/maintenance and /status are read on other threads: one naming the holder while
    the other still shows its services READY was a race a restore's caller could see."""
    maintenance = rig.maintenance()
    shown_while_holding: list[dict[str, Any]] = []
    record = rig.reconciler.hold
    rig.reconciler.hold = lambda names, reason: (  # type: ignore[method-assign]
        shown_while_holding.append(maintenance.status()), record(names, reason))[1]
    maintenance.begin(body())
    assert shown_while_holding == [{}]
    assert maintenance.status()["pid"] == HOLDER


def test_a_hold_silences_its_services_quietly_for_at_most_the_hold_limit(rig: Rig) -> None:
    rig.maintenance().begin(body())
    assert rig.alerts.silences == [
        ("redis", HOLD_MAX, f"maintenance: {REASON}", True),
        ("ml_engine", HOLD_MAX, f"maintenance: {REASON}", True)]


def test_a_hold_keeps_its_reason_without_surrounding_blanks(rig: Rig) -> None:
    maintenance = rig.maintenance()
    assert maintenance.begin(body(reason=f"  {REASON}\n"))["reason"] == REASON
    assert rig.reconciler.calls == [("hold", ["redis", "ml_engine"], REASON)]


@pytest.mark.parametrize(("bad", "said"), [
    (body(services=None), "services None is invalid: expected a list of "
                          "['redis', 'ml_engine', 'dashboard', 'prometheus']"),
    (body(services=[]), "services [] is invalid"),
    (body(services="redis"), "services 'redis' is invalid"),
    (body(services=["redis", "postgres"]), "services ['redis', 'postgres'] is invalid"),
    (body(reason=None), "reason is required: 1-200 characters saying why"),
    (body(reason=""), "reason is required"),
    (body(reason=" \n "), "reason is required"),
    (body(reason="x" * 201), "reason is required: 1-200 characters"),
    (body(reason=7), "reason is required"),
    (body(pid=None), "pid None is not a running process: expected the pid of the command "
                     "holding the services"),
    (body(pid="4242"), "pid '4242' is not a running process"),
    (body(pid=99), "pid 99 is not a running process"),
])
def test_an_invalid_hold_is_refused_naming_what_is_wrong(
    rig: Rig, bad: dict[str, Any], said: str
) -> None:
    maintenance = rig.maintenance()
    with pytest.raises(BadHold) as refused:
        maintenance.begin(bad)
    assert said in str(refused.value)
    assert maintenance.status() == {}
    assert (rig.reconciler.calls, rig.alerts.silences, rig.events.recent()) == ([], [], [])
    assert not rig.file.exists()


def test_a_reason_of_200_characters_is_enough(rig: Rig) -> None:
    assert rig.maintenance().begin(body(reason="x" * 200))["reason"] == "x" * 200


def test_a_second_holder_is_refused_naming_the_first(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    with pytest.raises(BadHold, match=f"already held by pid {HOLDER} \\({REASON}\\)"):
        maintenance.begin(body(services=["dashboard"], reason="another restore", pid=OTHER))
    assert maintenance.status()["pid"] == HOLDER
    assert json.loads(rig.file.read_text())["pid"] == HOLDER
    assert rig.reconciler.calls == [("hold", ["redis", "ml_engine"], REASON)]
    assert rig.kinds() == [Kind.MAINTENANCE]


def test_a_renewed_hold_leaves_no_service_held_once_it_ends(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body(services=["redis", "ml_engine"]))
    maintenance.begin(body(services=["ml_engine"]))
    maintenance.end()
    held: set[str] = set()
    for call in rig.reconciler.calls:
        held = held | set(call[1]) if call[0] == "hold" else held - set(call[1])
    assert held == set()


def test_a_pid_of_true_is_refused(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    settings.run_dir.mkdir(parents=True)
    maintenance = Maintenance(settings, FakeReconciler(),
                              events=EventLog(), alerts=None, services=SERVICES)
    with pytest.raises(BadHold):
        maintenance.begin(body(pid=True))


# --- ending it --------------------------------------------------------------------------


def test_ending_a_hold_releases_its_services_and_is_announced_once(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    assert maintenance.end() == {"released": ["redis", "ml_engine"]}
    assert rig.reconciler.calls[1:] == [("release", ["redis", "ml_engine"])]
    assert not rig.file.exists()
    assert maintenance.status() == {}
    assert rig.kinds() == [Kind.MAINTENANCE, Kind.MAINTENANCE_OVER]
    over = rig.events.recent()[-1]
    assert (over["service"], over["severity"]) == ("stack", "info")
    assert over["detail"] == ("maintenance of redis, ml_engine over (released); the hub "
                              "starts them again")


def test_ending_a_hold_silences_its_services_quietly_while_they_start(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    rig.alerts.silences.clear()
    maintenance.end()
    grace = rig.settings.start_timeout + 30.0
    assert rig.alerts.silences == [
        ("redis", grace, f"starting after maintenance: {REASON}", True),
        ("ml_engine", grace, f"starting after maintenance: {REASON}", True)]


def test_ending_without_a_hold_does_nothing(rig: Rig) -> None:
    maintenance = rig.maintenance()
    assert maintenance.end() == {"released": []}
    assert (rig.reconciler.calls, rig.events.recent()) == ([], [])


def test_after_a_hold_ended_another_holder_may_hold(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    maintenance.end()
    assert maintenance.begin(body(services=["dashboard"], pid=OTHER))["held"] == ["dashboard"]


def test_without_an_alerts_service_a_hold_still_holds_and_ends(rig: Rig) -> None:
    maintenance = Maintenance(rig.settings, rig.reconciler,
                              events=rig.events, alerts=None, services=SERVICES,
                              alive=lambda pid: pid in rig.live)
    maintenance.begin(body())
    maintenance.end()
    assert [call[0] for call in rig.reconciler.calls] == ["hold", "release"]
    assert rig.kinds() == [Kind.MAINTENANCE, Kind.MAINTENANCE_OVER]


# --- a holder that is gone --------------------------------------------------------------


def test_a_hold_whose_holder_runs_is_kept(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    maintenance.check()
    assert maintenance.status()["pid"] == HOLDER
    assert [call[0] for call in rig.reconciler.calls] == ["hold"]
    assert rig.file.exists()


def test_a_dead_holders_restore_is_rolled_back_and_its_services_released(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    restore = Restore.interrupted(rig.settings)
    rig.live.discard(HOLDER)  # kill -9 of the restore
    maintenance.check()
    assert restore.data() == b"the data before the restore"
    assert not restore.aside.exists()
    assert not journal.path(rig.settings).exists()
    assert rig.reconciler.calls[1:] == [("release", ["redis", "ml_engine"])]
    assert not rig.file.exists()
    assert maintenance.status() == {}
    assert rig.kinds() == [Kind.MAINTENANCE, Kind.MAINTENANCE_OVER]
    assert rig.events.recent()[-1]["detail"] == (
        f"maintenance of redis, ml_engine over (its holder, pid {HOLDER}, ended without "
        "releasing it; its unfinished restore was rolled back); the hub starts them again")
    maintenance.check()  # nothing is held any more: nothing more happens
    assert len(rig.reconciler.calls) == 2


def test_a_dead_holder_without_a_journal_is_released_saying_only_that(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    rig.live.discard(HOLDER)
    maintenance.check()
    assert rig.reconciler.calls[1:] == [("release", ["redis", "ml_engine"])]
    assert rig.events.recent()[-1]["detail"] == (
        f"maintenance of redis, ml_engine over (its holder, pid {HOLDER}, ended without "
        "releasing it); the hub starts them again")


def test_a_dead_holders_restore_that_placed_all_its_data_keeps_it(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    restore = Restore.interrupted(rig.settings, placed=True)
    rig.live.discard(HOLDER)
    maintenance.check()
    assert restore.data() == b"restored data"
    assert not restore.aside.exists()
    assert not journal.path(rig.settings).exists()
    assert rig.reconciler.calls[1:] == [("release", ["redis", "ml_engine"])]


def test_a_kept_restore_is_not_said_to_be_rolled_back(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    Restore.interrupted(rig.settings, placed=True)
    rig.live.discard(HOLDER)
    maintenance.check()
    assert "rolled back" not in rig.events.recent()[-1]["detail"]


def test_a_dead_holders_unreadable_journal_keeps_its_services_held(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.begin(body())
    journal.path(rig.settings).write_text("{half a journal")
    rig.live.discard(HOLDER)
    maintenance.check()
    assert [call[0] for call in rig.reconciler.calls] == ["hold"]
    assert maintenance.status()["pid"] == HOLDER
    assert rig.file.exists()
    assert journal.path(rig.settings).read_text() == "{half a journal"
    assert rig.kinds() == [Kind.MAINTENANCE]


def test_a_real_holder_process_is_followed_until_it_exits(rig: Rig) -> None:
    maintenance = Maintenance(rig.settings, rig.reconciler,
                              events=rig.events, alerts=None, services=SERVICES)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        maintenance.begin(body(pid=holder.pid))
        maintenance.check()
        assert maintenance.status()["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait(5)
    maintenance.check()
    assert maintenance.status() == {}
    assert rig.kinds() == [Kind.MAINTENANCE, Kind.MAINTENANCE_OVER]


def test_the_pid_of_a_process_that_exited_is_refused(rig: Rig) -> None:
    maintenance = Maintenance(rig.settings, rig.reconciler,
                              events=rig.events, alerts=None, services=SERVICES)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pid = int(ended.stdout)
    with pytest.raises(BadHold, match=f"pid {pid} is not a running process"):
        maintenance.begin(body(pid=pid))
    with pytest.raises(BadHold, match="pid 0 is not a running process"):
        maintenance.begin(body(pid=0))


# --- a hub restarted during a hold ------------------------------------------------------


def test_a_new_hub_keeps_the_hold_of_a_holder_that_still_runs(rig: Rig) -> None:
    first = rig.maintenance()
    first.begin(body())
    written = json.loads(rig.file.read_text())
    rig.reconciler.calls.clear()
    second = rig.maintenance()
    second.resume()
    assert rig.reconciler.calls == [("hold", ["redis", "ml_engine"], REASON)]
    assert second.status() == written
    assert rig.kinds() == [Kind.MAINTENANCE]  # not announced again
    second.end()
    assert rig.reconciler.calls[-1] == ("release", ["redis", "ml_engine"])


def test_a_new_hub_ends_the_hold_of_a_holder_that_died_rolling_its_restore_back(
    rig: Rig
) -> None:
    rig.maintenance().begin(body())
    restore = Restore.interrupted(rig.settings)
    rig.live.discard(HOLDER)
    rig.reconciler.calls.clear()
    second = rig.maintenance()
    second.resume()
    assert restore.data() == b"the data before the restore"
    assert not journal.path(rig.settings).exists()
    assert rig.reconciler.calls == [("release", ["redis", "ml_engine"])]
    assert not rig.file.exists()
    assert second.status() == {}
    assert rig.kinds() == [Kind.MAINTENANCE, Kind.MAINTENANCE_OVER]
    assert f"its holder, pid {HOLDER}, ended without releasing it" in (
        rig.events.recent()[-1]["detail"])


def test_a_new_hub_without_a_hold_holds_nothing(rig: Rig) -> None:
    maintenance = rig.maintenance()
    maintenance.resume()
    assert maintenance.status() == {}
    assert (rig.reconciler.calls, rig.events.recent()) == ([], [])


def test_a_new_hub_ignores_an_unreadable_hold(rig: Rig) -> None:
    rig.file.write_text("{not json")
    maintenance = rig.maintenance()
    maintenance.resume()
    assert maintenance.status() == {}
    assert (rig.reconciler.calls, rig.events.recent()) == ([], [])


def test_a_new_hub_drops_a_hold_that_is_not_a_record(rig: Rig) -> None:
    rig.file.write_text("[4242]\n")
    maintenance = rig.maintenance()
    maintenance.resume()
    assert maintenance.status() == {}
    assert not rig.file.exists()
    assert (rig.reconciler.calls, rig.events.recent()) == ([], [])
