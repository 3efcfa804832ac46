"""The stack's own processes: found by UNISTACK_HOME and supervisord's pid file, never by name.

supervisord runs with the home's UNISTACK_HOME in its environment and writes its pid to
var/run/supervisord.pid; every program it spawns inherits that environment and gets
SUPERVISOR_PROCESS_NAME=<program> from supervisord. So /proc/<pid>/environ (readable as
root or the same user) names both the home and the service, even after supervisord is
gone (its children then run on as orphans). A CLI command of the same home carries
UNISTACK_HOME too, but never SUPERVISOR_PROCESS_NAME, so it is never mistaken for a service.

Redis is the exception: it rewrites its process title over its own argv and environ
memory, so its /proc environ no longer names the home. The guard therefore records
each program's pid and start tick in var/run/pids/<program> while supervisord runs
(`record`), and the scan adds every recorded process whose start tick still matches.

A pid is remembered with its start tick (field 22 of /proc/<pid>/stat): a signal goes only
to a process whose tick still matches, so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from unistack.runtime import write_atomic
from unistack.services import stop_order

PROC = Path("/proc")
SUPERVISORD = "supervisord"
GUARD = "hubguard"  # the event listener's supervisord name (supervisord.conf)
Report = Callable[[str], None]


class Owned(NamedTuple):
    """One live process of a home: its service (or "supervisord"), pid, group and tick."""

    service: str
    pid: int
    pgid: int
    ppid: int
    tick: int


def start_tick(pid: int, proc: Path = PROC) -> int:
    """The start tick of PID (clock ticks since boot), or 0 when it is gone or a zombie."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return 0 if fields[0] in ("Z", "X") else int(fields[19])


def _stat(pid: int, proc: Path) -> tuple[int, int, int] | None:
    """(ppid, pgid, tick) of a live PID, or None."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def environ(pid: int, proc: Path = PROC) -> dict[str, str]:
    """The environment PID was started with ({} when it is gone or not ours to read)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def supervisord_pid(home: Path, proc: Path = PROC) -> int:
    """The pid in var/run/supervisord.pid when that process is live and of HOME, else 0."""
    try:
        pid = int((home / "var" / "run" / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        return 0
    if _stat(pid, proc) is None or environ(pid, proc).get("UNISTACK_HOME") != str(home):
        return 0
    return pid


def pid_dir(home: Path) -> Path:
    return home / "var" / "run" / "pids"


def record(home: Path, pids: dict[str, int], proc: Path = PROC) -> None:
    """Remember each program's PID with its start tick (written only when it changed)."""
    folder = pid_dir(home)
    folder.mkdir(mode=0o700, exist_ok=True)
    for service, pid in pids.items():
        tick = start_tick(pid, proc)
        path = folder / service
        text = f"{pid} {tick}\n"
        with contextlib.suppress(OSError):
            if tick and (not path.exists() or path.read_text() != text):
                write_atomic(path, text)


def recorded(home: Path, proc: Path = PROC) -> list[Owned]:
    """The recorded processes that still run: same pid, same start tick."""
    found = []
    for path in sorted(pid_dir(home).glob("*")) if pid_dir(home).is_dir() else []:
        try:
            pid, tick = (int(field) for field in path.read_text().split())
        except (OSError, ValueError):
            continue
        stat = _stat(pid, proc)
        if stat and stat[2] == tick and pid != os.getpid():
            found.append(Owned(path.name, pid, stat[1], stat[0], tick))
    return found


def scan(home: Path, proc: Path = PROC) -> list[Owned]:
    """Every live process of HOME: supervisord (by its pid file), each program it spawned
    (by environ) and each recorded program (by pid file and start tick)."""
    daemon = supervisord_pid(home, proc)
    found = {p.pid: p for p in recorded(home, proc)}
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        env = environ(pid, proc)
        if env.get("UNISTACK_HOME") != str(home):
            continue
        service = SUPERVISORD if pid == daemon else env.get("SUPERVISOR_PROCESS_NAME")
        stat = _stat(pid, proc)
        if service and stat:
            found[pid] = Owned(service, pid, stat[1], stat[0], stat[2])
    return sorted(found.values(), key=lambda p: p.pid)


def leaders(owned: Iterable[Owned]) -> dict[str, Owned]:
    """The main process of each service: the one whose parent is not of the same service
    (Redis forks a child to save; that child is part of the service, not its main pid)."""
    owned = list(owned)
    pids = {p.pid: p.service for p in owned}
    return {p.service: p for p in owned if pids.get(p.ppid) != p.service}


def alive(process: Owned, proc: Path = PROC) -> bool:
    """PROCESS still runs (same pid, same start tick)."""
    return start_tick(process.pid, proc) == process.tick


def _signal_group(process: Owned, signum: int) -> None:
    """Signal PROCESS's group (its service's children too) if it is still that process."""
    if not alive(process):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process.pgid == process.pid:
            os.killpg(process.pgid, signum)
        else:
            os.kill(process.pid, signum)


def _wait_gone(processes: list[Owned], deadline: float) -> bool:
    while any(alive(p) for p in processes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _order(owned: list[Owned]) -> list[list[Owned]]:
    """Processes grouped by service: supervisord, the guard, then the registry's stop order
    (the hub first, dependents before their dependencies)."""
    names = [SUPERVISORD, GUARD, *[spec.name for spec in stop_order()]]
    known = [[p for p in owned if p.service == name] for name in names]
    rest = [p for p in owned if p.service not in names]
    return [group for group in [*known, rest] if group]


def terminate(owned: list[Owned], timeout: float, report: Report) -> list[Owned]:
    """Stop OWNED in dependency order: SIGTERM each service's group, wait within its share
    of TIMEOUT, then SIGKILL the group. Returns the processes still alive (none, normally)."""
    groups = _order(owned)
    deadline = time.monotonic() + timeout
    for i, group in enumerate(groups):
        begun = time.monotonic()
        share = max((deadline - begun) / (len(groups) - i), 0.5)
        for process in group:
            _signal_group(process, signal.SIGTERM)
        if not _wait_gone(group, begun + share):
            for process in group:
                _signal_group(process, signal.SIGKILL)
            _wait_gone(group, time.monotonic() + 2.0)
        pids = ", ".join(str(p.pid) for p in group)
        report(f"  {group[0].service:<12} stopped (pid {pids}, {time.monotonic() - begun:.2f} s)")
    return [p for p in owned if alive(p)]


def now_tick() -> int:
    """The current time in start ticks: a process started after this has a larger tick."""
    uptime = float((PROC / "uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def started_at(tick: int) -> float:
    """The wall-clock time of a start tick."""
    uptime = float((PROC / "uptime").read_text().split()[0])
    return time.time() - uptime + tick / os.sysconf("SC_CLK_TCK")


def end_orphans(home: Path, timeout: float, report: Report) -> list[Owned]:
    """Stop every process of HOME left running without supervisord (its children after a
    kill -9), in dependency order; the one implementation for start, stop and the guard.
    Returns what is still alive afterwards."""
    if supervisord_pid(home):
        return []
    owned = scan(home)
    if not owned:
        return []
    described = ", ".join(f"{p.service} (pid {p.pid})" for p in leaders(owned).values())
    report(f"  running without supervisord: {described}; stopping them in dependency order")
    return terminate(owned, timeout, report)
