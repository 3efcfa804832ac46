"""The hub's tenure record, var/run/hub.json: which hub process runs, since when, and
whether the last one ended cleanly. A hub that is SIGKILLed (by the guard, an OOM kill,
an operator), or exits from its watchdog, writes no clean end, so the next hub learns
that its predecessor was killed and leaves a trace: an incident file and a counted
restart of the hub itself, kept across hubs for the flap window.

Reading and writing never raise: on a full or read-only disk the hub runs on without
the record (it logs why), because the record is evidence, not a reason to stop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from unistack.runtime import write_atomic

log = logging.getLogger("unistack.hub")


class Predecessor(NamedTuple):
    """The hub that ran before this one and did not end cleanly."""

    pid: int
    started: float  # epoch seconds
    restarts: tuple[float, ...]  # epoch seconds of unclean ends within the window


class Tenure:
    def __init__(self, path: Path, window: float, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._window = window
        self._clock = clock
        self._record: dict[str, Any] = {}

    def begin(self, pid: int) -> Predecessor | None:
        """Record this hub as running; the predecessor if it was killed, else None."""
        now = self._clock()
        old = self._read()
        restarts = [t for t in old.get("restarts", []) if now - t <= self._window]
        killed = bool(old) and not old.get("ended") and old.get("pid") != pid
        if killed:
            restarts.append(now)
        self._record = {"pid": pid, "started": now, "ended": None, "restarts": restarts}
        self._write()
        if not killed:
            return None
        return Predecessor(int(old.get("pid", 0)), float(old.get("started", 0.0)),
                           tuple(restarts))

    def end(self) -> None:
        """This hub stops cleanly (SIGTERM from supervisord or `stop`)."""
        if self._record:
            self._record["ended"] = self._clock()
            self._write()

    def _read(self) -> dict[str, Any]:
        try:
            record = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("hub record %s unreadable (%s); treating the last hub as unknown",
                        self._path, exc)
            return {}
        return record if isinstance(record, dict) else {}

    def _write(self) -> None:
        try:
            write_atomic(self._path, json.dumps(self._record) + "\n")
        except OSError as exc:
            log.warning("hub record %s not written: %s", self._path, exc.strerror or exc)
