"""Fixtures shared by the integration tests: a whole stack in a temp UNISTACK_HOME on
free loopback ports, driven through the real CLI, and always stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from unistack.configkeys import PORT_KEYS

ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0,
             interval: float = 0.005, what: str = "condition") -> Any:
    """Poll CONDITION until it returns something truthy (returned) or TIMEOUT passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(interval)


def process_age(pid: int) -> float:
    """Seconds since PID started, from its start tick and /proc/uptime. psutil's
    create_time() adds the boot time in whole seconds and reads up to 1 s too old, so a
    process it calls 1.2 s old may be younger than supervisord's startsecs."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start child processes; every one is killed and reaped afterwards."""
    children: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(5)


def free_ports(count: int) -> list[int]:
    """COUNT distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_environment(home: Path) -> dict[str, str]:
    """The process environment of a stack rooted at HOME on fresh ports."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UNISTACK_", "REDIS_", "PROMETHEUS_", "HUB_", "ML_"))}
    env.update(dict(zip(PORT_KEYS, map(str, free_ports(len(PORT_KEYS))), strict=True)))
    env["UNISTACK_HOME"] = str(home)
    return env


@dataclass
class Stack:
    home: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "unistack", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def port(self, key: str) -> int:
        return int(self.env[key])

    def processes(self) -> list[psutil.Process]:
        """Every live process whose command line or cwd belongs to this stack's home."""
        found = []
        for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
            info = proc.info
            text = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
            if str(self.home) in text and info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        return found

    def cleanup(self) -> None:
        self.cli("stop", timeout=30)
        for proc in self.processes():
            proc.kill()


def make_home() -> Path:
    # Short paths: the supervisord socket path must fit in 107 bytes.
    return Path(tempfile.mkdtemp(prefix="us-", dir="/tmp"))


@pytest.fixture
def stack() -> Iterator[Stack]:
    home = make_home()
    running = Stack(home, stack_environment(home))
    try:
        yield running
    finally:
        running.cleanup()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def redis_home() -> Iterator[Any]:
    """A home with only its redis-server running (tests/backup_support.py)."""
    from tests.backup_support import new_redis_home

    made = new_redis_home()
    made.start_redis()
    try:
        yield made
    finally:
        made.cleanup()
