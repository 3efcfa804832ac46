"""The locks of one UNISTACK_HOME: one start, stop, restart or restore at a time (the
control lock), one backup, prune or restore at a time (the backup lock).

An fcntl.flock on var/run/control.lock: the kernel drops it when its holder exits, even
by kill -9, so a stale lock cannot exist. The holder writes "pid command since" into the
file, so a second caller can say whom it waits for, and empties it when it is done.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Report = Callable[[str], None]
_LINE_WAIT = 0.5  # seconds a caller waits for a new holder to write its line


class Busy(Exception):
    """Another command holds the control lock and the caller would not wait."""


def lock_path(home: Path, name: str = "control") -> Path:
    return home / "var" / "run" / f"{name}.lock"


def describe(text: str) -> str:
    """'start (pid N, since HH:MM:SS UTC)' from the lock file's "pid command since"."""
    try:
        pid, command, since = text.split()
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(float(since)))
    except ValueError:
        return "command (holder unknown)"
    return f"{command} (pid {pid}, since {stamp})"


@contextmanager
def control_lock(home: Path, command: str, wait: bool, report: Report,
                 name: str = "control") -> Iterator[None]:
    """Hold HOME's lock NAME (the control lock, or the backup lock that backups, prunes
    and restores take) for COMMAND; wait for it (saying so) or raise Busy."""
    path = lock_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise Busy(f"busy: another {holder} holds {path}; try again later") from None
            report(f"another {holder} is running; waiting")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command} {time.time():.3f}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # empty: free, or its next holder is writing its line
    finally:
        os.close(fd)  # closing drops the lock


def _holder(fd: int) -> str:
    """Who holds the lock, from its line. The holder writes the line just after it takes
    the lock, so a caller that looks in between finds the file empty: it looks again
    for up to _LINE_WAIT seconds (found under load: "another command (holder unknown)")."""
    deadline = time.monotonic() + _LINE_WAIT
    text = os.pread(fd, 200, 0).decode(errors="replace")
    while not text.strip() and time.monotonic() < deadline:
        time.sleep(0.005)
        text = os.pread(fd, 200, 0).decode(errors="replace")
    return describe(text)
