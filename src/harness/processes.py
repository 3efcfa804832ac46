"""The processes of a stack: how old one is, the CPU it used, whether it is gone, finding
and ending all of one home's processes; and busy loops that load the machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from harness.waiting import wait_for


def uptime() -> float:
    """Seconds since the machine booted, from /proc/uptime."""
    return float(Path("/proc/uptime").read_text().split()[0])


def process_age(pid: int) -> float:
    """Seconds since PID started, from its start tick and /proc/uptime; 0.0 if it is gone.

    psutil's create_time() adds the boot time in whole seconds and reads up to 1 s too
    old, so a process it calls 1.2 s old may be younger than supervisord's startsecs.
    """
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime() - ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(*processes: psutil.Process, children: bool = False) -> float:
    """User and system CPU seconds of PROCESSES (and, with CHILDREN, of their children
    that have been waited for); 0 for a process that is gone."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
            if children:
                total += times.children_user + times.children_system
    return total


BUSY_LOOP = ("import sys, time\nend = time.monotonic() + float(sys.argv[1])\n"
             "while time.monotonic() < end:\n    pass\n")


def busy_loop(seconds: float, *marks: str) -> subprocess.Popen[bytes]:
    """A Python process that keeps one core busy for SECONDS, then exits; MARKS only stand
    in its command line (a home there makes it one of processes_of(home))."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds), *marks])


def gone(pid: int) -> bool:
    """Whether PID has exited (a zombie counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def end_process(pid: int) -> None:
    """SIGCONT and SIGKILL PID if it still lives, so that nothing is left stopped; wait
    until it is gone."""
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            process.resume()
            process.kill()
    wait_for(lambda: gone(pid), 10.0, 0.01, f"end of process {pid}")


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process with HOME in its command line or working directory: the stack,
    and anything else started for it (a development server, chromium with its profile)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if str(home) in text and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def kill_leftovers(home: Path, say: Callable[[str], None] = _say) -> None:
    """SIGKILL every process of HOME, supervisord first so that it respawns nothing;
    SAY tells which pids were killed."""
    for _ in range(20):
        found = processes_of(home)
        if not found:
            return
        say(f"  killing leftovers: {[p.pid for p in found]}")
        for proc in sorted(found, key=lambda p: "supervisord" not in str(p.info["cmdline"])):
            # A process that exited between the search and the kill is what we wanted.
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(found, timeout=2.0)
