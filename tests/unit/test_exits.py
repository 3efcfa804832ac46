"""hub.exits: the pidfd watcher posts a watched process's exit at once."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from harness.waiting import wait_for
from unistack.hub.exits import ExitWatcher


class Posted:
    def __init__(self) -> None:
        self.exits: list[tuple[str, int]] = []
        self.at: list[float] = []

    def __call__(self, service: str, pid: int) -> None:
        self.at.append(time.monotonic())
        self.exits.append((service, pid))




@pytest.fixture
def posted() -> Posted:
    return Posted()


@pytest.fixture
def watcher(posted: Posted) -> Iterator[ExitWatcher]:
    running = ExitWatcher(posted)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait(5)


def sleep_child(children: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["sleep", "60"])
    children.append(child)
    return child


def test_a_killed_child_is_posted_promptly(
    watcher: ExitWatcher, posted: Posted, children: list[subprocess.Popen[bytes]]
) -> None:
    child = sleep_child(children)
    watcher.watch("redis", child.pid)
    time.sleep(0.05)  # give it a chance to post too early (it must not)
    assert posted.exits == []
    killed_at = time.monotonic()
    child.kill()
    wait_for(lambda: posted.exits, timeout=1.0)
    assert posted.exits == [("redis", child.pid)]
    assert posted.at[0] - killed_at < 1.0


def test_each_watched_process_is_posted_under_its_service(
    watcher: ExitWatcher, posted: Posted, children: list[subprocess.Popen[bytes]]
) -> None:
    first, second = sleep_child(children), sleep_child(children)
    watcher.watch("redis", first.pid)
    watcher.watch("prometheus", second.pid)
    second.kill()
    wait_for(lambda: posted.exits, timeout=1.0)
    first.kill()
    wait_for(lambda: len(posted.exits) == 2, timeout=1.0)
    assert posted.exits == [("prometheus", second.pid), ("redis", first.pid)]


def test_watching_an_already_dead_pid_posts_at_once(
    watcher: ExitWatcher, posted: Posted, children: list[subprocess.Popen[bytes]]
) -> None:
    child = subprocess.Popen(["true"])
    child.wait(5)  # exited and reaped: the pid is gone
    watcher.watch("redis", child.pid)
    wait_for(lambda: posted.exits, timeout=1.0)
    assert posted.exits == [("redis", child.pid)]


def test_stop_ends_the_thread(posted: Posted) -> None:
    before = set(threading.enumerate())
    running = ExitWatcher(posted)
    running.start()
    (thread,) = [t for t in threading.enumerate() if t not in before]
    assert thread.name == "exit-watcher"
    running.stop()
    thread.join(1.0)
    assert not thread.is_alive()
