"""Dashboard benchmark (issue 10), one stack, one run:

1. `GET /api/status` at 20 concurrent connections, driven by Debian's wrk (`--latency`),
   against the dashboard under gunicorn (the stack's own `dashboard` program: gthread,
   DASHBOARD_WORKERS x DASHBOARD_THREADS) and, as the baseline, the Flask development
   server serving the same app: `create_app(settings)` for the same stack's settings,
   werkzeug's `make_server(threaded=True)` on a free loopback port, in a subprocess (this
   file run with --dev-server). Runs alternate, gunicorn first, each after a warm-up.
   All cache the hub's answer for 0.5 s per process (snapshot.MAX_AGE). A third server,
   a diagnostic only, runs the stack's gunicorn options with keep-alive instead of
   `keepalive: 0` (server.py), to show what a connection per request costs.
2. kill -9 of a service → its card changing in headless Chromium (Debian's chromium,
   driven by Playwright), beside the hub's own detection in the same trials: the hub's
   `crashed` event ts minus the kill. A MutationObserver on the open page stamps each change
   of the card's data-state with Date.now(); the hub stamps events with time.time(): one
   machine, one wall clock. Each trial starts with no incident open for the service (the
   previous one resolved), so each crash is a new incident with its own event. Then a few
   relapses: a second kill once the new process is SETTLE s old. Until issue 15 that kill
   fell inside the first crash's open incident, which the hub recorded without an event;
   now a new process's first ready closes the incident, so the relapse is an incident of
   its own (its Slack message joins the first one's thread while the router's group
   window is open). Did the card show it?

Usage: .venv/bin/python benchmarks/dashboard.py [--runs N] [--seconds S]
       [--connections C] [--trials N] [--relapses N] [--service NAME] [--json]
Progress goes to stderr; the Markdown tables (or JSON with --json) to stdout. Needs
chromium and wrk (scripts/bootstrap.sh --test-tools installs both).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from harness.faults import FAULT_TRIALS, SETTLE
from harness.fetch import http_json
from harness.figures import machine_figures, percentile, spread
from harness.ports import free_ports
from harness.processes import cpu_seconds, kill_leftovers, process_age
from harness.runs import BenchmarkError, positive, progress, run_benchmark, whole
from harness.stacks import Stack, make_home
from harness.tables import acceptance_lines, checks_json, machine_line
from harness.waiting import wait_for
from unistack.configkeys import LOOPBACK

POLL = 0.01  # seconds between two looks at the page, the hub or a process
START_LIMIT = 120.0  # the first start trains the ML engine's default model
STOP_LIMIT = 30.0
TRIAL_LIMIT = 15.0  # the card left READY and came back by then, or the trial failed
CALM_LIMIT = 30.0  # the previous incident must be resolved by then
RELAPSE_WATCH = 2.5  # seconds the page is watched after a relapse
PHASE = 1.0  # a random U(0, PHASE) delay puts each kill at a random point of any cycle
WARMUP = 2  # seconds of wrk, uncounted, before each server's first run
WRK_THREADS = 2  # one per core
PATH = "/api/status"
ACCEPT_RATIO = 3.0  # issue 10: gunicorn ≥ 3 x the development server's requests/s ...
ACCEPT_P99_MS = 50.0  # ... with p99 ≤ 50 ms at 20 connections
ACCEPT_CARD = 1.0  # ... and a card changes ≤ 1 s after the hub records the event
KEEPALIVE = 5  # seconds: the diagnostic gunicorn's keep-alive
SERVERS = ("gunicorn", "dev", "keepalive")
SERVER_LABELS = {"gunicorn": "gunicorn (the stack's dashboard program)",
                 "dev": "Flask development server (werkzeug, threaded)",
                 "keepalive": f"diagnostic: the same gunicorn with keep-alive {KEEPALIVE} s"}
LAUNCH_ARGS = ["--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-quic"]
# Each change of the card's data-state, stamped in the observer's callback (the
# microtask right after the DOM changed) with the page's clock, in epoch seconds.
WATCH_STATES = """service => {
  const card = document.querySelector(`[data-service="${service}"]`);
  window.__watched = {states: [], last: card.dataset.state};
  new MutationObserver(() => {
    const now = Date.now(), w = window.__watched;
    if (card.dataset.state === w.last) return;
    w.last = card.dataset.state;
    w.states.push({state: card.dataset.state, at: now / 1000});
  }).observe(card, {attributes: true, attributeFilter: ["data-state"]});
}"""


def family(pid: int) -> list[psutil.Process]:
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)]


# --- the stack ---------------------------------------------------------------------


class DashboardStack(Stack):
    """The stack of harness.stacks, seen as the dashboard sees it: the hub's HTTP API."""

    def url(self, key: str, path: str = "") -> str:
        return f"http://{LOOPBACK}:{self.env[key]}{path}"

    def services(self) -> dict[str, dict[str, Any]]:
        document = http_json(self.url("HUB_PORT", "/status"), 5.0) or {}
        return {s["name"]: s for s in document.get("services", [])}

    def events_after(self, after: int) -> list[dict[str, Any]]:
        document = http_json(self.url("HUB_PORT", f"/events?after={after}"), 5.0) or {}
        return [e for e in document.get("events", []) if e["id"] > after]

    def last_event_id(self) -> int:
        events = (http_json(self.url("HUB_PORT", "/events"), 5.0) or {}).get("events", [])
        return int(events[-1]["id"]) if events else 0

    def settled_pid(self, name: str, calm: bool = True) -> int:
        """NAME's pid once it is READY, older than SETTLE seconds and (if CALM) with no
        incident open: a crash then opens a new incident, with its own event."""
        def ready() -> dict[str, Any] | None:
            found = self.services().get(name, {})
            return found if found.get("ready") and not (calm and found["incident"]) else None

        service = wait_for(ready, CALM_LIMIT, POLL,
                           f"{name} ready" + (", no incident open" * calm))
        wait_for(lambda: process_age(service["pid"]) >= SETTLE, SETTLE + 5, POLL,
                 f"{name} settled")
        return int(service["pid"])


# --- /api/status under load ----------------------------------------------------------


class Load(NamedTuple):
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    cpu_ms_per_request: float  # the server's own processes


_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _percentile(output: str, which: str) -> float:
    found = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if not found:
        raise BenchmarkError(f"no {which}% line in wrk's output: {output!r}")
    return float(found.group(1)) * _MS[found.group(2)]


def run_wrk(url: str, seconds: int, connections: int, server: list[psutil.Process]) -> Load:
    cpu = cpu_seconds(*server)
    done = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s",
                           "--latency", url], capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    cpu = cpu_seconds(*server) - cpu
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    total = re.search(r"(\d+) requests in", done.stdout)
    if done.returncode != 0 or not rate or not total:
        raise BenchmarkError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)",
                                            done.stdout))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    requests = int(total.group(1))
    return Load(float(rate.group(1)), _percentile(done.stdout, "50"),
                _percentile(done.stdout, "99"), requests,
                errors + (int(non_2xx.group(1)) if non_2xx else 0),
                1000 * cpu / max(requests, 1))


def serve_dev(port: int) -> None:
    """The --dev-server mode: the same app on werkzeug's threaded development server."""
    from werkzeug.serving import make_server

    from unistack.config import load_settings
    from unistack.dashboard import create_app

    # No line per request: gunicorn here has no access log either.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    make_server(LOOPBACK, port, create_app(load_settings()), threaded=True).serve_forever()


def serve_keepalive(port: int) -> None:
    """The --keepalive-server mode: the stack's gunicorn options, but keep-alive."""
    from dataclasses import replace

    from unistack.config import load_settings
    from unistack.dashboard import create_app
    from unistack.dashboard.server import DashboardServer

    class KeptAlive(DashboardServer):
        def load_config(self) -> None:
            super().load_config()
            self.cfg.set("keepalive", KEEPALIVE)

    settings = replace(load_settings(), dashboard_port=port)
    KeptAlive(create_app(settings), settings).run()


def start_server(stack: DashboardStack, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    """This file run as --dev-server or --keepalive-server on a free loopback port."""
    port = free_ports(1)[0]
    # cwd HOME: processes_of(HOME) finds it if this benchmark is killed.
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), mode,
                              str(port)], env=stack.env, cwd=stack.home,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"http://{LOOPBACK}:{port}"
    wait_for(lambda: child.poll() is None and http_json(url + "/health", 5.0), 30, POLL,
             f"{mode} answering /health")
    return child, url


def load_runs(stack: DashboardStack, runs: int, seconds: int, connections: int,
              ) -> dict[str, list[Load]]:
    dev, dev_url = start_server(stack, "--dev-server")
    kept, kept_url = start_server(stack, "--keepalive-server")
    try:
        gunicorn = stack.services()["dashboard"]["pid"]
        targets = {"gunicorn": (stack.url("DASHBOARD_PORT"), family(gunicorn)),
                   "dev": (dev_url, family(dev.pid)),
                   "keepalive": (kept_url, family(kept.pid))}
        for name, (url, procs) in targets.items():
            progress(f"warm-up: {name} {url}{PATH}, {WARMUP} s")
            run_wrk(url + PATH, WARMUP, connections, procs)
        loads: dict[str, list[Load]] = {name: [] for name in SERVERS}
        for index in range(runs):
            for name in SERVERS:
                url, procs = targets[name]
                load = run_wrk(url + PATH, seconds, connections, procs)
                loads[name].append(load)
                progress(f"run {index + 1}/{runs} {name}: {load.requests_per_second:,.0f} "
                         f"req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
                         f"{load.errors} errors, {load.cpu_ms_per_request:.2f} CPU-ms/req")
        return loads
    finally:
        for child in (dev, kept):
            child.terminate()
            child.wait(10)


# --- kill -9 → the card in Chromium ---------------------------------------------------


class Relapse(NamedTuple):
    """A second kill once the process that replaced the first one is SETTLE s old."""

    card_changed: bool  # the card left READY within RELAPSE_WATCH seconds
    hub_restarts: int  # the hub's `restarts` grew by this much (it did record the crash)
    events: int  # events the hub sent about the service meanwhile


class Trial(NamedTuple):
    detected: float  # kill → the hub's `crashed` event (its ts)
    card_after_event: float  # the event → the card's data-state left READY
    card_after_kill: float
    card_state: str  # what the card showed first
    ready: float  # kill → READY again (the hub's status `since`)
    green_after_ready: float  # READY `since` → the card READY again
    green_after_kill: float


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        raise BenchmarkError("chromium is not installed: scripts/bootstrap.sh --test-tools")
    return found


def open_page(playwright: Any, stack: DashboardStack, service: str) -> Any:
    """The overview in a persistent context whose profile is in the stack's home."""
    profile = stack.home / "chromium"
    env = {**os.environ, "HOME": str(profile), "XDG_CONFIG_HOME": str(profile / "config"),
           "XDG_CACHE_HOME": str(profile / "cache")}
    context = playwright.chromium.launch_persistent_context(
        str(profile / "data"), executable_path=chromium(), args=LAUNCH_ARGS, env=env)
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(stack.url("DASHBOARD_PORT", "/"))
    page.wait_for_selector('#live:text-is("live")')  # the relayed stream is open
    page.wait_for_selector(f'[data-service="{service}"][data-state="READY"]')
    page.evaluate(WATCH_STATES, service)
    return page


def away_and_back(page: Any, seen: int) -> list[dict[str, Any]] | None:
    states: list[dict[str, Any]] = page.evaluate("window.__watched.states")[seen:]
    if any(s["state"] != "READY" for s in states) and states[-1]["state"] == "READY":
        return states
    return None


def kill_trial(stack: DashboardStack, page: Any, service: str) -> Trial:
    pid = stack.settled_pid(service)
    time.sleep(random.uniform(0, PHASE))
    seen, after = len(page.evaluate("window.__watched.states")), stack.last_event_id()
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    states = wait_for(lambda: away_and_back(page, seen), TRIAL_LIMIT, POLL,
                      f"{service}'s card leaving READY and coming back")
    crashed = wait_for(lambda: [e for e in stack.events_after(after) if e["kind"] == "crashed"
                                and e["service"] == service], 5, POLL,
                       "the hub's crashed event")[0]
    back = wait_for(lambda: (s := stack.services()[service])["ready"] and s["pid"] != pid
                    and s, TRIAL_LIMIT, POLL, f"{service} READY again")
    away = next(s for s in states if s["state"] != "READY")
    green = states[-1]["at"]
    return Trial(crashed["ts"] - killed, away["at"] - crashed["ts"], away["at"] - killed,
                 away["state"], back["since"] - killed, green - back["since"], green - killed)


def relapse_trial(stack: DashboardStack, page: Any, service: str) -> Relapse:
    """Right after a trial: kill again once the new process is SETTLE s old (its first
    ready closed the crash's incident); watch the card."""
    pid = stack.settled_pid(service, calm=False)
    before = stack.services()[service]
    seen, after = len(page.evaluate("window.__watched.states")), stack.last_event_id()
    os.kill(pid, signal.SIGKILL)
    page.wait_for_timeout(RELAPSE_WATCH * 1000)
    states = page.evaluate("window.__watched.states")[seen:]
    now = wait_for(lambda: (s := stack.services()[service])["ready"] and s, TRIAL_LIMIT,
                   POLL, f"{service} READY again")
    events = [e for e in stack.events_after(after) if e["service"] == service]
    return Relapse(any(s["state"] != "READY" for s in states),
                   now["restarts"] - before["restarts"], len(events))


def kill_trials(stack: DashboardStack, trials: int, relapses: int,
                service: str) -> tuple[list[Trial], list[Relapse]]:
    from playwright.sync_api import sync_playwright

    found: tuple[list[Trial], list[Relapse]] = ([], [])
    with sync_playwright() as playwright:
        page = open_page(playwright, stack, service)
        try:
            for index in range(trials):
                trial = kill_trial(stack, page, service)
                found[0].append(trial)
                progress(f"trial {index + 1}/{trials}: hub {trial.detected:.3f} s, card "
                         f"{trial.card_state} +{trial.card_after_event:.3f} s after the "
                         f"event, green +{trial.green_after_ready:.3f} s after READY")
                if index < relapses:
                    relapse = relapse_trial(stack, page, service)
                    found[1].append(relapse)
                    progress(f"  relapse {index + 1}/{relapses}: {relapse}")
        finally:
            page.context.close()
    return found


# --- the run -------------------------------------------------------------------------


def cleanup(stack: DashboardStack | None, home: Path) -> None:
    """Stop the stack politely, then kill whatever is left of HOME and remove it."""
    try:
        if stack is not None:
            stack.cli("stop", timeout=STOP_LIMIT)
    except subprocess.TimeoutExpired as exc:
        progress(f"  polite stop failed ({exc}); killing")
    finally:
        kill_leftovers(home, progress)
        shutil.rmtree(home, ignore_errors=True)


def tool_versions() -> dict[str, str]:
    def first_line(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return {"wrk": first_line("wrk", "--version").split(" [")[0].removeprefix("wrk "),
            "chromium": first_line(chromium(), "--version").split(" built")[0].split()[-1],
            **{name: version(name) for name in ("gunicorn", "werkzeug", "flask", "playwright")}}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise BenchmarkError("wrk is not installed: scripts/bootstrap.sh --test-tools")
    report: dict[str, Any] = {"versions": tool_versions(), "load_before": os.getloadavg()[0]}
    home = make_home("usd-")
    stack = None
    try:
        progress(f"starting a stack in {home} ({FAULT_TRIALS}) ...")
        stack = DashboardStack.start(home, FAULT_TRIALS, START_LIMIT)
        report["loads"] = load_runs(stack, args.runs, args.seconds, args.connections)
        report["trials"], report["relapses"] = kill_trials(stack, args.trials,
                                                           args.relapses, args.service)
    finally:
        cleanup(stack, home)
    return report | machine_figures(report["load_before"])


# --- the report ----------------------------------------------------------------------


def spread_p95(values: list[float]) -> dict[str, float]:
    """spread() of VALUES and their p95."""
    return spread(values) | {"p95": percentile(values, 95)}


LOAD_MEASURES = (("requests_per_second", "requests/s", "{:,.0f}"),
                 ("p50_ms", "latency p50 (ms)", "{:.2f}"),
                 ("p99_ms", "latency p99 (ms)", "{:.2f}"),
                 ("cpu_ms_per_request", "server CPU per request (ms)", "{:.2f}"))
TRIAL_MEASURES = (
    ("detected", "hub: kill → `crashed` event (the hub's own detection)"),
    ("card_after_event", "card: `crashed` event → card leaves READY"),
    ("card_after_kill", "card: kill → card leaves READY"),
    ("ready", "hub: kill → READY again (status `since`)"),
    ("green_after_ready", "card: READY `since` → card READY (green) again"),
    ("green_after_kill", "card: kill → card READY (green) again"))


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    loads: dict[str, list[Load]] = report["loads"]
    summary: dict[str, Any] = {"load": {}, "trials": {}}
    for key, _, _ in LOAD_MEASURES:
        rows: dict[str, Any] = {name: spread_p95([getattr(load, key) for load in loads[name]])
                                for name in SERVERS}
        rows["ratio"] = rows["gunicorn"]["median"] / rows["dev"]["median"]
        rows["keepalive_ratio"] = rows["keepalive"]["median"] / rows["dev"]["median"]
        summary["load"][key] = rows
    summary["errors"] = {name: sum(load.errors for load in loads[name]) for name in SERVERS}
    trials: list[Trial] = report["trials"]
    for key, _ in TRIAL_MEASURES:
        summary["trials"][key] = spread_p95([getattr(trial, key) for trial in trials])
    summary["card_states"] = sorted({trial.card_state for trial in trials})
    summary["late_green"] = sum(trial.green_after_ready > ACCEPT_CARD for trial in trials)
    relapses: list[Relapse] = report["relapses"]
    summary["relapses"] = {"n": len(relapses),
                           "card_changed": sum(r.card_changed for r in relapses),
                           "hub_counted": sum(r.hub_restarts > 0 for r in relapses),
                           "events": sum(r.events for r in relapses)}
    return summary


def acceptance(summary: dict[str, Any], trials: int) -> list[tuple[bool, str]]:
    rate, p99 = summary["load"]["requests_per_second"], summary["load"]["p99_ms"]["gunicorn"]
    card = summary["trials"]["card_after_event"]
    errors = summary["errors"]["gunicorn"]
    return [
        (rate["ratio"] >= ACCEPT_RATIO and errors == 0,
         f"`/api/status` at 20 connections: gunicorn {rate['gunicorn']['median']:,.0f} req/s "
         f"= {rate['ratio']:.2f} x the development server's {rate['dev']['median']:,.0f} "
         f"(≥ {ACCEPT_RATIO:g} x), {errors} errors"),
        (p99["median"] <= ACCEPT_P99_MS,
         f"gunicorn p99 {p99['median']:.2f} ms (max of runs {p99['max']:.2f} ms) ≤ "
         f"{ACCEPT_P99_MS:g} ms"),
        (card["max"] <= ACCEPT_CARD,
         f"card change after the hub's event: median {card['median']:.3f} s, p95 "
         f"{card['p95']:.3f} s, max {card['max']:.3f} s ≤ {ACCEPT_CARD:g} s in {trials} of "
         f"{trials} trials"),
    ]


def load_table(summary: dict[str, Any], args: argparse.Namespace) -> list[str]:
    rows = [f"`GET {PATH}`, `wrk -t{WRK_THREADS} -c{args.connections} -d{args.seconds}s "
            f"--latency`, {args.runs} run(s) per server, alternating, after a {WARMUP} s warm-up "
            "each (median, min and max across runs; ratio = median / the development "
            "server's median).", "",
            "| Measure | Server | Median | Min | Max | Spread | Ratio |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for key, label, form in LOAD_MEASURES:
        measure = summary["load"][key]
        for name in SERVERS:
            row = measure[name]
            ratio = {"gunicorn": f"{measure['ratio']:.2f}", "dev": "-",
                     "keepalive": f"{measure['keepalive_ratio']:.2f}"}[name]
            rows.append(f"| {label} | {SERVER_LABELS[name]} | {form.format(row['median'])} | "
                        f"{form.format(row['min'])} | {form.format(row['max'])} | "
                        f"{form.format(row['spread'])} | {ratio} |")
    errors = summary["errors"]
    rows += ["", f"Errors (non-2xx answers and socket errors, all runs): gunicorn "
             f"{errors['gunicorn']}, development server {errors['dev']}, diagnostic "
             f"{errors['keepalive']}."]
    return rows


def trial_table(summary: dict[str, Any], args: argparse.Namespace) -> list[str]:
    rows = [f"kill -9 of {args.service} → its card in headless Chromium, {args.trials} trials, "
            f"kill at a random U(0, {PHASE:g} s) phase once the process is {SETTLE:g} s old "
            "(seconds; the card's times are the page's Date.now() in a MutationObserver).", "",
            "| Measure | n | Median | p95 | Min | Max |", "|---|---:|---:|---:|---:|---:|"]
    for key, label in TRIAL_MEASURES:
        row = summary["trials"][key]
        rows.append(f"| {label} | {args.trials} | {row['median']:.3f} | {row['p95']:.3f} | "
                    f"{row['min']:.3f} | {row['max']:.3f} |")
    rows += ["", "The card's first state after the kill: "
             + ", ".join(summary["card_states"]) + f". The card turned green more than "
             f"{ACCEPT_CARD:g} s after READY in {summary['late_green']} of {args.trials} trials "
             "(no hub event marks READY again)."]
    relapse = summary["relapses"]
    if relapse["n"]:
        rows += ["", f"Relapses (a second kill once the new process is {SETTLE:g} s old): "
                 f"the card left READY within {RELAPSE_WATCH:g} s in "
                 f"{relapse['card_changed']} of {relapse['n']}; the hub counted the restart "
                 f"in {relapse['hub_counted']} of {relapse['n']} and sent "
                 f"{relapse['events']} event(s) about {args.service} meanwhile."]
    return rows


def markdown(report: dict[str, Any], args: argparse.Namespace) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    rows = [machine_line(report["cores"], report["load_before"], report["load_after"])
            + f" Versions: {versions}.", "", *load_table(report["summary"], args), "",
            *trial_table(report["summary"], args), "",
            *acceptance_lines(10, report["acceptance"])]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure the dashboard: /api/status under gunicorn against the Flask "
                    "development server serving the same app (wrk), and kill -9 of a "
                    "service to its card changing in headless Chromium beside the hub's "
                    "own detection.")
    parser.add_argument("--runs", type=positive, default=3,
                        help="wrk runs per server, alternating (3)")
    parser.add_argument("--seconds", type=positive, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=positive, default=20,
                        help="concurrent connections (20)")
    parser.add_argument("--trials", type=positive, default=10, help="kill -9 trials (10)")
    parser.add_argument("--relapses", type=whole, default=3,
                        help="trials followed by a kill inside the open incident (3)")
    parser.add_argument("--service", default="redis",
                        choices=("redis", "prometheus", "ml_engine"),
                        help="the service killed (redis)")
    parser.add_argument("--json", action="store_true",
                        help="print samples and summary as JSON instead of tables")
    parser.add_argument("--dev-server", type=positive, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--keepalive-server", type=positive, metavar="PORT",
                        help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dev_server:
        serve_dev(args.dev_server)
        return 0
    if args.keepalive_server:
        serve_keepalive(args.keepalive_server)
        return 0
    return run_benchmark("dashboard", lambda: print_report(args))


def print_report(args: argparse.Namespace) -> None:
    """Measure; print the tables or JSON."""
    report = collect(args)
    report["summary"] = summarize(report)
    report["acceptance"] = acceptance(report["summary"], args.trials)
    if args.json:
        report["loads"] = {k: [load._asdict() for load in v] for k, v in report["loads"].items()}
        report["trials"] = [trial._asdict() for trial in report["trials"]]
        report["relapses"] = [relapse._asdict() for relapse in report["relapses"]]
        report["acceptance"] = checks_json(report["acceptance"])
        print(json.dumps({"arguments": {k: v for k, v in vars(args).items()
                                        if k not in ("json", "dev_server",
                                                     "keepalive_server")}, **report},
                         indent=2))
    else:
        print(markdown(report, args))


if __name__ == "__main__":
    sys.exit(main())
