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
import configparser
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from unistack import runtime
from unistack.config import Settings, load_settings
from unistack.configkeys import PORT_KEYS
from unistack.credentials import ensure_secrets
from unistack.hub.client import HubClient, HubUnreachable
from unistack.hub.status import HEALTHY
from unistack.probes import build_probe
from unistack.services import REGISTRY
from unistack.stack import supervisord_env
from unistack.supervisor import SupervisorClient, SupervisorError

POLL = 0.01  # seconds between readiness and exit checks
START_LIMIT = 60.0  # a run that takes longer than this is an error, not a sample
STOP_LIMIT = 30.0
ACCEPT_START = 5.0  # issue 2: cold start median at most 5 s ...
ACCEPT_STOP = 3.0  # ... and stop median at most 3 s
SUPERVISORD = (sys.executable, "-m", "supervisor.supervisord", "-c")

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


class BenchmarkError(Exception):
    """A run could not be measured; the message says what broke."""


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def wait_until(condition: Callable[[], bool], limit: float, what: str) -> float:
    """Check CONDITION every POLL seconds; return perf_counter() when it first holds."""
    deadline = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > deadline:
            raise BenchmarkError(f"{what} did not happen within {limit:g} s")
        time.sleep(POLL)
    return time.perf_counter()


def free_ports(count: int) -> list[int]:
    """COUNT distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_environment(home: Path) -> dict[str, str]:
    """The process environment of a stack rooted at HOME on fresh loopback ports."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UNISTACK_", "REDIS_", "PROMETHEUS_", "HUB_", "ML_"))}
    env.update(zip(PORT_KEYS, map(str, free_ports(len(PORT_KEYS))), strict=True))
    env["UNISTACK_HOME"] = str(home)
    return env


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process with HOME in its command line or working directory."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if str(home) in text and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(home: Path) -> None:
    """SIGKILL every process of HOME, supervisord first so that it respawns nothing."""
    for _ in range(20):
        found = processes_of(home)
        if not found:
            return
        progress(f"  killing leftovers: {[p.pid for p in found]}")
        for proc in sorted(found, key=lambda p: "supervisord" not in str(p.info["cmdline"])):
            # A process that exited between the search and the kill is what we wanted.
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(found, timeout=2.0)


def spawn_cli(env: dict[str, str], command: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "unistack", command], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def check_exit(process: subprocess.Popen[str], what: str) -> None:
    """Reap PROCESS and raise with its output unless it exited 0."""
    out, err = process.communicate(timeout=STOP_LIMIT)
    if process.returncode != 0:
        raise BenchmarkError(f"{what} exited {process.returncode}: {(err or out).strip()}")


class StartWatch:
    """Watches one `unistack start`: when its supervisord was exec'd, when the stack is healthy."""

    def __init__(self, cli: subprocess.Popen[str], settings: Settings) -> None:
        self._cli = cli
        self._cli_proc = psutil.Process(cli.pid)
        self._hub = HubClient(settings, timeout=1.0)
        self.exec_offset: float | None = None  # seconds from the CLI's start to supervisord's

    def healthy(self) -> bool:
        if self._cli.poll() not in (None, 0):
            check_exit(self._cli, "unistack start")
        if self.exec_offset is None:
            self._find_supervisord()
        try:
            code, document = self._hub.get("/status")
        except HubUnreachable:
            return False
        # GET /ready is 200 whenever overall is not "down"; healthy means every service ready.
        return code == 200 and document.get("overall") == HEALTHY

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
    healthy = wait_until(watch.healthy, START_LIMIT, "unistack start: /status healthy")
    cli.wait(timeout=START_LIMIT)
    ended = time.perf_counter()
    check_exit(cli, "unistack start")
    if watch.exec_offset is None:
        raise BenchmarkError("did not see `unistack start` exec supervisord")
    return {"start_cli": ended - began, "start_healthy": healthy - began,
            "start_exec": healthy - began - watch.exec_offset}


def measure_stop(env: dict[str, str], home: Path) -> float:
    began = time.perf_counter()
    cli = spawn_cli(env, "stop")
    ended = wait_until(lambda: cli.poll() is not None and not processes_of(home),
                       STOP_LIMIT, "unistack stop: no process left")
    check_exit(cli, "unistack stop")
    return ended - began


def baseline_conf(settings: Settings, directory: Path) -> str:
    """The project's managed programs (all but the hub), autostarted, without the hub.

    Control is a 0700 unix socket in DIRECTORY; there is no inet server. Commands and
    stop options stay as in supervisord.conf, so the baseline cannot drift from them.
    """
    source = configparser.RawConfigParser()
    source.read(settings.supervisord_conf)
    conf = configparser.RawConfigParser()
    conf["unix_http_server"] = {"file": str(directory / "supervisor.sock"), "chmod": "0700"}
    conf["supervisord"] = {
        "logfile": str(directory / "supervisord.log"), "pidfile": str(directory / "pid"),
        "childlogdir": str(directory), "directory": str(settings.unistack_home),
        "umask": "077", "loglevel": "info"}
    conf["rpcinterface:supervisor"] = dict(source["rpcinterface:supervisor"])
    for spec in REGISTRY:
        if not spec.autostart:
            program = dict(source[f"program:{spec.name}"])
            program.update(autostart="true", stdout_logfile=str(directory / f"{spec.name}.log"))
            conf[f"program:{spec.name}"] = program
    lines: list[str] = []
    for name, section in conf.items():
        if name != configparser.DEFAULTSECT:
            # Continuation lines (prometheus's flags) must stay indented to stay in the value.
            values = (f"{k}={v}".replace("\n", "\n    ") for k, v in section.items())
            lines += [f"[{name}]", *values, ""]
    return "\n".join(lines)


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
    ended = wait_until(all_ready, START_LIMIT, "baseline: every managed program ready")
    check_exit(daemon, "baseline supervisord")
    return ended - began


def measure_baseline_stop(socket_path: Path, home: Path) -> float:
    client = SupervisorClient(socket_path, timeout=STOP_LIMIT)
    daemon = client.pid()
    began = time.perf_counter()
    client.shutdown()
    ended = wait_until(lambda: gone(daemon) and not processes_of(home),
                       STOP_LIMIT, "baseline stop: no process left")
    return ended - began


def baseline_settings(env: dict[str, str], directory: Path) -> tuple[Settings, Path]:
    """Settings of this run, the runtime files the hub renders, and the baseline conf."""
    settings = ensure_secrets(load_settings(env))
    runtime.render(settings)
    directory.mkdir(mode=0o700, exist_ok=True)
    conf = directory / "supervisord.conf"
    conf.write_text(baseline_conf(settings, directory))
    return settings, conf


def one_run(home: Path) -> dict[str, float]:
    env = stack_environment(home)
    settings = load_settings(env)
    sample = measure_start(env, settings)
    sample["stop_cli"] = measure_stop(env, home)
    directory = home / "baseline"
    settings, conf = baseline_settings(env, directory)
    sample["base_start"] = measure_baseline_start(settings, conf)
    sample["base_stop"] = measure_baseline_stop(directory / "supervisor.sock", home)
    return sample


def warm_up(home: Path) -> None:
    """One uncounted start/stop: the first-run bootstrap (secrets, directories)."""
    env = stack_environment(home)
    measure_start(env, load_settings(env))
    measure_stop(env, home)


def cleanup(home: Path) -> None:
    """Stop both stacks politely, then kill whatever is left of HOME and remove it."""
    try:
        subprocess.run([sys.executable, "-m", "unistack", "stop"], capture_output=True,
                       env=stack_environment(home), timeout=STOP_LIMIT, check=False)
        baseline = SupervisorClient(home / "baseline" / "supervisor.sock", timeout=STOP_LIMIT)
        if baseline.is_running():
            baseline.shutdown()
        wait_until(lambda: not processes_of(home), STOP_LIMIT, "cleanup: no process left")
    except (subprocess.TimeoutExpired, SupervisorError, BenchmarkError) as exc:
        progress(f"  polite stop failed ({exc}); killing")
    finally:
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


def collect(runs: int) -> Samples:
    # Short path: the supervisord socket path must fit in 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="usb-", dir="/tmp"))
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
        cleanup(home)
    return samples


def summarize(samples: Samples) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for key, label, _ in MEASURES:
        values = samples[key]
        summary[key] = {"label": label, "median": statistics.median(values), "min": min(values),
                        "max": max(values), "spread": max(values) - min(values)}
    for key, _, against in MEASURES:
        summary[key]["ratio"] = (summary[key]["median"] / summary[against]["median"]
                                 if against else None)
    return summary


def acceptance(summary: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    parts, passed = [], True
    for key, limit, name in ACCEPTANCE:
        median = summary[key]["median"]
        passed = passed and median <= limit
        parts.append(f"{name} median {median:.2f} s ≤ {limit:g} s")
    return passed, " and ".join(parts) + f" → {'PASS' if passed else 'FAIL'}"


def markdown(summary: dict[str, dict[str, Any]], runs: int) -> str:
    rows = [f"Startup and stop, {runs} runs after 1 warm-up, poll every {POLL * 1000:g} ms "
            "(seconds; ratio = unistack median / baseline median).", "",
            "| Measure | Median | Min | Max | Spread | Ratio |",
            "|---|---:|---:|---:|---:|---:|"]
    for row in summary.values():
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        rows.append(f"| {row['label']} | {row['median']:.3f} | {row['min']:.3f} | "
                    f"{row['max']:.3f} | {row['spread']:.3f} | {ratio} |")
    rows += ["", "Acceptance (issue 2): " + acceptance(summary)[1]]
    return "\n".join(rows)


def positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of runs, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time cold start and stop of unistack against plain supervisord "
                    "running the same managed programs.")
    parser.add_argument("--runs", type=positive, default=7, help="measured runs (7)")
    parser.add_argument("--json", action="store_true",
                        help="print samples and summary as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally in collect() stops what we started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        samples = collect(args.runs)
    except BenchmarkError as exc:
        print(f"startup benchmark: {exc}", file=sys.stderr)
        return 1
    summary = summarize(samples)
    if args.json:
        passed, line = acceptance(summary)
        print(json.dumps({"runs": args.runs, "poll_seconds": POLL, "samples": samples,
                          "summary": summary, "acceptance": {"pass": passed, "text": line}},
                         indent=2))
    else:
        print(markdown(summary, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
