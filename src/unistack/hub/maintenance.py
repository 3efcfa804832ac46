"""Maintenance: an operator's command (a restore) holds some services stopped while it
replaces their files. Meanwhile the hub neither restarts them nor alerts about them
(their alerts are silenced without a message of their own); the hold is announced once
when it begins and once when it ends, and `status` shows it.

The hold names the process that asked for it and is written to var/run/maintenance.json,
so a hub restarted meanwhile keeps it. If that process dies without releasing it
(kill -9 of a restore), the hub rolls back the restore's unfinished swaps (its journal)
and releases the services itself: the stack never starts on half-restored data and
never stays held by nobody.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from unistack.backup import journal
from unistack.config import Settings
from unistack.event import Kind, Severity
from unistack.hub.events import EventLog
from unistack.runtime import write_atomic

log = logging.getLogger("unistack.hub")
HOLD_MAX = 6 * 3600.0  # seconds: the alerts of held services stay silenced at most this long


class Holds(Protocol):
    """What a hold asks of the reconcile loop (hub.reconcile.Reconciler)."""

    def hold(self, names: list[str], reason: str) -> None: ...

    def release(self, names: list[str]) -> None: ...


class Silences(Protocol):
    """What a hold asks of the alerts (alerts.service.Alerts)."""

    def silence(self, service: str, seconds: float, reason: str,
                quiet: bool = False) -> float: ...


class BadHold(ValueError):
    """A maintenance request the hub refuses; the message says what was expected."""


class Maintenance:
    def __init__(self, settings: Settings, reconciler: Holds, *, events: EventLog,
                 alerts: Silences | None, services: tuple[str, ...],
                 alive: Callable[[int], bool] | None = None) -> None:
        self._settings = settings
        self._reconciler = reconciler
        self._events = events
        self._alerts = alerts
        self._services = services
        self._alive = alive or _alive
        self._path = settings.run_dir / "maintenance.json"
        self.hold: dict[str, Any] = {}

    def resume(self) -> None:
        """At hub start: keep a hold whose holder still runs; else end it (rolled back)."""
        try:
            hold = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(hold, dict) and self._alive(int(hold.get("pid", 0))):
            self.hold = hold
            self._reconciler.hold(hold["services"], hold["reason"])
        else:
            self.hold = hold if isinstance(hold, dict) else {}
            self._abandoned()

    def begin(self, body: dict[str, Any]) -> dict[str, Any]:
        services, reason, pid = body.get("services"), body.get("reason"), body.get("pid")
        if not isinstance(services, list) or not services \
                or not set(services) <= set(self._services):
            raise BadHold(f"services {services!r} is invalid: expected a list of "
                          f"{list(self._services)}")
        if not isinstance(reason, str) or not 0 < len(reason.strip()) <= 200:
            raise BadHold("reason is required: 1-200 characters saying why")
        if not isinstance(pid, int) or isinstance(pid, bool) or not self._alive(pid):
            raise BadHold(f"pid {pid!r} is not a running process: expected the pid of "
                          "the command holding the services")
        if self.hold and self.hold.get("pid") != pid:
            raise BadHold(f"already held by pid {self.hold['pid']} ({self.hold['reason']})")
        held = list(self.hold.get("services", []))  # a renewed hold keeps what it held
        hold = {"services": held + [s for s in services if s not in held],
                "reason": reason.strip(), "pid": pid,
                "since": self.hold.get("since", time.time())}
        services = hold["services"]
        write_atomic(self._path, json.dumps(hold) + "\n", 0o600)
        self._reconciler.hold(services, hold["reason"])
        self.hold = hold  # shown by /maintenance only once /status shows the services held
        for name in services:
            if self._alerts:
                self._alerts.silence(name, HOLD_MAX, f"maintenance: {reason}", quiet=True)
        self._events.emit("stack", Kind.MAINTENANCE, Severity.INFO,
                          f"{', '.join(services)} in maintenance ({self.hold['reason']}): "
                          "stopped on purpose; no restarts or alerts for them until it ends")
        return {"held": services, "reason": self.hold["reason"]}

    def end(self, why: str = "released") -> dict[str, Any]:
        services = list(self.hold.get("services", []))
        if not services:
            return {"released": []}
        self._path.unlink(missing_ok=True)
        reason, self.hold = self.hold.get("reason", ""), {}
        self._reconciler.release(services)
        grace = self._settings.start_timeout + 30.0  # their alerts resolve as they start
        for name in services:
            if self._alerts:
                self._alerts.silence(name, grace, f"starting after maintenance: {reason}",
                                     quiet=True)
        self._events.emit("stack", Kind.MAINTENANCE_OVER, Severity.INFO,
                          f"maintenance of {', '.join(services)} over ({why}); the hub "
                          "starts them again")
        return {"released": services}

    def check(self) -> None:
        """A hold whose holder is gone: roll its restore back and release the services."""
        pid = int(self.hold.get("pid", 0))
        if pid and not self._alive(pid):
            self._abandoned()

    def _abandoned(self) -> None:
        pid = self.hold.get("pid")
        try:
            rolled = journal.recover(self._settings, log.warning)
        except (OSError, RuntimeError) as exc:
            log.error("maintenance holder pid %s is gone and its restore cannot be rolled "
                      "back: %s; the services stay held", pid, exc)
            return
        why = f"its holder, pid {pid}, ended without releasing it" + {
            journal.ROLLED_BACK: "; its unfinished restore was rolled back",
            journal.KEPT: "; its restore had placed all its data, which is kept",
        }.get(rolled, "")
        if self.hold.get("services"):
            self.end(why)
        self._path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return dict(self.hold)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
