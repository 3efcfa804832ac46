"""Startup and stop benchmark (issue 2): unistack against plain supervisord.

Each run starts and stops one unistack stack through the operator CLI in a temp
UNISTACK_HOME on free loopback ports, then a baseline: supervisord alone, autostarting
the same managed programs (taken from the project's supervisord.conf) with
no hub. One uncounted warm-up start/stop does the first-run bootstrap first.

Usage: .venv/bin/python benchmarks/startup.py [--runs N] [--json]
Progress goes to stderr; the Markdown table (or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from harness.processes import processes_of
from harness.runs import BenchmarkError, benchmark_main, check_exit, positive, progress
from harness.stacks import hub_healthy, make_home, remove_home, stack_environment
from harness.supervisord import SUPERVISORD, baseline_settings, stop_baseline
from harness.tables import spread_summary, spread_table, verdict
from harness.waiting import moment_when
from unistack.config import Settings, load_settings
from unistack.probes import build_probe
from unistack.services import REGISTRY
from unistack.stack import supervisord_env

POLL = 0.01  # seconds between readiness and exit checks
START_LIMIT = 60.0  # a run that takes longer than this is an error, not a sample
STOP_LIMIT = 30.0
ACCEPT_START = 5.0  # issue 2: cold start median at most 5 s ...
ACCEPT_STOP = 3.0  # ... and stop median at most 3 s

# Every measure: key, table label, and the baseline measure its ratio is taken against.
MEASURES: tuple[tuple[str, str, str | None], ...] = (
    ("start_cli", "unistack start: `unistack start` wall time", "base_start"),
    ("start_healthy", "unistack start: CLI spawn → /status healthy", "base_start"),
    ("start_exec", "unistack start: supervisord exec → /status healthy", "base_start"),
    ("base_start", "baseline start: supervisord exec → every managed service ready", None),
    ("stop_cli", "unistack stop: `unistack stop` → no process left", "base_stop"),
    ("base_stop", "baseline stop: supervisor.shutdown → no process left", None),
)
ACCEPTANCE = (("start_cli", ACCEPT_START, "cold start"), ("stop_cli", ACCEPT_STOP, "stop"))

Samples = dict[str, list[float]]


def spawn_cli(env: dict[str, str], command: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "unistack", command], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class StartWatch:
    """Watches one `unistack start`: when its supervisord was exec'd, when the stack is healthy."""

    def __init__(self, cli: subprocess.Popen[str], settings: Settings) -> None:
        self._cli = cli
        self._cli_proc = psutil.Process(cli.pid)
        self._settings = settings
        self.exec_offset: float | None = None  # seconds from the CLI's start to supervisord's

    def healthy(self) -> bool:
        if self._cli.poll() not in (None, 0):
            check_exit("unistack start", self._cli, timeout=STOP_LIMIT)
        if self.exec_offset is None:
            self._find_supervisord()
        # GET /ready is 200 whenever overall is not "down"; healthy means every service ready.
        return hub_healthy(self._settings)

    def _find_supervisord(self) -> None:
        try:
            for child in self._cli_proc.children():
                if "supervisor.supervisord" in " ".join(child.cmdline()):
                    # Both start times come from /proc on one clock (10 ms ticks).
                    self.exec_offset = child.create_time() - self._cli_proc.create_time()
        except psutil.Error:
            return  # the CLI or its child is gone; supervisord may be caught next poll


def measure_start(env: dict[str, str], settings: Settings) -> dict[str, float]:
    began = time.perf_counter()
    cli = spawn_cli(env, "start")
    watch = StartWatch(cli, settings)
    healthy = moment_when(watch.healthy, START_LIMIT, POLL, "unistack start: /status healthy")
    cli.wait(timeout=START_LIMIT)
    ended = time.perf_counter()
    check_exit("unistack start", cli, timeout=STOP_LIMIT)
    if watch.exec_offset is None:
        raise BenchmarkError("did not see `unistack start` exec supervisord")
    return {"start_cli": ended - began, "start_healthy": healthy - began,
            "start_exec": healthy - began - watch.exec_offset}


def measure_stop(env: dict[str, str], home: Path) -> float:
    began = time.perf_counter()
    cli = spawn_cli(env, "stop")
    ended = moment_when(lambda: cli.poll() is not None and not processes_of(home),
                        STOP_LIMIT, POLL, "unistack stop: no process left")
    check_exit("unistack stop", cli, timeout=STOP_LIMIT)
    return ended - began


def measure_baseline_start(settings: Settings, conf: Path) -> float:
    """Exec supervisord; wait for the hub's own readiness probes of every managed program."""
    probes = {spec.name: build_probe(spec.readiness, spec, settings,
                                     settings.probe_timing(spec.name, "readiness").timeout)
              for spec in REGISTRY if not spec.autostart}
    ready: set[str] = set()

    def all_ready() -> bool:
        ready.update(name for name, probe in probes.items()
                     if name not in ready and probe.check().ok)
        return len(ready) == len(probes)

    began = time.perf_counter()
    daemon = subprocess.Popen([*SUPERVISORD, str(conf)], env=supervisord_env(settings),
                              cwd=settings.unistack_home, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ended = moment_when(all_ready, START_LIMIT, POLL, "baseline: every managed program ready")
    check_exit("baseline supervisord", daemon, timeout=STOP_LIMIT)
    return ended - began


def one_run(home: Path) -> dict[str, float]:
    env = stack_environment(home)
    settings = load_settings(env)
    sample = measure_start(env, settings)
    sample["stop_cli"] = measure_stop(env, home)
    directory = home / "baseline"
    settings, conf = baseline_settings(env, directory)
    sample["base_start"] = measure_baseline_start(settings, conf)
    sample["base_stop"] = stop_baseline(directory / "supervisor.sock", home)
    return sample


def warm_up(home: Path) -> None:
    """One uncounted start/stop: the first-run bootstrap (secrets, directories)."""
    env = stack_environment(home)
    measure_start(env, load_settings(env))
    measure_stop(env, home)


def collect(runs: int) -> Samples:
    home = make_home("usb-")
    samples: Samples = {key: [] for key, _, _ in MEASURES}
    try:
        progress(f"warm-up in {home} ...")
        warm_up(home)
        for index in range(runs):
            sample = one_run(home)
            for key, value in sample.items():
                samples[key].append(value)
            progress(f"run {index + 1}/{runs}: "
                     + ", ".join(f"{k} {v:.3f} s" for k, v in sample.items()))
    finally:
        remove_home(home)
    return samples


def acceptance(summary: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    parts, passed = [], True
    for key, limit, name in ACCEPTANCE:
        median = summary[key]["median"]
        passed = passed and median <= limit
        parts.append(f"{name} median {median:.2f} s ≤ {limit:g} s")
    return passed, " and ".join(parts) + f" → {verdict(passed)}"


def markdown(summary: dict[str, dict[str, Any]], runs: int) -> str:
    rows = [f"Startup and stop, {runs} runs after 1 warm-up, poll every {POLL * 1000:g} ms "
            "(seconds; ratio = unistack median / baseline median).", "",
            *spread_table(summary), "", "Acceptance (issue 2): " + acceptance(summary)[1]]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time cold start and stop of unistack against plain supervisord "
                    "running the same managed programs.")
    parser.add_argument("--runs", type=positive, default=7, help="measured runs (7)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("startup", build_parser(), make_report, argv,
                          json_help="print samples and summary as JSON instead of a table")


def make_report(args: argparse.Namespace) -> str | dict[str, Any]:
    """Measure ARGS.runs runs; the table, or the samples and summary as JSON."""
    summary = spread_summary(MEASURES, samples := collect(args.runs))
    if not args.json:
        return markdown(summary, args.runs)
    passed, line = acceptance(summary)
    return {"runs": args.runs, "poll_seconds": POLL, "samples": samples, "summary": summary,
            "acceptance": {"pass": passed, "text": line}}


if __name__ == "__main__":
    sys.exit(main())
