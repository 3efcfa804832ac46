"""Running a benchmark script: its error, its progress lines, its argparse types, and the
main() every benchmark shares (SIGTERM unwinds, a failure prints one line and exits 1)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from harness.waiting import WaitTimeout


class BenchmarkError(Exception):
    """A run could not be measured; the message says what broke."""


def progress(text: str) -> None:
    """One progress line on stderr, so that stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def positive(text: str) -> int:
    """An argparse type: a whole number above zero (runs, trials, seconds)."""
    value = int(text) if text.isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def whole(text: str) -> int:
    """An argparse type: a whole number, zero allowed."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero, fractions allowed."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def run_benchmark(name: str, body: Callable[[], None],
                  failures: tuple[type[BaseException], ...] = ()) -> int:
    """Call BODY (which measures and prints the report) as a script's main() does.

    SIGTERM unwinds like Ctrl-C, so the benchmark's finally blocks stop what it started.
    A BenchmarkError, a WaitTimeout or one of FAILURES prints "NAME benchmark: message"
    on stderr and gives exit status 1; otherwise 0.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    caught: tuple[type[BaseException], ...] = (BenchmarkError, WaitTimeout, *failures)
    try:
        body()
    except caught as exc:
        print(f"{name} benchmark: {exc}", file=sys.stderr)
        return 1
    return 0
