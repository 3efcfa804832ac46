"""Diagnose benchmark (issue 13): `scripts/diagnose_container.sh --json` on a healthy
stack against what an operator runs by hand for part of the same picture, in the same
run: `supervisorctl status` + `redis-cli info` (and `podman inspect` of a container when
--container NAME names one). The bound: diagnose under 2 s here.

One stack (`python -m unistack start` in a temp UNISTACK_HOME on free loopback ports) is
started once; each run times the script (its bootstrap check included, as an operator
runs it), `python -m unistack diagnose --json` alone, and the hand-run baseline.

Usage: .venv/bin/python benchmarks/diagnose.py [--runs N] [--container NAME] [--json]
Progress on stderr; the Markdown table (or --json) on stdout. The stack and its home are
removed at the end, even after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from harness.figures import spread
from harness.runs import progress, timed_run
from harness.stacks import make_home, remove_home, stack_environment
from harness.tables import SPREAD_HEAD, spread_row

ROOT = Path(__file__).resolve().parents[1]
BOUND = 2.0


def baseline(env: dict[str, str], home: Path, container: str) -> float:
    """supervisorctl status + redis-cli info (+ podman inspect), one after the other."""
    password = next(line.split("=", 1)[1] for line in (home / ".env").read_text().splitlines()
                    if line.startswith("REDIS_PASSWORD="))
    conf = str(ROOT / "supervisord.conf")
    env = {**env, "REDISCLI_AUTH": password, "UNISTACK_PYTHON": sys.executable}
    took = timed_run([sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "status"], env,
                 ok=(0, 3))
    took += timed_run(["redis-cli", "-p", env["REDIS_PORT"], "info"], env)
    if container:
        took += timed_run(["podman", "inspect", container], env)
    return took


def measure(runs: int, container: str) -> dict[str, Any]:
    home = make_home("usd-")
    env = stack_environment(home)
    cli = [sys.executable, "-m", "unistack"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        progress("starting the stack ...")
        timed_run([*cli, "start"], env)
        samples: dict[str, list[float]] = {"script": [], "command": [], "baseline": []}
        for run in range(1, runs + 1):
            samples["script"].append(timed_run([str(ROOT / "scripts/diagnose_container.sh"),
                                            "--json"], env, ok=(0, 1)))
            samples["command"].append(timed_run([*cli, "diagnose", "--json"], env, ok=(0, 1)))
            samples["baseline"].append(baseline(env, home, container))
            progress(f"  run {run}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                  for k, v in samples.items()))
        return {name: spread(values) for name, values in samples.items()}
    finally:
        remove_home(home)


def table(result: dict[str, Any], runs: int, container: str) -> str:
    base = result["baseline"]["median"]
    rows = [("`scripts/diagnose_container.sh --json` (bootstrap check included)", "script"),
            ("`python -m unistack diagnose --json`", "command"),
            ("baseline: `supervisorctl status` + `redis-cli info`"
             + (" + `podman inspect`" if container else ""), "baseline")]
    lines = [f"Diagnose on a healthy stack, {runs} runs (seconds; ratio = median / the "
             "baseline's median).", "", *SPREAD_HEAD]
    for label, key in rows:
        ratio = "-" if key == "baseline" else f"{result[key]['median'] / base:.2f}"
        lines.append(spread_row(label, result[key], ratio))
    verdict = "PASS" if result["script"]["median"] < BOUND else "FAIL"
    lines += ["", f"Bound (issue 13): diagnose_container.sh median "
              f"{result['script']['median']:.2f} s < {BOUND:g} s → {verdict}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--container", default="", help="also `podman inspect` this one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs, args.container)
    print(json.dumps(result, indent=2) if args.json else table(result, args.runs, args.container))
    return 0


if __name__ == "__main__":
    sys.exit(main())
