"""The snapshot behind `/api/status`: the hub's `/status` and `/alerts` documents fetched
together, at most once per MAX_AGE per process, so many open pages cost the hub one
request pair per half second. An unreachable hub is an answer too (shown plainly). The
document is kept as JSON too, so a request serves bytes without encoding them again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from unistack.dashboard.upstream import Hub
from unistack.hub.client import HubUnreachable

MAX_AGE = 0.5


class Snapshot:
    """The cached `{"status", "alerts", "fetched"}` (or `{"hub": "unreachable", ...}`)."""

    def __init__(self, hub: Hub, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._hub, self._max_age = hub, max_age
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {}
        self._encoded = b"{}"
        self._taken = -float("inf")

    def get(self) -> dict[str, Any]:
        return self._fresh()[0]

    def encoded(self) -> bytes:
        """The same document as JSON."""
        return self._fresh()[1]

    def _fresh(self) -> tuple[dict[str, Any], bytes]:
        # One fetch at a time: concurrent requests wait for it instead of repeating it.
        with self._lock:
            if self._clock() - self._taken >= self._max_age:
                self._document = self._fetch()
                self._encoded = json.dumps(self._document).encode()
                self._taken = self._clock()
            return self._document, self._encoded

    def _fetch(self) -> dict[str, Any]:
        fetched = self._wall()
        try:
            code, status = self._hub.get("/status")
            if code != 200 or not isinstance(status, dict):
                raise HubUnreachable(f"hub answered GET /status with HTTP {code}")
            alerts = self._alerts()
        except HubUnreachable as exc:
            return {"hub": "unreachable", "error": str(exc), "fetched": fetched}
        return {"status": status, "alerts": alerts, "fetched": fetched}

    def _alerts(self) -> dict[str, Any]:
        """The hub's /alerts document; its absence alone is no reason to show nothing."""
        code, alerts = self._hub.get("/alerts")
        if code != 200 or not isinstance(alerts, dict):
            return {"error": f"hub answered GET /alerts with HTTP {code}"}
        return alerts
