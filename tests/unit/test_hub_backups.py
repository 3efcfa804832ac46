"""hub.backups: the scheduler runs a real child command (a stand-in for `unistack backup`
that prints a JSON line and exits with a chosen code) on a fake clock, and says what
happened as events; staleness is read from synthetic archives in a temp BACKUP_DIR."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.waiting import wait_for
from unistack.backup import catalog
from unistack.config import Settings, load_settings
from unistack.event import Kind
from unistack.hub.backups import BackupScheduler
from unistack.hub.events import EventLog

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400.0
SECRET = "s3cret-redis-password-42"
NAME = "unistack-20231114T221320000000Z.tar.zst"
TAKEN = {"backup": {"name": NAME, "keys": 1234, "size": 2_500_000}, "pruned": []}


class Clock:
    """Wall-clock time that moves only when a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def child(answer: dict[str, Any] | None = None, code: int = 0, stderr: str = "",
          wait_for_file: Path | None = None) -> list[str]:
    """A backup command: optionally waits for a file, prints a progress line and ANSWER
    as its last line of JSON, writes STDERR, exits with CODE."""
    lines = ["import pathlib, sys, time"]
    if wait_for_file is not None:
        lines.append(f"while not pathlib.Path({str(wait_for_file)!r}).exists(): "
                     "time.sleep(0.01)")
    lines.append("print('snapshot: BGSAVE on the live Redis ...')")
    if answer is not None:
        lines.append(f"print({json.dumps(answer)!r})")
    if stderr:
        lines.append(f"sys.stderr.write({stderr!r})")
    lines.append(f"sys.exit({code})")
    return [sys.executable, "-c", "\n".join(lines)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    loaded = load_settings(environ={"UNISTACK_HOME": str(tmp_path), "REDIS_PASSWORD": SECRET},
                           root=ROOT)
    return replace(loaded, backup_dir=str(tmp_path / "backups"), backup_interval=DAY)


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def running() -> Iterator[list[BackupScheduler]]:
    """Schedulers whose loop a test started; each is stopped afterwards."""
    started: list[BackupScheduler] = []
    yield started
    for scheduler in started:
        scheduler.stop()


def verified(settings: Settings, ts: float, state: str = catalog.VERIFIED) -> Path:
    """A synthetic archive made at TS, complete, whose last check found STATE."""
    directory = settings.backups_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / catalog.archive_name(ts)
    path.write_bytes(b"archive")
    catalog.write_sha256(path, "0" * 64)
    catalog.write_state(path, {"state": state, "verified_at": ts + 30, "keys": 10})
    return path


def kinds(events: EventLog) -> list[str]:
    return [e["kind"] for e in events.recent()]


# --- one run --------------------------------------------------------------------------


def test_a_successful_run_is_one_backup_ok_event_saying_what_was_taken(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    answer = {**TAKEN, "pruned": ["a.tar.zst", "b.tar.zst"]}
    scheduler = BackupScheduler(settings, events, command=child(answer), clock=clock)
    scheduler._take("the schedule")
    [ok] = events.recent()
    assert (ok["service"], ok["kind"], ok["severity"]) == ("backup", Kind.BACKUP_OK, "info")
    assert ok["detail"] == f"backup {NAME} verified: 1234 keys, 2.5 MB, in 0.0 s; pruned 2"
    status = scheduler.status()
    assert status["last"] == {"ok": True, "ts": T0, "name": NAME, "detail": ok["detail"],
                              "took": 0.0}
    assert (status["running"], status["running_since"]) == (False, None)
    assert status["next_due"] == T0 + DAY


def test_a_run_that_pruned_nothing_does_not_say_so(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    BackupScheduler(settings, events, command=child(TAKEN), clock=clock)._take("ops")
    assert "pruned" not in events.recent()[0]["detail"]


def test_a_failed_run_is_one_backup_failed_event_with_the_commands_error(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    command = child({"error": "redis BGSAVE failed: MISCONF"}, code=1, stderr="details\n")
    scheduler = BackupScheduler(settings, events, command=command, clock=clock)
    scheduler._take("the schedule")
    [failed] = events.recent()
    assert (failed["service"], failed["kind"], failed["severity"]) == (
        "backup", Kind.BACKUP_FAILED, "warning")
    assert failed["detail"] == "backup failed: redis BGSAVE failed: MISCONF"
    last = scheduler.status()["last"]
    assert (last["ok"], last["name"], last["detail"]) == (
        False, "", "redis BGSAVE failed: MISCONF")


def test_a_failure_without_a_json_error_says_the_last_line_on_stderr(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    stderr = "Traceback (most recent call last):\n  ...\nOSError: No space left\n\n"
    scheduler = BackupScheduler(settings, events, command=child(code=1, stderr=stderr),
                                clock=clock)
    scheduler._take("the schedule")
    assert [e["detail"] for e in events.recent()] == ["backup failed: OSError: No space left"]


def test_a_failure_without_any_output_says_its_exit_status(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    scheduler = BackupScheduler(settings, events, command=child(code=2), clock=clock)
    scheduler._take("the schedule")
    assert [e["detail"] for e in events.recent()] == ["backup failed: exit 2"]


def test_a_command_that_cannot_run_is_a_failure(
    settings: Settings, events: EventLog, clock: Clock, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-backup-command")
    scheduler = BackupScheduler(settings, events, command=[missing], clock=clock)
    scheduler._take("the schedule")
    [failed] = events.recent()
    assert failed["kind"] == Kind.BACKUP_FAILED
    assert failed["detail"].startswith("backup failed: the backup command did not run: ")
    assert missing in failed["detail"]


def test_secrets_in_a_failure_are_redacted(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    command = child({"error": f"AUTH {SECRET} refused"}, code=1)
    BackupScheduler(settings, events, command=command, clock=clock)._take("ops")
    [failed] = events.recent()
    assert SECRET not in failed["detail"]
    assert failed["detail"] == f"backup failed: AUTH ****{SECRET[-4:]} refused"


def test_a_backup_skipped_for_a_busy_lock_is_no_event(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    command = child({"error": "another backup or restore holds the lock"}, code=3)
    scheduler = BackupScheduler(settings, events, command=command, clock=clock)
    scheduler._take("the schedule")
    assert events.recent() == []
    status = scheduler.status()
    assert status["last"]["ok"] is False
    assert status["last"]["detail"] == "skipped: another backup or restore holds the lock"
    assert status["next_due"] == T0 + 600  # tried again soon, not in a day


@pytest.mark.parametrize(("interval", "retry"), [(DAY, 600.0), (120.0, 120.0)])
def test_a_failed_run_is_tried_again_within_ten_minutes_or_the_interval(
    settings: Settings, events: EventLog, clock: Clock, interval: float, retry: float
) -> None:
    scheduler = BackupScheduler(replace(settings, backup_interval=interval), events,
                                command=child(code=1), clock=clock)
    scheduler._take("the schedule")
    assert scheduler.status()["next_due"] == T0 + retry


def test_with_scheduling_off_a_run_schedules_nothing(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    off = replace(settings, backup_interval=0.0)
    for code in (0, 1, 3):
        scheduler = BackupScheduler(off, events, command=child(TAKEN, code=code), clock=clock)
        scheduler._take("ops")
        assert scheduler.status()["next_due"] is None


def test_a_last_line_of_json_that_is_not_an_object_is_a_plain_failure(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    command = [sys.executable, "-c", "print(42); raise SystemExit(1)"]
    BackupScheduler(settings, events, command=command, clock=clock)._take("the schedule")
    assert [e["detail"] for e in events.recent()] == ["backup failed: exit 1"]


# --- asking for one -------------------------------------------------------------------


def test_a_request_is_accepted_once_and_refused_while_it_is_pending(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    assert scheduler.request("ops") == (202, {"started": True, "service": "backup"})
    assert scheduler.request("dashboard") == (
        409, {"error": "a backup is already running (since 22:13:20 UTC)"})


def test_the_loop_takes_a_requested_backup_and_refuses_another_while_it_runs(
    settings: Settings, events: EventLog, clock: Clock, tmp_path: Path,
    running: list[BackupScheduler]
) -> None:
    go = tmp_path / "go"
    scheduler = BackupScheduler(settings, events, command=child(TAKEN, wait_for_file=go),
                                clock=clock)
    scheduler.start()
    running.append(scheduler)
    assert scheduler.request("ops")[0] == 202
    wait_for(lambda: scheduler.status()["running"])
    assert scheduler.status()["running_since"] == T0
    clock.now = T0 + 3600
    code, answer = scheduler.request("dashboard")
    assert (code, answer) == (409, {"error": "a backup is already running (since 22:13:20 UTC)"})
    go.touch()
    wait_for(lambda: kinds(events) == [Kind.BACKUP_OK])
    wait_for(lambda: not scheduler.status()["running"])
    assert scheduler.request("dashboard")[0] == 202  # the next one is welcome
    wait_for(lambda: kinds(events) == [Kind.BACKUP_OK, Kind.BACKUP_OK])


def test_the_loop_takes_a_scheduled_backup_once_it_is_due(
    settings: Settings, events: EventLog, clock: Clock, running: list[BackupScheduler]
) -> None:
    hourly = replace(settings, backup_interval=3600.0)
    verified(hourly, T0 - 3000)  # the next is due at T0 + 600, not before T0 + 60
    scheduler = BackupScheduler(hourly, events, command=child(TAKEN), clock=clock)
    clock.now = T0 + 600
    scheduler.start()
    running.append(scheduler)
    wait_for(lambda: kinds(events) == [Kind.BACKUP_OK])
    wait_for(lambda: scheduler.status()["next_due"] == T0 + 600 + 3600)


# --- when the first one is due ----------------------------------------------------------


def test_the_first_backup_is_due_an_interval_after_the_newest_verified_one(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    verified(settings, T0 - 3600)
    verified(settings, T0 - 60, state=catalog.FAILED)  # newer, but not a good backup
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    assert scheduler._first_due(DAY) == T0 - 3600 + DAY


@pytest.mark.parametrize("newest", [None, T0 - 10 * DAY, T0 - DAY + 10])
def test_the_first_backup_is_never_due_during_the_hubs_first_minute(
    settings: Settings, events: EventLog, clock: Clock, newest: float | None
) -> None:
    if newest is not None:
        verified(settings, newest)
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    assert scheduler._first_due(DAY) == T0 + 60


def test_with_a_short_interval_the_first_backup_waits_one_interval(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    assert scheduler._first_due(10.0) == T0 + 10


# --- staleness ------------------------------------------------------------------------


def test_no_verified_backup_within_twice_the_interval_of_start_is_not_stale(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    assert scheduler._stale(T0 + 2 * DAY) == ""
    scheduler._check_stale(T0 + 2 * DAY)
    assert events.recent() == []


def test_no_verified_backup_long_after_start_is_one_backup_failed(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    verified(settings, T0 - 60, state=catalog.FAILED)
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    clock.now = T0 + 2 * DAY + 3600
    scheduler._check_stale(clock.now)
    clock.now += 600
    scheduler._check_stale(clock.now)  # still stale: not said again
    [stale] = events.recent()
    assert (stale["service"], stale["kind"], stale["severity"]) == (
        "backup", Kind.BACKUP_FAILED, "warning")
    assert stale["detail"] == ("no verified backup yet, 2.0 d after the hub started "
                               "(BACKUP_INTERVAL 1.0 d)")
    assert scheduler.status()["stale"] is True


def test_a_newest_verified_backup_older_than_twice_the_interval_is_stale_once(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    verified(settings, T0 - 2 * DAY - 3600)
    verified(settings, T0 - 3600, state=catalog.UNVERIFIED)  # newer, never checked
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    scheduler._check_stale(T0)
    scheduler._check_stale(T0 + 60)
    assert [e["detail"] for e in events.recent()] == [
        "the newest verified backup is 2.0 d old, more than twice BACKUP_INTERVAL (1.0 d)"]


def test_a_verified_backup_within_twice_the_interval_is_fresh(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    verified(settings, T0 - 2 * DAY)
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    scheduler._check_stale(T0)
    assert events.recent() == []
    assert scheduler.status()["stale"] is False


def test_stale_again_after_a_success_is_said_again(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    verified(settings, T0 - 3 * DAY)
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    scheduler._check_stale(clock.now)
    scheduler._take("the schedule")
    verified(settings, clock.now)  # what the run wrote
    scheduler._check_stale(clock.now)
    clock.now += 2 * DAY + 60
    scheduler._check_stale(clock.now)
    assert kinds(events) == [Kind.BACKUP_FAILED, Kind.BACKUP_OK, Kind.BACKUP_FAILED]


def test_with_scheduling_off_nothing_is_ever_stale(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    off = replace(settings, backup_interval=0.0)
    scheduler = BackupScheduler(off, events, command=child(TAKEN), clock=clock)
    clock.now = T0 + 365 * DAY
    scheduler._check_stale(clock.now)
    assert events.recent() == []
    assert scheduler.status()["stale"] is False


# --- the status document ----------------------------------------------------------------


def test_status_lists_the_newest_backups_first_with_the_newest_verified(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    for minute in range(25):
        verified(settings, T0 - DAY + minute * 60,
                 state=catalog.VERIFIED if minute < 20 else catalog.FAILED)
    scheduler = BackupScheduler(settings, events, command=child(TAKEN), clock=clock)
    status = scheduler.status()
    assert status["dir"] == str(settings.backups_dir)
    assert status["interval"] == DAY
    assert (status["running"], status["last"], status["next_due"]) == (False, None, None)
    assert len(status["backups"]) == 20
    assert [b["ts"] for b in status["backups"]] == sorted(
        (b["ts"] for b in status["backups"]), reverse=True)
    assert status["backups"][0]["state"] == catalog.FAILED
    newest = status["newest_verified"]
    assert newest == {"name": catalog.archive_name(T0 - DAY + 19 * 60),
                      "ts": T0 - DAY + 19 * 60, "size": 7, "state": catalog.VERIFIED,
                      "verified_at": T0 - DAY + 19 * 60 + 30, "keys": 10,
                      "encrypted": False}
    assert status["stale"] is False


def test_status_of_a_missing_backup_dir_lists_nothing(
    settings: Settings, events: EventLog, clock: Clock
) -> None:
    status = BackupScheduler(settings, events, command=child(TAKEN), clock=clock).status()
    assert (status["backups"], status["newest_verified"]) == ([], None)
