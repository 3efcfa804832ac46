"""Preflight benchmark (issue 9): how fast a taken port is reported, against supervisord.

Measured in one run, on free loopback ports in temp dirs:
- unistack preflight on a healthy machine: `preflight.findings()` with every port free
  (in-process, the cost `start` pays each time);
- unistack `start` with REDIS_PORT held by another redis-server: CLI spawn to exit 2;
- baseline: plain supervisord running redis-server on that taken port with the stack's
  program settings (startsecs=1, startretries=1) until it reports FATAL — the earliest
  moment a supervisord-only stack can know. Before the preflight, unistack's `start`
  waited out START_TIMEOUT after that (32-34 s measured when the issue was filed).

Usage: .venv/bin/python benchmarks/preflight.py [--runs N] [--json]
Progress goes to stderr; the Markdown table (or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.figures import median_range
from harness.ports import free_ports
from harness.runs import progress
from harness.stacks import make_home, stack_environment, unistack_cli
from harness.tables import markdown_table
from harness.waiting import wait_for
from unistack import preflight
from unistack.config import load_settings
from unistack.supervisor import SupervisorClient, SupervisorError

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60.0


@contextmanager
def _squatter(port: int) -> Iterator[None]:
    """Another redis-server holding PORT, as Debian's own would."""
    child = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: not preflight.bindable(port), LIMIT, what=f"port {port} taken")
        yield
    finally:
        child.kill()
        child.wait(5)


def healthy_preflight(home: Path) -> float:
    settings = load_settings(environ=stack_environment(home))
    began = time.perf_counter()
    preflight.findings(settings)
    return time.perf_counter() - began


def unistack_taken(home: Path) -> float:
    env = stack_environment(home)
    with _squatter(int(env["REDIS_PORT"])):
        began = time.monotonic()
        done = unistack_cli(env, "start", timeout=LIMIT)
        took = time.monotonic() - began
    if done.returncode != 2 or "REDIS_PORT=" not in done.stderr:
        raise RuntimeError(f"start did not refuse the taken port: {done.stderr}")
    return took


SUPERVISORD_CONF = """[unix_http_server]
file={run}/supervisor.sock
chmod=0700
[supervisord]
logfile={run}/supervisord.log
pidfile={run}/supervisord.pid
nodaemon=true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:redis]
command=redis-server --port {port} --bind 127.0.0.1 --save "" --appendonly no
autostart=true
startsecs=1
startretries=1
"""


def baseline_taken(home: Path) -> float:
    port = free_ports(1)[0]
    conf = home / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(run=home, port=port))
    client = SupervisorClient(home / "supervisor.sock", timeout=1.0)
    with _squatter(port):
        began = time.monotonic()
        daemon = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c",
                                   str(conf)], stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: _state(client) == "FATAL", LIMIT, what="redis FATAL")
            return time.monotonic() - began
        finally:
            daemon.terminate()
            daemon.wait(10)


def _state(client: SupervisorClient) -> str:
    try:
        return client.processes()["redis"].state
    except (SupervisorError, KeyError):
        return ""


MEASURES: tuple[tuple[str, str, Callable[[Path], float], str | None], ...] = (
    ("healthy", "unistack preflight, every port free (in-process)", healthy_preflight, None),
    ("taken", "unistack `start` with REDIS_PORT taken → exit 2 naming the holder",
     unistack_taken, "baseline"),
    ("baseline", "baseline: supervisord alone → redis FATAL on the taken port",
     baseline_taken, None),
)


def measure(runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {key: [] for key, *_ in MEASURES}
    for run in range(runs):
        for key, _, fn, _ in MEASURES:
            home = make_home("usb-")
            try:
                samples[key].append(fn(home))
            finally:
                shutil.rmtree(home, ignore_errors=True)
        progress(f"run {run + 1}/{runs}: " + ", ".join(
            f"{key} {values[-1]:.3f} s" for key, values in samples.items()))
    return samples


def table(samples: dict[str, list[float]]) -> str:
    base = median_range(samples["baseline"])["median"]
    rows = []
    for key, label, _, against in MEASURES:
        figures = median_range(samples[key])
        ratio = f"{figures['median'] / base:.3f}x" if against else "-"
        rows.append((label, _seconds(figures["median"]),
                     f"{_seconds(figures['min'])} - {_seconds(figures['max'])}", ratio))
    return "\n".join(markdown_table(("measure", "median", "min - max", "vs baseline"), "llll",
                                    rows))


def _seconds(value: float) -> str:
    return f"{value * 1000:.2f} ms" if value < 0.1 else f"{value:.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="trials per measure (5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    samples = measure(args.runs)
    result: Any = samples
    print(json.dumps(result, indent=2) if args.json else table(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
