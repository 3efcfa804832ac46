"""The hub's guard: a supervisord event listener that watches the watcher.

The hub exits by itself when its loop is stale (its watchdog thread), but a hub that is
stopped or frozen as a whole (SIGSTOP, a stuck interpreter) cannot. The guard probes the
hub's `/health` every second; after GUARD_FAILURES failures in a row of a hub that is
past its start, it kills the hub's process group and supervisord respawns it. The new
hub adopts the running services, so nothing else restarts.

supervisord speaks to listeners over stdin/stdout: the guard answers its TICK events and
does its own timing with select(), so it needs nothing faster than TICK_5 from supervisord.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from typing import TextIO

from unistack.config import ConfigError, load_settings
from unistack.probes import HttpProbe
from unistack.supervisor import SupervisorClient, SupervisorError

GUARD_INTERVAL = 1.0  # seconds between probes of the hub
GUARD_FAILURES = 3  # failures in a row before the hub is killed
_GRACE = 5.0  # a hub younger than this is still starting


def _say(text: str) -> None:
    print(f"unistack hub guard: {text}", file=sys.stderr, flush=True)


class Guard:
    def __init__(self, probe: HttpProbe, supervisor: SupervisorClient) -> None:
        self._probe = probe
        self._supervisor = supervisor
        self._failures = 0

    def check(self) -> None:
        """One probe; kill the hub after GUARD_FAILURES failures in a row."""
        result = self._probe.check()
        if result.ok:
            self._failures = 0
            return
        try:
            hub = self._supervisor.processes().get("hub")
        except SupervisorError:
            return
        if hub is None or hub.state != "RUNNING" or time.time() - hub.since < _GRACE:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= GUARD_FAILURES:
            _say(f"hub pid {hub.pid} failed /health {self._failures} times in a row "
                 f"({result.detail}); killing it so supervisord restarts it")
            self._failures = 0
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hub.pid, signal.SIGKILL)


def _answer_event(stdin: TextIO, stdout: TextIO) -> bool:
    """Read one event and acknowledge it; False when supervisord closed the pipe."""
    header = stdin.readline()
    if not header:
        return False
    fields = dict(token.split(":", 1) for token in header.split())
    stdin.read(int(fields.get("len", "0")))
    stdout.write("RESULT 2\nOK")
    stdout.write("READY\n")
    stdout.flush()
    return True


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return 2
    guard = Guard(HttpProbe(settings.hub_port, "/health", timeout=GUARD_INTERVAL / 2),
                  SupervisorClient(settings.supervisor_socket, timeout=2.0))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    next_check = time.monotonic() + GUARD_INTERVAL
    while True:
        wait = max(0.0, next_check - time.monotonic())
        readable, _, _ = select.select([sys.stdin], [], [], wait)
        if readable and not _answer_event(sys.stdin, sys.stdout):
            return 0
        if time.monotonic() >= next_check:
            guard.check()
            next_check = time.monotonic() + GUARD_INTERVAL


if __name__ == "__main__":
    sys.exit(main())
