"""The hub's guard: a supervisord event listener that watches the watcher.

The hub exits by itself when its loop is stale (its watchdog thread), but a hub that is
stopped or frozen as a whole (SIGSTOP, a stuck interpreter) cannot. The guard probes the
hub's `/health` every second; after GUARD_FAILURES failures in a row of a hub that is
past its start, it kills the hub's process group and supervisord respawns it. The new
hub adopts the running services, so nothing else restarts.

supervisord speaks to listeners over stdin/stdout: the guard answers its TICK events and
does its own timing with select(), so it needs nothing faster than TICK_5 from supervisord.

Each second it also records every program's pid and start tick in var/run/pids/
(unistack.processes.record): Redis hides its environment behind its process title, and
these records are how its process is still found once supervisord is gone.

It also watches supervisord: when supervisord dies (kill -9) the guard's stdin closes,
and the programs it spawned run on as orphans that nothing supervises. The guard then
stops them in dependency order, the same way `start` and `stop` do
(unistack.processes.end_orphans), so no hub or engine runs on unsupervised. A closed
stdin while supervisord still runs is an ordinary shutdown: the guard just exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from unistack.config import ConfigError, Settings, load_settings
from unistack.probes import HttpProbe
from unistack.processes import end_orphans, record, supervisord_pid
from unistack.supervisor import SupervisorClient, SupervisorError

GUARD_INTERVAL = 1.0  # seconds between probes of the hub
GUARD_FAILURES = 3  # failures in a row before the hub is killed
_GRACE = 5.0  # a hub younger than this is still starting


def _say(text: str) -> None:
    # stderr is a pipe to supervisord: once supervisord is dead, writing to it fails.
    with contextlib.suppress(OSError):
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


def record_pids(settings: Settings, supervisor: SupervisorClient) -> None:
    """Remember the pid and start tick of every program supervisord runs now."""
    try:
        supervised = supervisor.processes()
    except SupervisorError:
        return
    record(settings.unistack_home, {name: info.pid for name, info in supervised.items()
                                    if info.pid})


def supervisord_gone(settings: Settings) -> int:
    """stdin closed: if supervisord is dead, stop its orphans. Returns the exit code."""
    # A supervisord that is shutting down closes the pipe too; give it a moment to be
    # either still there (an ordinary stop: nothing to do) or gone.
    deadline = time.monotonic() + 0.5
    while supervisord_pid(settings.unistack_home) and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisord_pid(settings.unistack_home):
        return 0
    say = _appender(settings.log_dir / "hubguard.log")
    say("supervisord is gone; stopping the processes it left running")
    left = end_orphans(settings.unistack_home, settings.stop_timeout, say)
    if left:
        say(f"still running after SIGKILL: {[p.pid for p in left]}")
        return 1
    say("every process of this home is stopped; `start` starts the stack again")
    return 0


def _appender(path: Path) -> Callable[[str], None]:
    """Report lines appended to PATH itself: stderr went to supervisord, now dead."""
    def say(text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with contextlib.suppress(OSError), path.open("a") as log:
            log.write(f"{stamp} unistack hub guard: {text.strip()}\n")
    return say


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return 2
    supervisor = SupervisorClient(settings.supervisor_socket, timeout=2.0)
    guard = Guard(HttpProbe(settings.hub_port, "/health", timeout=GUARD_INTERVAL / 2),
                  supervisor)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    next_check = time.monotonic() + GUARD_INTERVAL
    while True:
        wait = max(0.0, next_check - time.monotonic())
        readable, _, _ = select.select([sys.stdin], [], [], wait)
        if readable and not _answer_event(sys.stdin, sys.stdout):
            return supervisord_gone(settings)
        if time.monotonic() >= next_check:
            guard.check()
            record_pids(settings, supervisor)
            next_check = time.monotonic() + GUARD_INTERVAL


if __name__ == "__main__":
    sys.exit(main())
