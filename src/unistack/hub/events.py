"""The hub's event log: every state change as an `Event` (unistack.event).

A bounded ring in memory; listeners (the alert router, persistence) subscribe to it, and
readers of the live stream wait on it for what is newer than the last id they saw, or
for a change of any service's status (a revision: a state can change without an event,
e.g. a service ready again inside an incident that is not resolved yet).
Each event gets an id that only grows, across hub restarts too: the larger of the last
id plus one and its time in microseconds, so a client's Last-Event-ID stays meaningful.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from unistack.event import Event, Kind, Severity, event


def _id_of(ts: float) -> int:
    return int(ts * 1_000_000)


class EventLog:
    def __init__(self, capacity: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._changed = threading.Condition()
        self._clock = clock
        self._last_id = 0
        self._revision = 0  # of the services' status, bumped by status_changed()
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def emit(self, service: str, kind: Kind, severity: Severity, detail: str,
             **extra: Any) -> Event:
        """Record one event; EXTRA adds fields such as `incident` (a file) or `cause`."""
        ts = self._clock()
        with self._changed:
            self._last_id = max(self._last_id + 1, _id_of(ts))
            record = event(service, kind, severity, detail, ts, id=self._last_id, **extra)
            self._ring.append(record)
            self._changed.notify_all()
        for listener in self._listeners:
            listener(record)
        return record

    def preload(self, history: list[Event]) -> None:
        """Put events of earlier hubs before this hub's own (which are newer)."""
        with self._changed:
            current = list(self._ring)
            known = {(e["ts"], e["service"], e["kind"]) for e in current}
            older = [e for e in history if (e["ts"], e["service"], e["kind"]) not in known]
            for old in older:
                old.setdefault("id", _id_of(old["ts"]))  # stored before events had ids
                self._last_id = max(self._last_id, old["id"])
            self._ring.clear()
            self._ring.extend(sorted(older, key=lambda e: e["id"]) + current)
            self._changed.notify_all()

    def recent(self, limit: int = 100) -> list[Event]:
        with self._changed:
            return list(self._ring)[-limit:]

    def after(self, last_id: int, limit: int = 1000) -> list[Event]:
        """Events with an id above LAST_ID, oldest first (at most LIMIT, the newest)."""
        with self._changed:
            return [e for e in self._ring if e["id"] > last_id][-limit:]

    @property
    def revision(self) -> int:
        return self._revision

    def status_changed(self) -> None:
        """Some service's status changed: wake the readers of the live stream."""
        with self._changed:
            self._revision += 1
            self._changed.notify_all()

    def wait(self, last_id: int, revision: int, timeout: float) -> None:
        """Wait up to TIMEOUT seconds for an event newer than LAST_ID or a status change
        past REVISION."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._newest() > last_id or self._revision != revision, timeout)

    def _newest(self) -> int:
        return self._ring[-1]["id"] if self._ring else 0
