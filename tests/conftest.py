"""Fixtures shared by the integration tests: a whole stack in a temp UNISTACK_HOME on
free loopback ports, driven through the real CLI, and always stopped afterwards.

The stack itself, ports, waiting and process ages come from the harness package
(src/harness), which the benchmarks share.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.stacks import Stack, make_home, stack_environment

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A stack in a new temp home on fresh ports, not started; stopped and removed after."""
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
