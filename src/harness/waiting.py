"""Waiting for something to become true: the one poll loop of the tests and benchmarks,
and a watch that notes in a thread when something first held."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What was awaited did not happen in time. An AssertionError, so that a test that
    times out fails as a broken expectation; benchmarks catch it and report it."""


def poll(condition: Callable[[], T | None], timeout: float, interval: float) -> T | None:
    """As wait_for(), but return None once TIMEOUT seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
    return value


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0,
             interval: float = 0.005, what: str = "condition") -> T:
    """Call CONDITION every INTERVAL seconds until it returns something truthy, and return
    that value; raise WaitTimeout naming WHAT once TIMEOUT seconds have passed."""
    value = poll(condition, timeout, interval)
    if not value:
        raise WaitTimeout(f"{what} did not happen within {timeout:g} s")
    return value


def moment_when(condition: Callable[[], object], timeout: float, interval: float,
                what: str) -> float:
    """Wait as wait_for does; return time.perf_counter() at the check that first held,
    for benchmarks that time how long something took."""
    wait_for(condition, timeout, interval, what)
    return time.perf_counter()


class Watch:
    """A daemon thread that checks CONDITION every INTERVAL seconds, for LIMIT seconds at
    most, and notes CLOCK() when it first holds: for a benchmark that times one thing while
    it waits for another."""

    def __init__(self, condition: Callable[[], object], interval: float,
                 limit: float = math.inf, clock: Callable[[], float] = time.perf_counter,
                 ) -> None:
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(condition, interval, clock, time.monotonic() + limit),
            name="watch", daemon=True)
        self._thread.start()

    def _run(self, condition: Callable[[], object], interval: float,
             clock: Callable[[], float], deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            if condition():
                self.at = clock()
                return
            self._stop.wait(interval)

    def since(self, start: float) -> float | None:
        """Stop watching; seconds from START (a CLOCK() reading) to the first check that
        held, or None if none did."""
        self._stop.set()
        self._thread.join()
        return self.at - start if self.at is not None else None
