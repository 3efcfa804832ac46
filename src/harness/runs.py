"""Running a benchmark script: its error, its progress lines, its commands, its trials,
its argparse types, and the main() every benchmark shares (SIGTERM unwinds, a failure
prints one line and exits 1, the report is a text or JSON)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from harness.waiting import WaitTimeout

T = TypeVar("T")


class BenchmarkError(Exception):
    """A run could not be measured; the message says what broke."""


def check_exit(what: str, process: subprocess.CompletedProcess[str] | subprocess.Popen[str],
               ok: tuple[int, ...] = (0,), timeout: float = 30.0) -> None:
    """Raise BenchmarkError naming WHAT with its output (stderr, else stdout) unless PROCESS
    exited with one of OK; a Popen is reaped first (TIMEOUT seconds at most)."""
    if isinstance(process, subprocess.Popen):
        out, err = process.communicate(timeout=timeout)
    else:
        out, err = process.stdout, process.stderr
    if process.returncode not in ok:
        raise BenchmarkError(f"{what} exited {process.returncode}: {(err or out).strip()}")


def timed_run(command: list[str], env: dict[str, str] | None = None, timeout: float = 60.0,
              ok: tuple[int, ...] = (0,)) -> float:
    """Seconds COMMAND took to run, its output captured; BenchmarkError unless it exited
    with one of OK within TIMEOUT seconds."""
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    took = time.perf_counter() - began
    check_exit(command[0], done, ok)
    return took


def run_trials(trials: int, trial: Callable[[], T], samples: list[T], what: str,
               describe: Callable[[T], str], *, check: Callable[[T], None] | None = None,
               ) -> None:
    """TRIALS times: TRIAL(), appended to SAMPLES and told on stderr as "WHAT i/TRIALS:
    DESCRIBE(it)"; then CHECK(it), which may raise to end the series."""
    for index in range(trials):
        samples.append(done := trial())
        progress(f"  {what} {index + 1}/{trials}: {describe(done)}")
        if check is not None:
            check(done)


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


JSON_HELP = "print samples and summary as JSON instead of tables"


def benchmark_main(name: str, parser: argparse.ArgumentParser,
                   report: Callable[[argparse.Namespace], object], argv: list[str] | None = None,
                   *, failures: tuple[type[BaseException], ...] = (),
                   json_help: str = JSON_HELP) -> int:
    """A benchmark script's main(): PARSER's options and --json (JSON_HELP) from ARGV;
    then, under run_benchmark(), print REPORT(args): a str as it is, anything else as
    indented JSON."""
    parser.add_argument("--json", action="store_true", help=json_help)
    args = parser.parse_args(argv)

    def body() -> None:
        result = report(args)
        print(result if isinstance(result, str) else json.dumps(result, indent=2))

    return run_benchmark(name, body, failures)
