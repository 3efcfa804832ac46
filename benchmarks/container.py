"""Unified container benchmark (issue 12): the cpu image under podman against the native
stack, each figure a ratio against a baseline measured in the same run.

1. Start. Native baseline: `python -m unistack start` in a fresh temp UNISTACK_HOME on
   free loopback ports, its wall time (it returns when every service is ready; the
   first start trains the default model), then `python -m unistack stop`. Container:
   `localhost/unistack:test` (the `cpu` target the test suite builds; built here as
   tests/container/conftest.py does when missing) created with the settings of
   docker-compose.unified.yml + docker-compose.cpu.yml on fresh named volumes, timed
   from `podman start` until the hub's /ready answers 200 on the published port AND
   `podman healthcheck run` exits 0 (no systemd here runs the healthcheck by itself).
   Both are cold. Bound: container / native at most 2.
2. Stop. `podman stop -t 20` until the container has exited, against the stop budget
   (the sum of every stopwaitsecs in supervisord.conf). Bound: stop / budget below 1.
   Each stop is also checked in the logs volume: no program SIGKILLed by supervisord,
   and Redis's log after "Received SIGTERM" shows the AOF's fsync and no RDB save.

Native and container runs alternate, so that both share the machine's noise. Every
port is on 127.0.0.1.

Usage: .venv/bin/python benchmarks/container.py [--runs N] [--json]
Progress goes to stderr; the Markdown table (or one JSON document with --json) to stdout.
Every container, volume and temp dir is removed at the end, even after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from harness.fetch import http_get
from harness.ports import free_ports
from harness.processes import kill_leftovers
from harness.runs import BenchmarkError, positive, progress
from harness.stacks import make_home, stack_environment, unistack_cli
from harness.tables import spread_summary, spread_table, verdict
from harness.waiting import WaitTimeout, moment_when
from unistack.config import PROJECT_ROOT
from unistack.configkeys import PORT_KEYS

IMAGE = "localhost/unistack:test"  # the `cpu` target, as tests/container/ build it
BASE = "localhost/unistack-base:bookworm"
CA_MOUNT = "/etc/ssl/certs:/etc/ssl/certs:ro"  # this machine's PyPI proxy, for a build only
RUNTIME_UID = 10001
HOME_IN = "/var/lib/unistack"
# Named volumes at the mount points of docker-compose.unified.yml.
VOLUMES = {"home": HOME_IN, "data": f"{HOME_IN}/var/data", "models": f"{HOME_IN}/var/models",
           "logs": f"{HOME_IN}/var/log", "backups": f"{HOME_IN}/var/backups"}
SECRETS = {"redis_password": "REDIS_PASSWORD_FILE",
           "unistack_operator_token": "UNISTACK_OPERATOR_TOKEN_FILE"}
# The compose files' `environment` (docker-compose.cpu.yml's ML_REQUIRE_GPU wins).
ENVIRONMENT = {"UNISTACK_MODE": "docker", "UNISTACK_BIND_ADDRESS": "0.0.0.0",
               "UNISTACK_HOME": HOME_IN, "ML_REQUIRE_GPU": "0"}
STOP_GRACE = 20  # compose's stop_grace_period; `podman stop -t 20`
POLL = 0.1  # seconds between /ready checks
NATIVE_LIMIT = 180.0  # a step that takes longer than this is an error, not a sample
HEALTHY_LIMIT = 180.0  # above the image's 120 s start period
STOP_LIMIT = 60.0
BOUND_START = 2.0  # issue 12: container start -> healthy at most 2 x native cold start
BOUND_STOP = 1.0  # ... and the stop within the budget
LABEL = f"unistack-bench={os.getpid()}"

# Every measure: key, table label, and what its ratio is taken against ("budget": the
# stop budget; None: a baseline itself).
MEASURES: tuple[tuple[str, str, str | None], ...] = (
    ("native_start", "native cold start: `unistack start` wall time (baseline)", None),
    ("container_started", "container: `podman start` returns (runtime only)", None),
    ("container_ready", "container: `podman start` → hub /ready 200 on the published port",
     "native_start"),
    ("container_healthy", "container: `podman start` → /ready 200 and "
     "`podman healthcheck run` exits 0", "native_start"),
    ("container_stop", "container: `podman stop -t 20` → exited", "budget"),
    ("native_stop", "native: `unistack stop` wall time (reference)", "budget"),
)

Samples = dict[str, list[float]]


def http_status(url: str) -> int:
    """The HTTP status of GET URL (0 when nothing answers), never through a proxy."""
    return http_get(url, timeout=2)[0]


# --- what the project's files say -------------------------------------------------------

def stop_budget() -> int:
    """The sum of every stopwaitsecs in supervisord.conf (programs and event listeners)."""
    parser = configparser.RawConfigParser()
    parser.read(PROJECT_ROOT / "supervisord.conf")
    return sum(parser.getint(section, "stopwaitsecs", fallback=10)
               for section in parser.sections()
               if section.partition(":")[0] in ("program", "eventlistener"))


def container_ports() -> dict[str, int]:
    """Each *_PORT key and its port inside the container (config.env, the env file)."""
    values = dict(line.split("=", 1) for line in
                  (PROJECT_ROOT / "config.env").read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith("#"))
    return {key: int(values[key]) for key in PORT_KEYS}


# --- everything this run made, removed at the end ----------------------------------------

@dataclass
class Made:
    """Containers, volumes, temp dirs and native homes this benchmark created."""

    podman_env: dict[str, str] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    homes: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        """Remove everything, once; a second Ctrl-C or SIGTERM cannot interrupt it."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for name in self.containers:
            podman(self.podman_env, "rm", "-f", "-t", "0", name, check=False)
        for name in self.volumes:
            podman(self.podman_env, "volume", "rm", "-f", name, check=False)
        for home in self.homes:
            stop_native(home)
        for path in [*self.homes, *self.dirs]:
            shutil.rmtree(path, ignore_errors=True)
        for items in (self.containers, self.volumes, self.homes, self.dirs):
            items.clear()


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so collect()'s finally removes what we made."""
    raise SystemExit(128 + signum)


# --- the native baseline -----------------------------------------------------------------

def stop_native(home: Path) -> None:
    """`unistack stop` in HOME (over its unix socket: the ports do not matter), then
    SIGKILL whatever is left."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        unistack_cli(stack_environment(home), "stop", timeout=STOP_LIMIT)
    kill_leftovers(home)


def timed_cli(env: dict[str, str], command: str, limit: float) -> float:
    began = time.perf_counter()
    done = unistack_cli(env, command, timeout=limit)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchmarkError(f"unistack {command} exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return elapsed


def native_run(made: Made) -> dict[str, float]:
    """One cold native start and its stop, in a fresh home removed afterwards."""
    home = make_home("usbn-")
    made.homes.append(home)
    env = stack_environment(home)
    sample = {"native_start": timed_cli(env, "start", NATIVE_LIMIT)}
    sample["native_stop"] = timed_cli(env, "stop", STOP_LIMIT)
    kill_leftovers(home)
    shutil.rmtree(home, ignore_errors=True)
    made.homes.remove(home)
    return sample


# --- podman ------------------------------------------------------------------------------

def podman(env: dict[str, str], *args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise BenchmarkError(f"podman {' '.join(args)} exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def podman_environment() -> dict[str, str]:
    """os.environ with CONTAINERS_CONF from `scripts/container_base.sh --quiet`."""
    done = subprocess.run([str(PROJECT_ROOT / "scripts/container_base.sh"), "--quiet"],
                          capture_output=True, text=True, timeout=1200, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("CONTAINERS_CONF="):
        raise BenchmarkError(f"scripts/container_base.sh exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return {**os.environ, "CONTAINERS_CONF": lines[-1].partition("=")[2]}


def ensure_image(env: dict[str, str]) -> None:
    """The image the tests build; built the same way (and layers cached) when missing."""
    if podman(env, "image", "exists", IMAGE, check=False).returncode == 0:
        return
    progress(f"{IMAGE} missing: building the cpu target (minutes) ...")
    podman(env, "build", "--format", "docker", "--network", "host", "-v", CA_MOUNT,
           "--build-arg", f"BASE_IMAGE={BASE}", "--target", "cpu",
           "-f", str(PROJECT_ROOT / "Dockerfile.unified"), "-t", IMAGE, str(PROJECT_ROOT),
           timeout=1800)


def write_secrets(directory: Path) -> None:
    """One file per secret, owned by the runtime user, mode 0400 (the compose recipe)."""
    for name in SECRETS:
        path = directory / name
        path.write_text(secrets.token_urlsafe(32) + "\n")
        os.chown(path, RUNTIME_UID, RUNTIME_UID)
        path.chmod(0o400)


def create_arguments(name: str, ports: dict[int, int], secrets_dir: Path) -> list[str]:
    """`podman create` with the settings of docker-compose.unified.yml + cpu.yml."""
    args = ["create", "--name", name, "--label", LABEL,
            "--env-file", str(PROJECT_ROOT / "config.env"),
            "--user", f"{RUNTIME_UID}:{RUNTIME_UID}", "--read-only",
            "--tmpfs", "/tmp:size=512m,mode=1777", "--tmpfs", "/run:size=16m,mode=755",
            "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
            "--memory", "4g", "--pids-limit", "4096", "--shm-size", "64m",
            "--stop-signal", "SIGTERM", "--stop-timeout", str(STOP_GRACE)]
    for key, value in ENVIRONMENT.items():
        args += ["--env", f"{key}={value}"]
    for secret, variable in SECRETS.items():
        args += ["--volume", f"{secrets_dir / secret}:/run/secrets/{secret}:ro",
                 "--env", f"{variable}=/run/secrets/{secret}"]
    for volume, destination in VOLUMES.items():
        args += ["--volume", f"{name}_{volume}:{destination}"]
    for inside, host in ports.items():
        args += ["--publish", f"127.0.0.1:{host}:{inside}"]
    return [*args, IMAGE]


def create_container(env: dict[str, str], made: Made,
                     name: str) -> tuple[dict[int, int], Path]:
    """Fresh volumes, secrets and a created container NAME: its port map (inside -> host)
    and the secrets' directory."""
    secrets_dir = make_home("usbs-")
    made.dirs.append(secrets_dir)
    write_secrets(secrets_dir)
    for volume in VOLUMES:
        made.volumes.append(f"{name}_{volume}")
        podman(env, "volume", "create", "--label", LABEL, f"{name}_{volume}")
    inside = list(container_ports().values())
    ports = dict(zip(inside, free_ports(len(inside)), strict=True))
    made.containers.append(name)
    podman(env, *create_arguments(name, ports, secrets_dir))
    return ports, secrets_dir


def state(env: dict[str, str], name: str) -> str:
    return podman(env, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()


def time_start(env: dict[str, str], name: str, hub_url: str) -> dict[str, float]:
    """From `podman start` to its return, to /ready 200, and to /ready 200 with the
    healthcheck passing."""
    ready_at: list[float] = []
    polls = iter(range(1 << 30))

    def healthy() -> bool:
        if http_status(hub_url) != 200:
            # A container that died is an error, not a slow start (asked every 2 s or so:
            # each podman command costs a fraction of a second here).
            if next(polls) % 20 == 19 and state(env, name) != "running":
                raise BenchmarkError(f"{name} is {state(env, name)}, not running")
            return False
        ready_at.append(time.perf_counter())
        return podman(env, "healthcheck", "run", name, check=False).returncode == 0

    began = time.perf_counter()
    podman(env, "start", name)
    started = time.perf_counter()
    try:
        ended = moment_when(healthy, HEALTHY_LIMIT, POLL, f"{name} healthy")
    except (BenchmarkError, WaitTimeout) as exc:
        raise BenchmarkError(f"{exc}\n{container_log(env, name)}") from None
    return {"container_started": started - began, "container_ready": ready_at[0] - began,
            "container_healthy": ended - began}


def container_log(env: dict[str, str], name: str) -> str:
    shown = podman(env, "logs", "--tail", "30", name, check=False)
    return (shown.stdout + shown.stderr).strip()


def time_stop(env: dict[str, str], name: str) -> tuple[float, int]:
    """Seconds of `podman stop -t 20` until the container has exited; its exit code."""
    began = time.perf_counter()
    podman(env, "stop", "-t", str(STOP_GRACE), name, timeout=STOP_LIMIT)
    ended = moment_when(lambda: state(env, name) in ("exited", "stopped"),
                        STOP_LIMIT, POLL, f"{name} exited")
    code = podman(env, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    return ended - began, int(code)


def stop_evidence(env: dict[str, str], name: str) -> dict[str, Any]:
    """What the logs volume says of the stop: programs SIGKILLed by supervisord, and
    whether Redis, after its SIGTERM, fsynced the AOF and saved no RDB."""
    logs = Path(podman(env, "volume", "inspect", "--format", "{{.Mountpoint}}",
                       f"{name}_logs").stdout.strip())
    supervisord = (logs / "supervisord.log").read_text(errors="replace")
    marker = "received SIGTERM indicating exit request"
    if marker not in supervisord:
        raise BenchmarkError(f"{name}: supervisord.log has no '{marker}'")
    after = supervisord[supervisord.rindex(marker):]
    redis_log = (logs / "redis.log").read_text(errors="replace")
    if "Received SIGTERM" not in redis_log:
        raise BenchmarkError(f"{name}: redis.log has no 'Received SIGTERM'")
    shutdown = redis_log[redis_log.rindex("Received SIGTERM"):]
    return {"sigkilled": re.findall(r"killing '(\S+)' \(\d+\) with SIGKILL", after),
            "aof_fsync": "fsync() on the AOF" in shutdown,
            "rdb_saved": "DB saved on disk" in shutdown}


def remove_container(env: dict[str, str], made: Made, name: str, secrets_dir: Path) -> None:
    podman(env, "rm", "-f", "-t", "0", name, check=False)
    made.containers.remove(name)
    for volume in VOLUMES:
        podman(env, "volume", "rm", "-f", f"{name}_{volume}", check=False)
        made.volumes.remove(f"{name}_{volume}")
    shutil.rmtree(secrets_dir, ignore_errors=True)
    made.dirs.remove(secrets_dir)


def container_run(env: dict[str, str], made: Made,
                  index: int) -> tuple[dict[str, float], dict[str, Any]]:
    """One cold container: created on fresh volumes, started, stopped, checked, removed."""
    name = f"usbc{os.getpid()}r{index}"
    ports, secrets_dir = create_container(env, made, name)
    hub_url = f"http://127.0.0.1:{ports[container_ports()['HUB_PORT']]}/ready"
    sample = time_start(env, name, hub_url)
    sample["container_stop"], exit_code = time_stop(env, name)
    checks = {"exit_code": exit_code, **stop_evidence(env, name)}
    remove_container(env, made, name, secrets_dir)
    return sample, checks


# --- runs and report ---------------------------------------------------------------------

def collect(runs: int) -> tuple[Samples, list[dict[str, Any]]]:
    samples: Samples = {key: [] for key, _, _ in MEASURES}
    checks: list[dict[str, Any]] = []
    made = Made()
    try:
        made.podman_env = podman_environment()
        ensure_image(made.podman_env)
        for index in range(runs):
            native = native_run(made)
            progress(f"run {index + 1}/{runs} native: "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in native.items()))
            container, check = container_run(made.podman_env, made, index)
            progress(f"run {index + 1}/{runs} container: "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in container.items())
                     + f"; {check}")
            for key, value in {**native, **container}.items():
                samples[key].append(value)
            checks.append(check)
    finally:
        made.cleanup()
    return samples, checks


def verdicts(summary: dict[str, dict[str, Any]], budget: int,
             checks: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    start, stop = summary["container_healthy"], summary["container_stop"]
    start_ok = start["ratio"] <= BOUND_START
    stop_ok = stop["ratio"] < BOUND_STOP
    killed = sorted({name for check in checks for name in check["sigkilled"]})
    clean = (not killed and all(c["exit_code"] == 0 and c["aof_fsync"] and not c["rdb_saved"]
                                for c in checks))
    runs = len(checks)
    lines = [
        f"Start (issue 12): container start → healthy median {start['median']:.2f} s, "
        f"native cold start median {summary['native_start']['median']:.2f} s: ratio "
        f"{start['ratio']:.2f} ≤ {BOUND_START:g} → {verdict(start_ok)}",
        f"Stop (issue 12): `podman stop -t {STOP_GRACE}` median {stop['median']:.2f} s, "
        f"stop budget {budget} s (every stopwaitsecs in supervisord.conf): ratio "
        f"{stop['ratio']:.2f} < {BOUND_STOP:g} → {verdict(stop_ok)}",
        f"Every stop: exit code 0 in {sum(c['exit_code'] == 0 for c in checks)}/{runs}; "
        f"supervisord SIGKILLed {', '.join(killed) if killed else 'no program'}; Redis after "
        f"SIGTERM: fsync() on the AOF in {sum(c['aof_fsync'] for c in checks)}/{runs}, "
        f"\"DB saved on disk\" in {sum(c['rdb_saved'] for c in checks)}/{runs} "
        f"→ {verdict(clean)}",
    ]
    return start_ok and stop_ok and clean, lines


def markdown(summary: dict[str, dict[str, Any]], runs: int, budget: int,
             lines: list[str]) -> str:
    rows = [f"Unified container, {runs} runs, native and container alternating, both cold, "
            f"poll every {POLL * 1000:g} ms (seconds; ratio = median / native cold start "
            f"median for the start, median / stop budget of {budget} s for the stops).", "",
            *spread_table(summary)]
    return "\n".join(rows) + "\n\n" + "\n\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time the unified container's start to healthy against the native cold "
                    "start, and its stop against the stop budget.")
    parser.add_argument("--runs", type=positive, default=5, help="runs of each (5)")
    parser.add_argument("--json", action="store_true",
                        help="print samples, checks and summary as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(signum, interrupt)
    budget = stop_budget()
    try:
        samples, checks = collect(args.runs)
    except (BenchmarkError, WaitTimeout, subprocess.TimeoutExpired) as exc:
        print(f"container benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress("container benchmark: interrupted; what it made is removed")
        return 130
    summary = spread_summary(MEASURES, samples, {"budget": budget})
    passed, lines = verdicts(summary, budget, checks)
    if args.json:
        print(json.dumps({"runs": args.runs, "poll_seconds": POLL, "image": IMAGE,
                          "stop_budget_seconds": budget, "samples": samples, "checks": checks,
                          "summary": summary, "pass": passed, "verdicts": lines}, indent=2))
    else:
        print(markdown(summary, args.runs, budget, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
