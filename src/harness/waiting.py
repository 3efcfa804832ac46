"""Waiting for something to become true: the one poll loop of the tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What was awaited did not happen in time. An AssertionError, so that a test that
    times out fails as a broken expectation; benchmarks catch it and report it."""


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0,
             interval: float = 0.005, what: str = "condition") -> T:
    """Call CONDITION every INTERVAL seconds until it returns something truthy, and return
    that value; raise WaitTimeout naming WHAT once TIMEOUT seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)
    return value


def moment_when(condition: Callable[[], object], timeout: float, interval: float,
                what: str) -> float:
    """Wait as wait_for does; return time.perf_counter() at the check that first held,
    for benchmarks that time how long something took."""
    wait_for(condition, timeout, interval, what)
    return time.perf_counter()
