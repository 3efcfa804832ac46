"""Recovery benchmark (issue 3): a crashed (kill -9) or hung (SIGSTOP) service under the
unistack hub, against plain supervisord and Monit 5.33 supervising the same redis-server.

1. unistack: a stack in a temp UNISTACK_HOME on free loopback ports, with FLAP_RESTARTS
   raised so that no trial becomes a LOOPING incident. Trials on redis and prometheus;
   the hub's GET /status is polled every 5 ms for detection and for ready-again.
2. plain supervisord: the project's redis program without the hub; PING is polled.
3. Monit, `set daemon 1`, TERM-then-KILL stop script, `with timeout 1 seconds`, under a
   prompt-reaping subreaper; PING is polled and monit.log watched.
4. CPU of the idle hub and of Monit over the same window; 5. a soak with both cores
   saturated and a large Redis dataset saved again and again: the hub must restart nothing.

Usage: .venv/bin/python benchmarks/recovery.py [--trials N] [--soak-seconds S]
       [--cpu-seconds S] [--json]
Progress goes to stderr; the Markdown tables (or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import redis

from harness.debian import program
from harness.faults import FAULT_LABELS, FAULT_TRIALS, FAULTS, PHASE, SETTLE, inject
from harness.figures import figure_cell, machine_figures, ratio_text, trial_figures
from harness.monit import MONIT_SETTLE, MonitRun
from harness.processes import busy_loop, cpu_seconds, end_process
from harness.redisping import answering_pid, settled_redis
from harness.runs import benchmark_main, positive, progress, run_trials
from harness.stacks import Stack, make_home, redis_client, remove_homes, stack_environment
from harness.supervisord import baseline_settings, run_supervisord, stop_baseline
from harness.tables import acceptance_lines, machine_line, markdown_table, trials_json
from harness.waiting import Watch, poll, wait_for
from unistack.config import Settings
from unistack.event import Kind
from unistack.policy import READY

POLL = 0.005  # seconds between two polls of /status or PING
WAIT = 0.01  # seconds between two checks while waiting for a trial to be possible
RECOVER_LIMIT = 15.0  # not serving again from a new pid by then: a failed trial
BASELINE_HANG_LIMIT = 10.0  # plain supervisord never recovers a hang: stop waiting here
SETTLE_LIMIT = 60.0
START_LIMIT = 60.0
CPU_SETTLE = 5.0  # seconds after healthy before the CPU window: start-up work is done
DATASET_KEYS = 6000  # x VALUE_BYTES = 600 MB, under redis.conf's maxmemory 1gb
VALUE_BYTES = 100_000
LOAD_BATCH = 50  # keys per pipeline while loading (5 MB)
OVERWRITE_KEYS = 10  # keys rewritten every OVERWRITE_PAUSE during the soak (10 MB/s)
OVERWRITE_PAUSE = 0.1
QUIET_KINDS = (Kind.READY, Kind.STARTED)  # not worth listing under "other events"
# The events that come with a restart (a scheduled backup's backup_ok, a resource
# warning or a busy service left running are listed, never counted as restarts).
RESTART_KINDS = (Kind.CRASHED, Kind.HUNG, Kind.FAILED, Kind.LOOPING, Kind.RESTARTED_WITH)

SYSTEM_LABELS = {"unistack": "unistack hub", "supervisord": "plain supervisord",
                 "monit": "Monit `set daemon 1`"}
SERVICES = ("redis", "prometheus")
# Every row of the recovery table: fault, system, service.
ROWS = tuple((fault, system, service) for fault in FAULTS
             for system, service in (("unistack", "redis"), ("unistack", "prometheus"),
                                     ("supervisord", "redis"), ("monit", "redis")))
ACCEPT_HUNG_DETECTED = 1.5  # issue 3: hang detected within 1.5 s (median) ...
ACCEPT_HUNG_READY = 2.0  # ... and serving again within 2 s, faster than Monit
ACCEPT_CRASH_READY = 0.5
ACCEPT_HUB_CPU = 1.0  # percent of one core

class Trial(NamedTuple):
    detected: float | None  # signal → the supervisor noticed (None: no sign of it seen)
    ready: float | None  # signal → serving again from a new pid (None: not within the limit)
    state: str = ""  # unistack: the service's state in the first /status that differed
    counted: bool | None = None  # unistack: the hub counted the restart in `restarts`


Samples = dict[str, list[Trial]]


def key(fault: str, system: str, service: str) -> str:
    return f"{system}:{service}:{fault}"


# --- unistack -----------------------------------------------------------------------


def hub_trial(stack: Stack, name: str, fault: str) -> Trial:
    """Signal NAME's process; poll /status until NAME is ready again with a new pid."""
    before = stack.settled(name, SETTLE, SETTLE_LIMIT)
    pid, detected, state = before["pid"], None, ""
    _, began = inject(pid, fault)
    try:
        while time.perf_counter() - began < RECOVER_LIMIT:
            now = stack.services().get(name)
            at = time.perf_counter() - began
            if now and detected is None and (now["state"] != READY or now["pid"] != pid):
                detected, state = at, now["state"]
            if now and now["ready"] and now["pid"] not in (0, pid):
                return Trial(detected, at, state, now["restarts"] > before["restarts"])
            time.sleep(POLL)
        return Trial(detected, None, state)
    finally:
        end_process(pid)


def unistack_trials(home: Path, trials: int, samples: Samples) -> None:
    progress(f"unistack: starting a stack in {home} (FLAP_RESTARTS=1000) ...")
    stack = Stack.start(home, FAULT_TRIALS, START_LIMIT)
    for fault in FAULTS:
        for name in SERVICES:
            run_trials(trials, partial(hub_trial, stack, name, fault),
                       samples[key(fault, "unistack", name)], f"unistack {name} {fault}", describe)
    stack.stop()


def describe(trial: Trial) -> str:
    extra = f", {trial.state}, counted {trial.counted}" if trial.state else ""
    return (f"detected {figure_cell(trial.detected, unit=' s')}, ready "
            f"{figure_cell(trial.ready, empty='not recovered', unit=' s')}{extra}")


# --- baselines: plain supervisord and Monit -----------------------------------------


class Target(NamedTuple):
    """A Redis under a baseline supervisor: where it answers, how long it must have lived."""

    port: int
    password: str
    settle: float
    log: Path | None = None  # the supervisor's log: its first new line is its reaction


def log_grew(path: Path) -> Watch:
    """Watches PATH, a log file, for its first new line (its size checked every POLL)."""
    def size() -> int:
        return path.stat().st_size if path.exists() else 0

    before = size()
    return Watch(lambda: size() > before, POLL)


def redis_trial(target: Target, fault: str, limit: float) -> Trial:
    """Signal TARGET's Redis; poll PING until a new pid answers or LIMIT passes."""
    port, password = target.port, target.password
    pid = wait_for(lambda: settled_redis(port, password, target.settle), SETTLE_LIMIT, WAIT,
                   f"redis on port {port} answering for {target.settle:g} s")
    time.sleep(random.uniform(0, PHASE))
    watch = log_grew(target.log) if target.log else None  # armed just before the signal
    began = time.perf_counter()
    os.kill(pid, FAULTS[fault])
    try:
        back = poll(lambda: answering_pid(port, password) not in (None, pid), limit, POLL)
        ready = time.perf_counter() - began if back else None
    finally:
        noticed = watch.since(began) if watch else None
        end_process(pid)
    return Trial(noticed, ready)


def baseline_trials(home: Path, trials: int, samples: Samples) -> None:
    """The project's redis (and prometheus) programs under supervisord alone; redis trials."""
    progress(f"plain supervisord: starting the same programs in {home} ...")
    directory = home / "baseline"
    settings, conf = baseline_settings(stack_environment(home), directory)
    run_supervisord(settings, conf, START_LIMIT)
    target = Target(settings.redis_port, settings.redis_password, SETTLE)
    limits = {"kill": RECOVER_LIMIT, "stop": BASELINE_HANG_LIMIT}
    for fault, limit in limits.items():
        run_trials(trials, partial(redis_trial, target, fault, limit),
                   samples[key(fault, "supervisord", "redis")], f"supervisord redis {fault}",
                   describe)
    stop_baseline(directory / "supervisor.sock", home)


def monit_trials(run: MonitRun, trials: int, samples: Samples) -> None:
    target = Target(run.port, "", MONIT_SETTLE, run.directory / "monit.log")
    for fault in FAULTS:
        run_trials(trials, partial(redis_trial, target, fault, RECOVER_LIMIT),
                   samples[key(fault, "monit", "redis")], f"monit redis {fault}", describe)


# --- CPU and soak -------------------------------------------------------------------


def cpu_window(pid: int, seconds: float, setting: str) -> dict[str, Any]:
    """CPU use of PID (and of its children it waited for) over SECONDS, as % of one core.
    Nothing polls it meanwhile."""
    processes, process = len(psutil.pids()), psutil.Process(pid)
    before, began = cpu_seconds(process, children=True), time.perf_counter()
    time.sleep(seconds)  # the window itself: any polling would add to the CPU measured
    used = cpu_seconds(process, children=True) - before
    window = time.perf_counter() - began
    return {"setting": setting, "window": window, "cpu_seconds": used,
            "percent": 100 * used / window, "processes": processes}


def hub_setting(settings: Settings) -> str:
    probes = sorted({t.interval for t in settings.probes.values()})
    return (f"probes every {'/'.join(f'{p:g}' for p in probes)} s, "
            f"loop {settings.hub_loop_interval:g} s")


def load_dataset(client: redis.Redis, value: bytes, deadline: float) -> dict[str, float]:
    """SET DATASET_KEYS keys of VALUE through pipelines; how much, how long."""
    began, keys = time.perf_counter(), 0
    while keys < DATASET_KEYS and time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for index in range(keys, min(keys + LOAD_BATCH, DATASET_KEYS)):
            pipe.set(f"soak:{index}", value)
        pipe.execute()
        keys = min(keys + LOAD_BATCH, DATASET_KEYS)
    memory: Any = client.info("memory")
    return {"keys": keys, "mb": keys * len(value) / 1e6, "seconds": time.perf_counter() - began,
            "used_memory_mb": memory["used_memory"] / 1e6}


def save_repeatedly(client: redis.Redis, value: bytes, deadline: float) -> dict[str, float]:
    """Until DEADLINE: a new BGSAVE whenever none runs, and OVERWRITE_KEYS keys rewritten
    every OVERWRITE_PAUSE, so that each fork copies pages while it saves."""
    saves: Any = client.info("persistence")
    first, overwritten, errors = saves["rdb_saves"], 0, 0
    while time.monotonic() < deadline:
        try:
            if not client.info("persistence")["rdb_bgsave_in_progress"]:
                client.bgsave(schedule=True)  # waits for an AOF rewrite instead of failing
            pipe = client.pipeline(transaction=False)
            for _ in range(OVERWRITE_KEYS):
                pipe.set(f"soak:{random.randrange(DATASET_KEYS)}", value)
            pipe.execute()
            overwritten += OVERWRITE_KEYS
        except redis.RedisError as exc:
            errors += 1
            progress(f"  soak writer: {exc}")
        time.sleep(OVERWRITE_PAUSE)
    saves = client.info("persistence")
    return {"bgsaves": saves["rdb_saves"] - first, "aof_rewrites": saves["aof_rewrites"],
            "overwritten_mb": overwritten * len(value) / 1e6, "errors": errors}


def soak(stack: Stack, seconds: float) -> dict[str, Any]:
    """SECONDS with both cores busy while Redis loads a dataset and BGSAVEs; what the hub did."""
    before, wall = stack.services(), time.time()
    deadline = time.monotonic() + seconds
    burners = [busy_loop(seconds, str(stack.home)) for _ in range(psutil.cpu_count() or 2)]
    client = redis_client(stack.settings, timeout=30, connect_timeout=5)
    value = os.urandom(VALUE_BYTES)
    try:
        load = load_dataset(client, value, deadline)
        progress(f"  loaded {load['mb']:.0f} MB in {load['seconds']:.1f} s; BGSAVE loop ...")
        saves = save_repeatedly(client, value, deadline)
    finally:
        for burner in burners:
            burner.wait(timeout=seconds + 30)
    after = stack.services()
    client.flushall()  # so that the final save at stop is quick
    return {"seconds": seconds, "burners": len(burners), "load": load, **saves,
            **restarts_between(before, after, stack.get("/events").get("events", []), wall)}


def restarts_between(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                     events: list[dict[str, Any]], since: float) -> dict[str, Any]:
    noisy = [e for e in events if e["ts"] >= since and e["kind"] not in QUIET_KINDS]
    restart_events = [e for e in noisy if e["kind"] in RESTART_KINDS]
    status = sum(after[n]["restarts"] - before[n]["restarts"] for n in after)
    return {"status_restarts": status, "restart_events": len(restart_events),
            "restarts": status + len(restart_events),
            "pids_changed": sum(after[n]["pid"] != before[n]["pid"] for n in after),
            "other_events": [f"{e['service']} {e['kind']}: {e['detail']}" for e in noisy]}


def cpu_and_soak(home: Path, cpu_window_s: float, soak_s: float) -> dict[str, Any]:
    progress(f"unistack: a fresh stack in {home} for the CPU window and the soak ...")
    stack = Stack.start(home, FAULT_TRIALS, START_LIMIT)
    time.sleep(CPU_SETTLE)  # first scrapes and event persistence are start-up work
    hub_pid = wait_for(lambda: stack.get("/status").get("hub", {}).get("pid"), 10.0, WAIT,
                       "hub pid")
    progress(f"  hub CPU over {cpu_window_s:g} s ...")
    cpu = cpu_window(hub_pid, cpu_window_s, hub_setting(stack.settings))
    progress(f"  soak {soak_s:g} s: {psutil.cpu_count()} busy loops, dataset, BGSAVEs ...")
    result = soak(stack, soak_s)
    stack.stop()
    return {"hub_cpu": cpu, "soak": result}


# --- the run ------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> dict[str, Any]:
    root = make_home("usr-")
    samples: Samples = {key(*row): [] for row in ROWS}
    monit_run: MonitRun | None = None
    load_before = os.getloadavg()[0]
    try:
        unistack_trials(root / "t", args.trials, samples)
        result = cpu_and_soak(root / "s", args.cpu_seconds, args.soak_seconds)
        baseline_trials(root / "b", args.trials, samples)
        monit, reason = program("monit", "monit")
        if monit:
            progress("Monit: set daemon 1, TERM→KILL stop script, under a subreaper ...")
            monit_run = MonitRun.start(monit, root / "m")
            monit_trials(monit_run, args.trials, samples)
            wait_for(lambda: settled_redis(monit_run.port, "", MONIT_SETTLE), SETTLE_LIMIT,
                     WAIT, "redis under Monit")
            progress(f"  Monit CPU over {args.cpu_seconds:g} s ...")
            result["monit_cpu"] = cpu_window(monit_run.monit_pid(), args.cpu_seconds,
                                             "`set daemon 1`")
        else:
            progress(f"Monit baseline n/a: {reason}")
        result["monit"] = {"available": bool(monit), "reason": reason}
    finally:
        if monit_run:
            with contextlib.suppress(Exception):
                monit_run.stop()
        remove_homes(root, ("t", "s", "b"))
    return {"samples": samples, "machine": machine_figures(load_before), **result}


# --- the report ---------------------------------------------------------------------


def summarize(trials: list[Trial]) -> dict[str, Any]:
    ready = trial_figures(t.ready for t in trials)
    detected = trial_figures(t.detected for t in trials)
    counted = [t.counted for t in trials if t.counted is not None]
    return {"n": len(trials), "failures": ready["missing"], "ready_median": ready["p50"],
            "ready_max": ready["max"], "detected_median": detected["p50"],
            "detected_max": detected["max"], "counted": sum(counted) if counted else None}


def summaries(samples: Samples) -> dict[str, dict[str, Any]]:
    table = {k: summarize(v) for k, v in samples.items()}
    for fault, system, service in ROWS:
        row, monit = table[key(fault, system, service)], table[key(fault, "monit", "redis")]
        for measure in ("ready", "detected"):
            ours, theirs = row[f"{measure}_median"], monit[f"{measure}_median"]
            ratio = ours / theirs if system == "unistack" and ours and theirs else None
            row[f"{measure}_ratio"] = ratio
    return table


def trial_row(fault: str, system: str, service: str, row: dict[str, Any]) -> list[object]:
    n, never = row["n"], "never" if row["failures"] == row["n"] else "-"
    return [FAULT_LABELS[fault], SYSTEM_LABELS[system], service, n,
            figure_cell(row["detected_median"], n), figure_cell(row["detected_max"], n),
            figure_cell(row["ready_median"], n, never), figure_cell(row["ready_max"], n, never),
            row["failures"] if n else "n/a", ratio_text(row["detected_ratio"]),
            ratio_text(row["ready_ratio"])]


def trial_table(table: dict[str, dict[str, Any]], trials: int) -> list[str]:
    rows = [f"Recovery, {trials} trials per row, signal at a random U(0, {PHASE:g} s) phase, "
            f"poll every {POLL * 1000:g} ms (seconds from the signal; ratio = unistack median "
            "/ Monit median on redis).", "", *markdown_table(
                ("Fault", "System", "Service", "n", "Detected median", "Detected max",
                 "Ready median", "Ready max", "Not recovered", "Detected ratio", "Ready ratio"),
                "lll" + "r" * 8, (trial_row(*row, table[key(*row)]) for row in ROWS))]
    counted = [table[key(f, "unistack", s)] for f in FAULTS for s in SERVICES]
    rows += ["", f"The hub counted the restart in `restarts` in "
             f"{sum(r['counted'] or 0 for r in counted)} of {sum(r['n'] for r in counted)} "
             "unistack trials."]
    return rows


def cpu_table(result: dict[str, Any]) -> list[str]:
    rows: list[list[object]] = []
    for name, label in (("hub_cpu", "unistack hub"), ("monit_cpu", "Monit")):
        cpu = result.get(name)
        rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a"] if cpu is None else [
            label, cpu["setting"], f"{cpu['window']:.1f}", f"{cpu['cpu_seconds']:.2f}",
            f"{cpu['percent']:.2f}", cpu["processes"]])
    return markdown_table(("Supervisor", "Setting", "Window (s)", "CPU seconds",
                           "CPU (% of one core)", "Processes on the machine"), "llrrrr", rows)


def soak_table(soak_result: dict[str, Any]) -> list[str]:
    load = soak_result["load"]
    others = "; ".join(soak_result["other_events"]) or "none"
    return [*markdown_table(("Soak", "Value"), "lr", [
        ("duration (s), busy loops", f"{soak_result['seconds']:g}, {soak_result['burners']}"),
        ("dataset loaded (MB in s)", f"{load['mb']:.0f} in {load['seconds']:.1f}"),
        ("Redis used_memory after the load (MB)", f"{load['used_memory_mb']:.0f}"),
        ("BGSAVEs completed", soak_result["bgsaves"]),
        ("BGREWRITEAOFs (automatic)", soak_result["aof_rewrites"]),
        ("MB overwritten meanwhile", f"{soak_result['overwritten_mb']:.0f}"),
        ("writer errors", soak_result["errors"]),
        ("hub restarts (`restarts` in /status + restart events)", soak_result["restarts"]),
        ("service pids changed", soak_result["pids_changed"])]),
        "", f"Events other than ready/started during the soak: {others}."]


def acceptance(table: dict[str, dict[str, Any]], result: dict[str, Any]) -> list[tuple[bool, str]]:
    lines = [hung_line(table, name) for name in SERVICES]
    crash = [table[key("kill", "unistack", s)] for s in SERVICES]
    passed = all(r["ready_median"] is not None and r["ready_median"] <= ACCEPT_CRASH_READY
                 and r["failures"] == 0 for r in crash)
    lines.append((passed, "crash: ready median " + ", ".join(
        f"{s} {figure_cell(r['ready_median'], r['n'], 'never')} s" for s, r in zip(
            SERVICES, crash, strict=True)) + f" ≤ {ACCEPT_CRASH_READY:g} s"))
    cpu = result["hub_cpu"]["percent"]
    lines.append((cpu <= ACCEPT_HUB_CPU, f"hub CPU {cpu:.2f} % ≤ {ACCEPT_HUB_CPU:g} %"))
    soak_result = result["soak"]
    quiet = soak_result["restarts"] == 0 and soak_result["pids_changed"] == 0
    lines.append((quiet, f"soak: {soak_result['restarts']} restarts, "
                         f"{soak_result['pids_changed']} pids changed (0 expected)"))
    return lines


def hung_line(table: dict[str, dict[str, Any]], service: str) -> tuple[bool, str]:
    row, monit = table[key("stop", "unistack", service)], table[key("stop", "monit", "redis")]
    detected, ready = row["detected_median"], row["ready_median"]
    passed = (row["failures"] == 0 and detected is not None and ready is not None
              and detected <= ACCEPT_HUNG_DETECTED and ready <= ACCEPT_HUNG_READY)
    text = (f"hung {service}: detected median {figure_cell(detected, row['n'], 'never')} s ≤ "
            f"{ACCEPT_HUNG_DETECTED:g} s, ready median {figure_cell(ready, row['n'], 'never')} s ≤ "
            f"{ACCEPT_HUNG_READY:g} s, {row['n'] - row['failures']}/{row['n']} recovered")
    if monit["n"] and monit["ready_median"] is not None and ready is not None:
        faster = ready < monit["ready_median"] and (
            monit["detected_median"] is None or (detected or 0) < monit["detected_median"])
        passed = passed and faster
        text += (f", faster than Monit (detected {figure_cell(monit['detected_median'])} s, "
                 f"ready {monit['ready_median']:.3f} s)")
    else:
        text += ", Monit comparison n/a"
    return passed, text


def markdown(report: dict[str, Any], trials: int) -> str:
    rows = [machine_line(**report["machine"]), "", *trial_table(report["summary"], trials)]
    rows += ["", *cpu_table(report), "", *soak_table(report["soak"]), ""]
    if not report["monit"]["available"]:
        rows += [f"Monit baseline n/a: {report['monit']['reason']}", ""]
    rows += acceptance_lines(3, report["acceptance"])
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time detection and recovery of a kill -9'd or SIGSTOPped service under "
                    "the unistack hub, plain supervisord and Monit; the hub's CPU; a soak "
                    "under load that must restart nothing.")
    parser.add_argument("--trials", type=positive, default=10,
                        help="trials per service and fault (10)")
    parser.add_argument("--soak-seconds", type=positive, default=300,
                        help="length of the soak under load (300)")
    parser.add_argument("--cpu-seconds", type=positive, default=60,
                        help="CPU measurement window of the hub and of Monit (60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return benchmark_main("recovery", build_parser(), make_report, argv)


def make_report(args: argparse.Namespace) -> str:
    """Run every trial, the CPU window and the soak; the tables or JSON."""
    result = collect(args)
    result["summary"] = summaries(result["samples"])
    result["acceptance"] = acceptance(result["summary"], result)
    return trials_json(args.trials, POLL, result) if args.json else markdown(result, args.trials)


if __name__ == "__main__":
    sys.exit(main())
