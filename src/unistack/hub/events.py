"""The hub's event log: every state change as `{ts, service, kind, severity, detail}`.

A bounded ring in memory; listeners (the alert router, persistence) subscribe to it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class EventLog:
    def __init__(self, capacity: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._clock = clock
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def emit(self, service: str, kind: str, severity: str, detail: str, **extra: Any) -> Event:
        """Record one event; EXTRA adds fields such as `incident` (a file) or `cause`."""
        event = {"ts": self._clock(), "service": service, "kind": kind,
                 "severity": severity, "detail": detail, **extra}
        with self._lock:
            self._ring.append(event)
        for listener in self._listeners:
            listener(event)
        return event

    def preload(self, history: list[Event]) -> None:
        """Put events of earlier hubs before this hub's own (which are newer)."""
        with self._lock:
            current = list(self._ring)
            known = {(e["ts"], e["service"], e["kind"]) for e in current}
            older = [e for e in history if (e["ts"], e["service"], e["kind"]) not in known]
            self._ring.clear()
            self._ring.extend(sorted(older, key=lambda e: e["ts"]) + current)

    def recent(self, limit: int = 100) -> list[Event]:
        with self._lock:
            return list(self._ring)[-limit:]
