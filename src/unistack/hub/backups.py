"""Scheduled backups: every BACKUP_INTERVAL (and when an operator asks: POST /backups)
the hub runs `python -m unistack backup --json --prune` as a child process, so the
snapshot's compression and hashing never slow its own loop. Each result is an event:
`backup_ok` (taken, verified, pruned) or `backup_failed`; so is a newest verified backup
older than twice the interval (stale), which stays an open incident until a backup
succeeds. An operator's own backup holding the lock is not a failure: the run is
skipped and tried again soon.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from unistack.backup import catalog
from unistack.backup.retention import span
from unistack.config import Settings
from unistack.event import Kind, Severity
from unistack.hub.events import EventLog

log = logging.getLogger("unistack.hub")
_EXIT_BUSY = 3
_RETRY = 600.0  # seconds: a failed or skipped run is tried again this soon (or sooner)
_FIRST = 60.0  # seconds after the hub starts: the first look (not during startup)
_LISTED = 20
_SCAN_EVERY = 2.0


class BackupScheduler:
    def __init__(self, settings: Settings, events: EventLog,
                 command: list[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._events = events
        self._command = command or [sys.executable, "-m", "unistack", "backup", "--json",
                                    "--prune"]
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._running_since: float | None = None
        self._asked_by = ""
        self._began = clock()
        self._last: dict[str, Any] | None = None
        self._next_due: float | None = None
        self._stale_told = False
        self._listing: tuple[float, list[catalog.Backup]] = (0.0, [])

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, name="backups", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        interval = self._settings.backup_interval
        if interval:
            self._next_due = self._first_due(interval)
        while not self._stop.is_set():
            self._wake.wait(self._pause())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._turn()
            except Exception:  # a bad turn must not end scheduled backups for good
                log.exception("the backup scheduler's turn failed; it goes on")

    def _turn(self) -> None:
        now = self._clock()
        if self._asked_by or (self._next_due is not None and now >= self._next_due):
            self._take(self._asked_by or "the schedule")
        self._check_stale(self._clock())

    def _first_due(self, interval: float) -> float:
        newest = catalog.newest_verified(self._backups())
        due = newest.ts + interval if newest else self._began
        return max(due, self._began + min(_FIRST, interval))

    def _pause(self) -> float:
        if self._next_due is None:
            return 30.0
        return max(0.05, min(self._next_due - self._clock(), 30.0))

    def request(self, actor: str) -> tuple[int, dict[str, Any]]:
        """An operator's `backup now`: 202, or 409 while one runs."""
        with self._lock:
            if self._running_since is not None or self._asked_by:
                since = time.strftime("%H:%M:%S UTC", time.gmtime(self._running_since
                                                                  or self._clock()))
                return 409, {"error": f"a backup is already running (since {since})"}
            self._asked_by = actor
        self._wake.set()
        return 202, {"started": True, "service": "backup"}

    def _take(self, why: str) -> None:
        with self._lock:
            self._running_since = self._clock()
            self._asked_by = ""
        log.info("backup started (%s)", why)
        try:
            code, answer, detail = self._child()
        finally:
            with self._lock:
                began, self._running_since = self._running_since or 0.0, None
        now = self._clock()
        took = now - began
        interval = self._settings.backup_interval
        if code == 0:
            self._ok(answer, took)
            self._next_due = now + interval if interval else None
            return
        self._next_due = now + min(interval, _RETRY) if interval else None
        if code == _EXIT_BUSY:
            log.info("backup skipped: %s", detail)
            self._last = {"ok": False, "ts": now, "name": "", "took": round(took, 1),
                          "detail": f"skipped: {detail}"}
            return
        self._last = {"ok": False, "ts": now, "name": "", "detail": detail,
                      "took": round(took, 1)}
        self._events.emit("backup", Kind.BACKUP_FAILED, Severity.WARNING,
                          f"backup failed: {detail}")

    def _child(self) -> tuple[int, dict[str, Any], str]:
        """Run the backup command; (exit code, its JSON answer, a one-line detail)."""
        try:
            done = subprocess.run(self._command, capture_output=True, text=True,
                                  check=False, cwd=self._settings.unistack_home,
                                  timeout=6 * 3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, {}, f"the backup command did not run: {exc}"
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = answer.get("error") or (lines[-1] if lines else f"exit {done.returncode}")
        return done.returncode, answer, self._settings.redact(str(detail))

    def _ok(self, answer: dict[str, Any], took: float) -> None:
        backup = answer.get("backup", {})
        pruned = answer.get("pruned", [])
        detail = (f"backup {backup.get('name')} verified: {backup.get('keys')} keys, "
                  f"{backup.get('size', 0) / 1e6:.1f} MB, in {took:.1f} s"
                  + (f"; pruned {len(pruned)}" if pruned else ""))
        self._last = {"ok": True, "ts": self._clock(), "name": backup.get("name", ""),
                      "detail": detail, "took": round(took, 1)}
        self._stale_told = False
        self._listing = (0.0, [])
        self._events.emit("backup", Kind.BACKUP_OK, Severity.INFO, detail)

    def _check_stale(self, now: float) -> None:
        why = self._stale(now)
        if why and not self._stale_told:
            self._stale_told = True
            self._events.emit("backup", Kind.BACKUP_FAILED, Severity.WARNING, why)

    def _stale(self, now: float) -> str:
        """Why the backups are stale ("" when they are not)."""
        interval = self._settings.backup_interval
        if not interval:
            return ""
        newest = catalog.newest_verified(self._backups())
        limit = 2 * interval
        if newest is None:
            return f"no verified backup yet, {span(now - self._began)} after the hub " \
                   f"started (BACKUP_INTERVAL {span(interval)})" \
                if now - self._began > limit else ""
        age = now - newest.ts
        return (f"the newest verified backup is {span(age)} old, more than twice "
                f"BACKUP_INTERVAL ({span(interval)})") if age > limit else ""

    # --- reading ----------------------------------------------------------------------

    def _backups(self) -> list[catalog.Backup]:
        at, listing = self._listing
        if self._clock() - at > _SCAN_EVERY:
            listing = catalog.scan(self._settings.backups_dir)
            self._listing = (self._clock(), listing)
        return listing

    def status(self) -> dict[str, Any]:
        """The `backups` part of the status document (the dashboard's card)."""
        backups = self._backups()
        newest = catalog.newest_verified(backups)
        return {
            "dir": str(self._settings.backups_dir),
            "interval": self._settings.backup_interval,
            "running": self._running_since is not None,
            "running_since": self._running_since,
            "last": self._last,
            "next_due": self._next_due,
            "stale": bool(self._stale(self._clock())),
            "newest_verified": _brief(newest) if newest else None,
            "backups": [_brief(b) for b in backups[:_LISTED]],
        }


def _brief(backup: catalog.Backup) -> dict[str, Any]:
    return {"name": backup.name, "ts": backup.ts, "size": backup.size, "state": backup.state,
            "verified_at": backup.verified_at, "keys": backup.keys,
            "encrypted": backup.encrypted}
