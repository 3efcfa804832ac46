"""The control lock: a real flock held by another process makes a caller wait or get Busy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.waiting import wait_for
from unistack.lock import Busy, control_lock, describe, lock_path

HOLD = """
import sys, time
from pathlib import Path
from unistack.lock import control_lock
with control_lock(Path(sys.argv[1]), "start", True, print):
    print("held", flush=True)
    sys.stdin.readline()
"""


def hold(home: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_no_wait_is_busy_naming_the_holder(tmp_path: Path) -> None:
    holder = hold(tmp_path)
    try:
        with pytest.raises(Busy, match=rf"another start \(pid {holder.pid}, since"), \
                control_lock(tmp_path, "stop", False, print):
            pass
    finally:
        holder.communicate("\n", timeout=5)
    with control_lock(tmp_path, "stop", False, print):  # free again once the holder exits
        assert lock_path(tmp_path).read_text().split()[1] == "stop"


def test_a_waiting_caller_says_for_whom_and_gets_it_when_released(tmp_path: Path) -> None:
    holder = hold(tmp_path)
    said: list[str] = []
    waiter = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path\n"
         "from unistack.lock import control_lock\n"
         "with control_lock(Path(sys.argv[1]), 'stop', True, print): print('got it')",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert waiter.stdout is not None
    said.append(waiter.stdout.readline())
    assert said[0].startswith(f"another start (pid {holder.pid}, since") and "waiting" in said[0]
    assert waiter.poll() is None  # still waiting while the holder holds it
    holder.communicate("\n", timeout=5)
    assert waiter.communicate(timeout=5)[0] == "got it\n"


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = hold(tmp_path)
    holder.kill()
    holder.wait(5)
    wait_for(lambda: holder.poll() is not None)
    with control_lock(tmp_path, "start", False, print):
        pass


def test_describe_reads_the_holder_line() -> None:
    assert describe("42 restart-redis 0\n") == "restart-redis (pid 42, since 00:00:00 UTC)"
    assert describe("") == "command (holder unknown)"


def test_a_caller_that_looks_before_the_holder_wrote_its_line_still_names_it(
        tmp_path: Path) -> None:
    """The holder takes the lock, then writes its line: a caller looking in between saw an
    empty file and said "holder unknown" (found in CI). It looks again."""
    path = lock_path(tmp_path)
    path.parent.mkdir(parents=True)
    slow = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(0.1)\n"
         "os.pwrite(fd, f'{os.getpid()} start 0\\n'.encode(), 0); sys.stdin.readline()",
         str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout is not None and slow.stdout.readline() == "locked\n"
        with pytest.raises(Busy, match=rf"another start \(pid {slow.pid}, since"), \
                control_lock(tmp_path, "stop", False, print):
            pass
    finally:
        slow.communicate("\n", timeout=5)


def test_a_released_lock_names_nobody(tmp_path: Path) -> None:
    with control_lock(tmp_path, "start", False, print):
        assert lock_path(tmp_path).read_text().split()[1] == "start"
    assert lock_path(tmp_path).read_text() == ""
