"""Incident files: what a hung or failed service looked like just before the hub acted.

Each file under var/log/incidents/ holds the verdict, the process's /proc state and
wait channel, its children, the tail of its log, a Python stack dump for our own Python
services (they register faulthandler on SIGUSR1), and GPU state where nvidia-smi exists.
Every line is redacted; the file is written atomically with mode 0600. Capture is
bounded (well under a second) because the hub waits for it before it kills.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from unistack.logs import tail_lines
from unistack.runtime import write_atomic

log = logging.getLogger("unistack.hub")

_HELD = 50  # incident files kept in memory while the disk refuses them
_STACK_DUMP_WAIT = 0.3  # seconds a Python service gets to write its stack dump
_GPU_TIMEOUT = 2.0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError as exc:
        return f"(unreadable: {exc.strerror or exc})"


def process_report(pid: int, proc: Path = Path("/proc")) -> str:
    """The kernel's view of PID: state, wait channel, kernel stack, children."""
    if pid <= 0:
        return "no process"
    base = proc / str(pid)
    status = _read(base / "status")
    keep = ("Name", "State", "PPid", "Threads", "VmRSS", "voluntary_ctxt_switches",
            "nonvoluntary_ctxt_switches")
    lines = [line for line in status.splitlines() if line.split(":", 1)[0] in keep]
    children = _read(base / "task" / str(pid) / "children")
    return "\n".join([
        *lines,
        f"wchan: {_read(base / 'wchan')}",
        f"children: {children or 'none'}",
        "kernel stack:",
        _read(base / "stack"),
    ])


def gpu_report() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU (nvidia-smi not found)"
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True,
                              timeout=_GPU_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return f"nvidia-smi did not answer within {_GPU_TIMEOUT:g} s"
    return done.stdout.strip() or done.stderr.strip()


class Retention(NamedTuple):
    """Incident files kept: none older than MAX_AGE seconds, at most MAX_FILES of them."""

    max_age: float
    max_files: int


class IncidentRecorder:
    """Writes one incident file per capture, named by time and service, and keeps the
    directory bounded by age and count (the oldest go first)."""

    def __init__(self, directory: Path, log_dir: Path, lines: int,
                 redact: Callable[[str], str], retention: Retention | None = None) -> None:
        self._directory = directory
        self._log_dir = log_dir
        self._lines = lines
        self._redact = redact
        self._retention = retention or Retention(30 * 86400, 500)
        self._unwritten: dict[Path, str] = {}
        self._clock: Callable[[], float] = time.time

    def prune(self) -> list[Path]:
        """Delete incident files past the retention; the ones deleted."""
        try:
            files = sorted((p for p in self._directory.glob("*.txt") if p.is_file()),
                           key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        now, limit = self._clock(), self._retention
        doomed = [p for p in files if now - p.stat().st_mtime > limit.max_age]
        kept = [p for p in files if p not in doomed]
        doomed += kept[:max(0, len(kept) - limit.max_files)]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def capture(self, service: str, pid: int, verdict: str, python: bool) -> Path:
        now = self._clock()
        processes = process_report(pid)
        log_file = self._log_dir / f"{service}.log"
        dumped = python and pid > 0 and self._ask_for_stack_dump(log_file, pid)
        log = "\n".join(tail_lines(log_file, self._lines))
        stamp = datetime.fromtimestamp(now).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        sections = [
            f"incident: {service} at {datetime.fromtimestamp(now).isoformat()}",
            f"verdict: {verdict}",
            f"pid: {pid}",
            "",
            "== process", processes,
            "",
            f"== last {self._lines} log lines of {service}"
            + (" (a Python stack dump was requested with SIGUSR1)" if dumped else ""),
            log,
            "",
            "== GPU", gpu_report(),
        ]
        path = self._directory / f"{stamp}-{service}.txt"
        self._unwritten[path] = self._redact("\n".join(sections)) + "\n"
        self.flush()
        return path

    def flush(self) -> None:
        """Write incident files held in memory; on a full or read-only disk they stay
        held (at most _HELD of them, the newest) until a later capture or flush."""
        for path, text in list(self._unwritten.items()):
            try:
                write_atomic(path, text)
            except OSError as exc:
                log.error("incident file %s not written (%s); held in memory", path,
                          exc.strerror or exc)
                break
            del self._unwritten[path]
        while len(self._unwritten) > _HELD:
            del self._unwritten[next(iter(self._unwritten))]
        self.prune()

    def read(self, name: str) -> str | None:
        """The incident file NAME (a bare file name), held in memory or on disk; None when
        there is no such incident file."""
        path = self._directory / name
        if path.parent != self._directory or path.suffix != ".txt":
            return None
        if path in self._unwritten:
            return self._unwritten[path]
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None

    def unwritten(self) -> list[str]:
        """Incident files captured but not on disk yet (the disk is full)."""
        return [str(path) for path in self._unwritten]

    def _ask_for_stack_dump(self, log: Path, pid: int) -> bool:
        """SIGUSR1 makes faulthandler write every thread's stack to the service's log;
        there is no acknowledgement, so wait (bounded) until the log stops growing."""
        size = log.stat().st_size if log.exists() else 0
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            return False
        deadline = time.monotonic() + _STACK_DUMP_WAIT
        while time.monotonic() < deadline:
            grown = log.stat().st_size if log.exists() else 0
            if grown > size:
                size = grown
                deadline = min(deadline, time.monotonic() + 0.05)
            time.sleep(0.01)
        return True
