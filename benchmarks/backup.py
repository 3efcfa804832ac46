"""Backup, verify and restore benchmark (issue 11): unistack's archive, verification and
restore against the plain tools they replace, on the same data in the same run.

One whole stack (`python -m unistack start` in a temp UNISTACK_HOME on free loopback
ports, REDIS_MAXMEMORY=3gb, BACKUP_INTERVAL=0) is filled like
/work/shared/reference/backup-baselines.md: 1,000,000 keys of 1 KB base64-of-random
values and a 200,000-entry stream (about 1 GB of RDB), and 200 MB of random model files
(in var/models/bench/data/).
Each run then times, one after the other:

1. `backup --json` ("seconds": snapshot, archive, hashes, manifest; "verify_seconds"),
   against `tar czf` of the same RDB and models dir (ratio tar / backup, at least 4);
2. `verify NAME --json`, against redis-server alone loading a copy of that RDB, exec to
   `+PONG` and `loading:0` over a raw socket (ratio verify / load, at most 3);
3. `redis-cli --rdb` of the live Redis (a figure beside them, no bound);
4. `restore NAME --yes --json` on the running stack ("seconds": command to every service
   ready, without the safety backup) (ratio restore / backup, at most 2); the restored
   key count must equal the backup's.

Usage: .venv/bin/python benchmarks/backup.py [--keys N] [--models-mb M] [--quick]
                                              [--runs R] [--json]
Progress goes to stderr; the Markdown table (or one JSON document with --json) to stdout.
The stack, every scratch redis-server and the temp home are removed at the end, even
after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import redis
import zstandard

from harness.figures import median_range
from harness.ports import free_ports
from harness.processes import kill_leftovers
from harness.runs import BenchmarkError, positive, progress, run_benchmark, timed_run
from harness.stacks import hub_healthy, make_home, redis_client, stack_environment
from harness.waiting import moment_when, wait_for
from unistack.config import Settings, load_settings
from unistack.configkeys import LOOPBACK

POLL = 0.01  # seconds between readiness checks of the scratch redis-server
LIMIT = 3600.0  # one command taking longer than this is an error, not a sample
BATCH = 1000  # keys per pipeline, as in the reference's fill
MODEL_FILES = 4
TAR_BOUND, VERIFY_BOUND, RESTORE_BOUND = 4.0, 3.0, 2.0  # issue 11, acceptance line 2

# The reference's own figures (backup-baselines.md: ~1.04 GB RDB + 210 MB models,
# 1.25 GB of input; medians of 3 with min and max).
DASH = "\N{EN DASH}"  # ranges read min-max with an en dash, as in docs/BENCHMARKS.md
REFERENCE = (  # what, median, min, max (seconds), note
    ("BGSAVE, `rdbcompression no` (the stack's setting)", 5.43, 4.96, 8.03, ""),
    ("BGSAVE, `rdbcompression yes`", 20.03, 15.49, 20.72, ""),
    ("`tar czf` of RDB + models", 70.99, 68.56, 80.41, "17.7 MB/s of input"),
    ("`tar cf - \\| zstd -3 -T0`", 6.08, 5.43, 6.19, "206 MB/s of input"),
    ("`redis-check-rdb`", 1.86, 1.84, 2.06, ""),
    ("redis-server load, exec → `loading:0`", 5.72, 5.49, 6.99, ""),
    ("`redis-cli --rdb` (diskless-sync delay 5 s)", 22.33, 19.72, 22.88, ""),
)

# key, table label, bytes key for MB/s (or None)
MEASURES: tuple[tuple[str, str, str | None], ...] = (
    ("backup_seconds", "backup: \"seconds\" (snapshot, archive, hashes, manifest)",
     "input_bytes"),
    ("backup_bgsave", "  of which BGSAVE (INFO persistence, polled every 20 ms)", "rdb_bytes"),
    ("backup_archive", "  of which the rest: tar, zstd, sha256s, manifest, fsync", "input_bytes"),
    ("backup_verify_seconds", "backup: its verification (\"verify_seconds\")", "archive_bytes"),
    ("backup_wall", "backup: `backup --json` wall time", None),
    ("tar_czf", "baseline A: `tar czf` of the RDB + models dir", "tar_input_bytes"),
    ("verify_seconds", "verify: `verify NAME --json` \"seconds\"", "archive_bytes"),
    ("verify_load_seconds", "  of which its trial load (\"load_seconds\")", "rdb_bytes"),
    ("verify_unpack", "  of which the rest: sha256, zstd, tar, files written and hashed",
     "archive_bytes"),
    ("verify_wall", "verify: wall time", None),
    ("load_baseline", "baseline B: redis-server alone, exec → PONG + `loading:0`", "rdb_bytes"),
    ("load_log", "  Redis's own \"DB loaded from disk\"", None),
    ("rdb_cli", "`redis-cli --rdb` of the live Redis", "rdb_cli_bytes"),
    ("restore_seconds", "restore: \"seconds\" (command → every service ready)",
     "archive_bytes"),
    ("restore_safety_seconds", "restore: its safety backup (\"safety_seconds\")", None),
    ("restore_wall", "restore: `restore NAME --yes --json` wall time", None),
)
RATIOS = (  # name, numerator, denominator, bound, whether the ratio must be at least it
    ("tar czf / backup", "tar_czf", "backup_seconds", TAR_BOUND, True),
    ("verify / redis-server load", "verify_seconds", "load_baseline", VERIFY_BOUND, False),
    ("restore / backup", "restore_seconds", "backup_seconds", RESTORE_BOUND, False),
)
# Where a restore's time goes, from the timestamps of its stderr lines: phase, the line
# that ends it (the first match after the previous phase's end).
RESTORE_PHASES = (
    ("verify, staging and the AOF the live Redis starts from", r"^verified "),
    ("safety backup (excluded from \"seconds\")", r"^verified .*pre-restore"),
    ("hold + stop redis and its dependents", r"^  redis +stopped"),
    ("swap directories, release", r"^starting redis"),
    ("redis loads, dependents ready, DBSIZE", r"^redis serves"),
)
OF = {"input_bytes": "input", "rdb_bytes": "RDB", "archive_bytes": "archive",
      "tar_input_bytes": "input", "rdb_cli_bytes": "RDB"}  # what a MB/s figure divides


# --- the stack -----------------------------------------------------------------------


def backup_environment(home: Path) -> dict[str, str]:
    """A stack rooted at HOME on fresh ports, with room for the data and no timed backup."""
    return stack_environment(home, clear=("BACKUP_", "DASHBOARD_")) | {
        "REDIS_MAXMEMORY": "3gb", "BACKUP_INTERVAL": "0"}


class Run(NamedTuple):
    """One CLI command: wall seconds, its JSON document, its stderr lines (seconds since
    the spawn, text)."""

    wall: float
    document: dict[str, Any]
    lines: list[tuple[float, str]]


def cli(env: dict[str, str], *args: str, limit: float = LIMIT) -> Run:
    """Run `python -m unistack ARGS`, timestamping each stderr line as it arrives."""
    lines: list[tuple[float, str]] = []
    begun = time.perf_counter()
    with subprocess.Popen([sys.executable, "-m", "unistack", *args], env=env, text=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        errors = child.stderr

        def collect() -> None:
            for line in errors:
                lines.append((time.perf_counter() - begun, line.rstrip("\n")))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            out = child.stdout.read()
            child.wait(timeout=limit)
        except BaseException:  # SIGTERM or a timeout: the command must not outlive us
            child.kill()
            raise
        wall = time.perf_counter() - begun
        reader.join(timeout=5)
    if child.returncode != 0:
        tail = "; ".join(text for _, text in lines[-5:])
        raise BenchmarkError(f"`unistack {' '.join(args)}` exited {child.returncode}: {tail}")
    return Run(wall, json.loads(out) if "--json" in args else {}, lines)


def live_client(settings: Settings) -> redis.Redis:
    """No retries inside a call (a loading Redis answers at once); long pipelines."""
    return redis_client(settings, timeout=120)


def quiet(client: redis.Redis) -> bool:
    """No save, AOF rewrite or load under way: the next step starts on an idle Redis."""
    try:
        info = client.info("persistence")
    except redis.RedisError:
        return False
    return not any(info[k] for k in ("loading", "rdb_bgsave_in_progress",
                                     "aof_rewrite_in_progress", "aof_rewrite_scheduled"))


def fill(client: redis.Redis, keys: int) -> None:
    """KEYS values of 1024 base64 characters (768 random bytes), then a stream of KEYS/5
    entries, both through pipelines of BATCH, as in the reference."""
    begun, step = time.perf_counter(), max(keys // 10, BATCH)
    for start in range(0, keys, BATCH):
        count = min(BATCH, keys - start)
        blob = base64.b64encode(os.urandom(768 * count))
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.set(f"key:{start + i:07d}", blob[i * 1024:(i + 1) * 1024])
        pipe.execute()
        if (start + count) % step < BATCH:
            progress(f"  filled {start + count:,} keys in {time.perf_counter() - begun:.0f} s")
    for start in range(0, keys // 5, BATCH):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + BATCH, keys // 5)):
            pipe.xadd("bench:events", {"seq": n, "type": "evt", "payload": os.urandom(8).hex()})
        pipe.execute()
    progress(f"  filled {keys:,} keys and a {keys // 5:,}-entry stream in "
             f"{time.perf_counter() - begun:.0f} s")


def write_models(models_dir: Path, total_mb: int) -> None:
    """MODEL_FILES random files under models/bench/data/. Not a version directory (not a
    number): a version without a loadable model would make the ML engine unready (an
    unservable model), and a restore waits for every service to be ready."""
    directory = models_dir / "bench" / "data"
    directory.mkdir(parents=True, exist_ok=True)
    size = total_mb * 1_000_000 // MODEL_FILES
    for n in range(MODEL_FILES):
        with open(directory / f"part{n}.bin", "wb") as handle:
            for done in range(0, size, 1 << 20):
                handle.write(os.urandom(min(1 << 20, size - done)))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


# --- the live Redis's BGSAVE, watched during a backup --------------------------------


class SaveWatch:
    """Polls INFO persistence every 20 ms on its own connection; `seconds` is the first
    BGSAVE seen from start to end."""

    def __init__(self, settings: Settings) -> None:
        self._client = live_client(settings)
        self._stop = threading.Event()
        self._began: float | None = None
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SaveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(0.02) and self.seconds is None:
            with contextlib.suppress(redis.RedisError):
                saving = self._client.info("persistence")["rdb_bgsave_in_progress"]
                now = time.perf_counter()
                if saving and self._began is None:
                    self._began = now
                elif not saving and self._began is not None:
                    self.seconds = now - self._began


# --- baseline B: redis-server alone loading the RDB, polled over a raw socket ----------


def _reply(sock: socket.socket) -> bytes:
    """One RESP reply: a status or error line, or a bulk string's payload."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, rest = data.split(b"\r\n", 1)
    if not head.startswith(b"$"):
        return head
    size = int(head[1:])
    while len(rest) < size + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return rest[:size]


def ask(port: int, *commands: bytes) -> list[bytes]:
    """Send each inline COMMAND in turn on one connection; the replies."""
    with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
        answers = []
        for command in commands:
            sock.sendall(command + b"\r\n")
            answers.append(_reply(sock))
        return answers


def loaded(port: int) -> bool:
    """`+PONG`, then INFO persistence with `loading:0` (a loading server says -LOADING)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            if _reply(sock) != b"+PONG":
                return False
            sock.sendall(b"INFO persistence\r\n")
            return b"loading:0" in _reply(sock)
    except OSError:
        return False


def load_baseline(program: str, rdb: Path, directory: Path) -> dict[str, Any]:
    """exec → loaded of redis-server alone on a copy of RDB in DIRECTORY."""
    directory.mkdir()
    shutil.copyfile(rdb, directory / "dump.rdb")
    port = free_ports(1)[0]
    with open(directory / "redis.log", "wb") as log:
        begun = time.perf_counter()
        server = subprocess.Popen([program, "--port", str(port), "--bind", LOOPBACK, "--dir",
                                   str(directory), "--appendonly", "no", "--save", ""],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if server.poll() is not None:
                raise BenchmarkError(f"the scratch redis-server exited {server.returncode}")
            return loaded(port)

        seconds = moment_when(ready, LIMIT, POLL, "redis-server loading the RDB") - begun
        keys = int(ask(port, b"DBSIZE")[0].lstrip(b":"))
        with contextlib.suppress(OSError):  # the server closes as it exits
            ask(port, b"SHUTDOWN NOSAVE")
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    found = re.search(r"DB loaded from disk: ([\d.]+) seconds",
                      (directory / "redis.log").read_text(errors="replace"))
    shutil.rmtree(directory)
    return {"load_baseline": seconds, "load_log": float(found.group(1)) if found else None,
            "load_keys": keys}


# --- one run -------------------------------------------------------------------------


def measure_backup(env: dict[str, str], settings: Settings, scratch: Path) -> dict[str, Any]:
    """`backup --json`, then (while the page cache holds them) `tar czf` of its inputs."""
    with SaveWatch(settings) as watch:
        run = cli(env, "backup", "--json")
    shown(run, "backup")
    rdb = settings.data_dir / "redis" / "dump.rdb"
    os.link(rdb, scratch / "dump.rdb")  # the bytes this backup's BGSAVE wrote
    rdb_bytes = (scratch / "dump.rdb").stat().st_size
    backup = run.document["backup"]
    sample = {"backup_seconds": run.document["seconds"], "backup_wall": run.wall,
              "backup_verify_seconds": run.document["verify_seconds"],
              "backup_bgsave": watch.seconds, "backup_keys": backup["keys"],
              "backup_archive": run.document["seconds"] - watch.seconds
              if watch.seconds else None,
              "backup_name": backup["name"], "archive_bytes": backup["size"],
              "rdb_bytes": rdb_bytes,
              "input_bytes": rdb_bytes + tree_bytes(settings.models_dir)
              + tree_bytes(settings.data_dir / "market"),
              "tar_input_bytes": rdb_bytes + tree_bytes(settings.models_dir),
              "backup_lines": run.lines}
    out = scratch / "out.tar.gz"
    progress("  baseline A: tar czf ...")
    sample["tar_czf"] = timed_run(["tar", "czf", str(out), "-C", str(scratch), "dump.rdb",
                                   "-C", str(settings.var), "models"], timeout=LIMIT)
    sample["tar_bytes"] = out.stat().st_size
    out.unlink()
    progress(f"  tar czf {sample['tar_czf']:.1f} s")
    return sample


def measure_verify(env: dict[str, str], settings: Settings, scratch: Path,
                   name: str) -> dict[str, Any]:
    run = cli(env, "verify", name, "--json")
    shown(run, "verify")
    progress("  baseline B: redis-server loading the same RDB ...")
    sample = load_baseline(settings.redis_server_bin, scratch / "dump.rdb", scratch / "load")
    progress(f"  redis-server alone: {sample['load_baseline']:.2f} s")
    return {"verify_seconds": run.document["seconds"], "verify_wall": run.wall,
            "verify_load_seconds": run.document["load_seconds"],
            "verify_unpack": run.document["seconds"] - run.document["load_seconds"],
            "verify_keys": run.document["keys"], "verify_lines": run.lines, **sample}


def measure_rdb_cli(settings: Settings, scratch: Path) -> dict[str, Any]:
    """redis-cli --rdb of the live Redis; the password in REDISCLI_AUTH, never in `ps`."""
    out = scratch / "cli.rdb"
    env = {**os.environ, "REDISCLI_AUTH": settings.redis_password}
    seconds = timed_run(["redis-cli", "-h", LOOPBACK, "-p", str(settings.redis_port),
                         "--rdb", str(out)], env, LIMIT)
    size = out.stat().st_size
    out.unlink()
    progress(f"  redis-cli --rdb {seconds:.1f} s")
    return {"rdb_cli": seconds, "rdb_cli_bytes": size}


def measure_restore(env: dict[str, str], settings: Settings, name: str) -> dict[str, Any]:
    run = cli(env, "restore", name, "--yes", "--json")
    shown(run, "restore")
    dbsize = int(live_client(settings).dbsize())
    return {"restore_seconds": run.document["seconds"], "restore_wall": run.wall,
            "restore_safety_seconds": run.document["safety_seconds"],
            "restore_keys": run.document["keys"], "restore_dbsize": dbsize,
            "restore_phases": phases(run.lines), "restore_lines": run.lines}


def phases(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds of each RESTORE_PHASES step, from the stderr line that ends it."""
    found, last, at = {}, 0.0, 0
    for label, pattern in RESTORE_PHASES:
        for index in range(at, len(lines)):
            if re.search(pattern, lines[index][1]):
                found[label], last, at = lines[index][0] - last, lines[index][0], index + 1
                break
    return found


def shown(run: Run, what: str) -> None:
    for offset, text in run.lines:
        progress(f"  [{what} +{offset:6.2f} s] {text}")
    progress(f"  {what}: wall {run.wall:.2f} s, "
             + ", ".join(f"{k} {v}" for k, v in run.document.items()
                         if k.endswith("seconds") or k == "keys"))


def one_run(env: dict[str, str], settings: Settings, scratch: Path) -> dict[str, Any]:
    client = live_client(settings)
    wait_for(lambda: hub_healthy(settings, 2.0), 120, 0.1, "every service ready (hub /status)")
    load = os.getloadavg()[0]
    wait_for(lambda: quiet(client), LIMIT, 0.1, "an idle live Redis")
    sample = measure_backup(env, settings, scratch)
    sample.update(measure_verify(env, settings, scratch, sample["backup_name"]))
    wait_for(lambda: quiet(client), LIMIT, 0.1, "an idle live Redis")
    sample.update(measure_rdb_cli(settings, scratch))
    wait_for(lambda: quiet(client), LIMIT, 0.1, "an idle live Redis")
    sample.update(measure_restore(env, settings, sample["backup_name"]))
    if sample["restore_keys"] != sample["backup_keys"]:
        raise BenchmarkError(f"restored {sample['restore_keys']} keys; the backup held "
                             f"{sample['backup_keys']}")
    for path in settings.backups_dir.iterdir():  # this run's backup and safety backup
        path.unlink()
    (scratch / "dump.rdb").unlink()
    return {**sample, "load1": load}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    home = make_home("us-bk-")
    env = backup_environment(home)
    facts: dict[str, Any] = {"load_start": os.getloadavg()[0]}
    try:
        progress(f"starting the stack in {home} ...")
        cli(env, "start", limit=120)
        settings = load_settings(env)
        progress(f"filling Redis with {args.keys:,} keys ...")
        fill(live_client(settings), args.keys)
        write_models(settings.models_dir, args.models_mb)
        facts.update(dataset(settings))
        scratch = home / "scratch"
        scratch.mkdir()
        runs = []
        for number in range(1, args.runs + 1):
            progress(f"run {number} of {args.runs}")
            runs.append(one_run(env, settings, scratch))
        facts["load_end"] = os.getloadavg()[0]
        return {**facts, "runs": runs}
    finally:
        progress("cleaning up ...")
        with contextlib.suppress(Exception):  # whatever broke, the kill below follows
            cli(env, "stop", limit=60)
        kill_leftovers(home, progress)
        shutil.rmtree(home, ignore_errors=True)


def dataset(settings: Settings) -> dict[str, Any]:
    info = live_client(settings).info("memory")
    return {"dbsize": int(live_client(settings).dbsize()),
            "used_memory": int(info["used_memory"]),
            "models_bytes": tree_bytes(settings.models_dir)}


# --- the report ----------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float] | None:
    if not values or any(v is None for v in values):
        return None
    return median_range(values)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, label, size_key in MEASURES:
        found = stats([run[key] for run in runs])
        if found is None:
            continue
        size = statistics.median(run[size_key] for run in runs) if size_key else None
        summary[key] = {**found, "label": label, "of": size_key,
                        "mb_per_s": size / 1e6 / found["median"] if size else None}
    return summary


def ratios(runs: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for name, top, bottom, bound, at_least in RATIOS:
        value = summary[top]["median"] / summary[bottom]["median"]
        per_run = [run[top] / run[bottom] for run in runs]
        passed = value >= bound if at_least else value <= bound
        found.append({"name": name, "value": value, "min": min(per_run), "max": max(per_run),
                      "bound": f"{'≥' if at_least else '≤'} {bound:g}", "pass": passed})
    return found


def restore_phases(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    labels = [label for label, _ in RESTORE_PHASES]
    return {label: row for label in labels
            if (row := stats([run["restore_phases"].get(label) for run in runs]))}


def versions() -> dict[str, str]:
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                            check=False).stdout
    found = re.search(r"v=(\S+)", server)
    return {"python": platform.python_version(), "redis": found.group(1) if found else "?",
            "zstandard": zstandard.__version__, "redis-py": redis.__version__}


def span(row: dict[str, float], unit: str = " s", digits: int = 2) -> str:
    return (f"{row['median']:.{digits}f}{unit} [{row['min']:.{digits}f}{DASH}"
            f"{row['max']:.{digits}f}]")


def markdown(report: dict[str, Any]) -> str:
    data, runs = report["data"], report["data"]["runs"]
    first = runs[0]
    lines = [f"Measured on {report['date']}: 2 cores, no GPU; 1-minute load average "
             f"{data['load_start']:.2f} at the start, "
             + ", ".join(f"{run['load1']:.2f}" for run in runs)
             + f" at each run's start, {data['load_end']:.2f} at the end. "
             f"Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
             "",
             f"Data: {data['dbsize']:,} keys (DBSIZE; {report['keys']:,} values of 1 KB and a "
             f"{report['keys'] // 5:,}-entry stream), used_memory {data['used_memory'] / 1e9:.2f}"
             f" GB; RDB {first['rdb_bytes'] / 1e9:.3f} GB, models {data['models_bytes'] / 1e6:.0f}"
             f" MB, backup input {first['input_bytes'] / 1e9:.3f} GB, archive "
             f"{first['archive_bytes'] / 1e9:.3f} GB, `tar czf` output "
             f"{first['tar_bytes'] / 1e9:.3f} GB. {len(runs)} run(s); median [min{DASH}max].",
             "", f"| Step | Median [min{DASH}max] | MB/s (median) |", "|---|---|---:|"]
    for row in report["summary"].values():
        rate = f"{row['mb_per_s']:.0f} of {OF[row['of']]}" if row["mb_per_s"] else "-"
        lines.append(f"| {row['label']} | {span(row)} | {rate} |")
    lines += ["", "| Ratio (of medians) | Value | Per run | Bound | Verdict |",
              "|---|---:|---|---|---|"]
    for ratio in report["ratios"]:
        lines.append(f"| {ratio['name']} | {ratio['value']:.2f} | {ratio['min']:.2f}{DASH}"
                     f"{ratio['max']:.2f} | {ratio['bound']} | "
                     f"{'PASS' if ratio['pass'] else 'FAIL'} |")
    lines += ["", "Restore, where the time goes (from its stderr lines' timestamps):", "",
              f"| Phase | Median [min{DASH}max] |", "|---|---|"]
    lines += [f"| {label} | {span(row)} |" for label, row in report["restore_phases"].items()]
    keys = ", ".join(f"{r['backup_keys']:,} → {r['restore_keys']:,} (live DBSIZE "
                     f"{r['restore_dbsize']:,})" for r in runs)
    lines += ["", f"Keys, backup → restore, per run: {keys}.", "",
              "The reference's own figures (backup-baselines.md, another VM of 2 vCPU; "
              "1.04 GB RDB, 1.25 GB input):", "", f"| Reference | Median [min{DASH}max] |",
              "|---|---|"]
    lines += [f"| {name} | {span({'median': median, 'min': low, 'max': high})}"
              f"{', ' + note if note else ''} |" for name, median, low, high, note in REFERENCE]
    verdict = all(r["pass"] for r in report["ratios"])
    lines += ["", "Acceptance (issue 11, line 2): " + "; ".join(
        f"{r['name']} {r['value']:.2f} {r['bound']}" for r in report["ratios"])
        + f" → {'PASS' if verdict else 'FAIL'}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time unistack's backup, verify and restore against tar czf, "
                    "redis-server loading the RDB, and its own backup time.")
    parser.add_argument("--keys", type=positive, help="1 KB values (1,000,000; the stream "
                        "gets a fifth as many entries)")
    parser.add_argument("--models-mb", type=positive, help="MB of model files (200)")
    parser.add_argument("--quick", action="store_true",
                        help="about 10 %% of the data (100,000 keys, 20 MB of models)")
    parser.add_argument("--runs", type=positive, default=3, help="measured runs (3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.keys = args.keys or (100_000 if args.quick else 1_000_000)
    args.models_mb = args.models_mb or (20 if args.quick else 200)
    return run_benchmark("backup", lambda: print_report(args))


def print_report(args: argparse.Namespace) -> None:
    """Measure; print the tables or one JSON document."""
    data = collect(args)
    summary = summarize(data["runs"])
    result = {"date": datetime.date.today().isoformat(), "keys": args.keys,
              "models_mb": args.models_mb, "versions": versions(), "data": data,
              "summary": summary, "ratios": ratios(data["runs"], summary),
              "restore_phases": restore_phases(data["runs"]),
              "reference": [dict(zip(("what", "median", "min", "max", "note"), row, strict=True))
                            for row in REFERENCE]}
    result["pass"] = all(r["pass"] for r in result["ratios"])
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    sys.exit(main())
