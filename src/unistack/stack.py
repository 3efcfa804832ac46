"""The stack as a whole: launch supervisord, wait for readiness, stop in order, report status.

Operator commands call these; each raises StackError with what broke and what to do.

What runs is judged by the processes of this home (unistack.processes: UNISTACK_HOME in
their environment, supervisord's pid file), not by supervisord's list alone: after a
kill -9 of supervisord its children run on as orphans, and `status` reports them
(ORPHANED, overall down), `start` replaces them (stopped in dependency order, then a
normal start) and `stop` ends them.

start, stop and restart hold the home's control lock (unistack.lock), but `start` holds
it only until supervisord is launched, and waits for readiness without it. So a `stop`
from another terminal is never stuck behind a start's 30 s wait: it takes the lock and
stops, and the waiting start sees its supervisord gone and says "stopped while starting"
at once. A second `start` waits for the lock and then finds the stack running; only one
start ever trains the default model or launches supervisord.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from unistack import logs, preflight, processes, runtime
from unistack.backup import journal
from unistack.config import Settings, check_home_writable
from unistack.configkeys import SECRET_KEYS
from unistack.credentials import describe_secrets, ensure_secrets, refresh_generated
from unistack.hub.client import HubClient, HubUnreachable
from unistack.hub.status import HEALTHY, ServiceStatus, status_document
from unistack.lock import control_lock
from unistack.ml.registry import ModelRegistry
from unistack.policy import FAILED, LOOPING, STOPPED
from unistack.probes import build_probe
from unistack.services import REGISTRY, by_name, stop_order
from unistack.supervisor import SupervisorClient, SupervisorError

Report = Callable[[str], None]


class StackError(Exception):
    """The stack could not do what was asked; the message says why and what to do."""


def _poll(condition: Callable[[], bool], deadline: float, interval: float = 0.02) -> bool:
    """Poll CONDITION until it holds or DEADLINE (monotonic) passes; backoff to 0.1 s."""
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.1)


def check_programs(settings: Settings) -> None:
    for key, program in (("REDIS_SERVER_BIN", settings.redis_server_bin),
                         ("PROMETHEUS_BIN", settings.prometheus_bin)):
        if shutil.which(program) is None:
            raise StackError(
                f"{key}={program!r} is not an executable on PATH; "
                "run scripts/bootstrap.sh (installs redis-server and prometheus)."
            )


def ensure_default_model(settings: Settings, report: Report) -> None:
    """On a first start, train and register the model `default` (before the engine runs,
    so a slow machine makes `start` slower, never the engine look hung)."""
    if ModelRegistry(settings.models_dir).names():
        return
    # numpy and xgboost load only when there is something to train.
    from unistack.ml import market, training  # noqa: PLC0415

    report("  no model registered yet: training 'default' on a synthetic random walk ...")
    version = training.train_and_register(
        ModelRegistry(settings.models_dir), "default", market.synthetic_bars(20000),
        "synthetic random walk, 20000 bars (first start)")
    report(f"  registered default v{version.version} in {version.directory}")


def supervisord_env(settings: Settings) -> dict[str, str]:
    """The environment of supervisord and its programs: settings, never secrets."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_KEYS}
    env.update(settings.to_env())
    env["UNISTACK_PYTHON"] = sys.executable
    return env


def launch_supervisord(settings: Settings) -> None:
    command = [sys.executable, "-m", "supervisor.supervisord", "-c",
               str(settings.supervisord_conf)]
    try:
        done = subprocess.run(command, env=supervisord_env(settings), capture_output=True,
                              text=True, timeout=30, check=False, cwd=settings.unistack_home)
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"supervisord did not daemonize within 30 s; see {settings.log_dir}/supervisord.log"
        ) from exc
    if done.returncode != 0:
        output = settings.redact((done.stderr or done.stdout).strip())
        raise StackError(f"supervisord did not start (exit {done.returncode}): {output}")


ORPHANED = "ORPHANED"  # running without supervisord (it was killed): nothing supervises it


def status(settings: Settings) -> dict[str, Any]:
    """The status document: the hub's when supervisord and the hub answer, else what
    supervisord knows, else the orphans found by the ownership scan. In Kubernetes mode
    (no supervisord) the hub's, else every service unknown."""
    pods = settings.in_pods
    supervised: dict[str, Any] = {}
    if not pods:
        try:
            supervised = SupervisorClient(settings.supervisor_socket, timeout=2.0).processes()
        except SupervisorError:
            return _orphan_document(settings)
    try:
        code, document = HubClient(settings).get("/status")
        if code == 200 and isinstance(document, dict):
            return document
    except HubUnreachable:
        pass
    why = f"hub at {settings.hub_url} unreachable" if pods else "hub unreachable"
    return _fallback_document(settings, supervised, why)


def _orphan_document(settings: Settings) -> dict[str, Any]:
    """supervisord is gone: every service is STOPPED or ORPHANED (never ready)."""
    found = processes.leaders(processes.scan(settings.unistack_home))
    services = []
    for spec in REGISTRY:
        orphan = found.get(spec.name)
        if orphan is None:
            services.append(_service(settings, spec.name, STOPPED,
                                     "supervisord is not running"))
            continue
        services.append(_service(
            settings, spec.name, ORPHANED,
            f"running without supervisord (pid {orphan.pid}); `start` replaces it, "
            "`stop` ends it", pid=orphan.pid, since=processes.started_at(orphan.tick)))
    return status_document(services, time.time(), {"pid": 0, "loop_age": None})


def _service(settings: Settings, name: str, state: str, detail: str, *, pid: int = 0,
             since: float = 0.0) -> ServiceStatus:
    spec = by_name()[name]
    return ServiceStatus(spec.name, spec.group, spec.critical, state, False, pid, since,
                         detail, spec.url(settings))


def _fallback_document(settings: Settings, supervised: dict[str, Any], why: str
                       ) -> dict[str, Any]:
    services = []
    for spec in REGISTRY:
        info = supervised.get(spec.name)
        services.append(_service(settings, spec.name, info.state if info else STOPPED,
                                 f"{why}; readiness unknown", pid=info.pid if info else 0,
                                 since=info.since if info else 0.0))
    return status_document(services, time.time(), {"pid": 0, "loop_age": None})


def start(settings: Settings, report: Report, wait: bool = True) -> Settings:
    """Start the stack (or find it running) and wait until every service is ready.

    Orphans of a killed supervisord are stopped first; a service counts as ready only
    when the process that passed its probe started after this start began."""
    home = settings.unistack_home
    check_home_writable(settings)  # a read-only or unwritable home: exit 2, one sentence
    with control_lock(home, "start", wait, report):
        begun = 0
        settings = refresh_generated(settings)  # a start we waited for may have made them
        if SupervisorClient(settings.supervisor_socket).is_running():
            report(f"unistack is already running (UNISTACK_HOME={home}).")
        else:
            settings = prepare(settings, report)
            begun = processes.now_tick()
            launch_supervisord(settings)
        daemon = _supervisord(settings)
    wait_ready(settings, report, time.monotonic() + settings.start_timeout, begun, daemon)
    return settings


def prepare(settings: Settings, report: Report) -> Settings:
    """Everything before supervisord starts, under the control lock: secrets, an
    interrupted restore undone, state directories, orphans ended, ports free, a model."""
    check_programs(settings)
    settings = ensure_secrets(settings)
    journal.recover(settings, report)  # a restore killed mid-swap: the old data
    runtime.prepare_dirs(settings)
    settings = runtime.write_runtime_secrets(settings)
    report(f"  secrets: {describe_secrets(settings)}")
    _end_orphans(settings, report)
    preflight.check(settings)  # every port free, or exit 2 naming its holder
    report(f"starting unistack in {settings.unistack_home} ...")
    ensure_default_model(settings, report)
    return settings


def _supervisord(settings: Settings) -> tuple[int, int]:
    """(pid, start tick) of this home's supervisord once it answers; (0, 0) if it never
    does within 5 s (a supervisord that died right after it daemonized)."""
    client = SupervisorClient(settings.supervisor_socket, timeout=2.0)
    pid = 0

    def answers() -> bool:
        nonlocal pid
        try:
            pid = client.pid()
        except SupervisorError:
            return False
        return True

    _poll(answers, time.monotonic() + 5.0)
    return pid, processes.start_tick(pid) if pid else 0


def _gone(daemon: tuple[int, int]) -> bool:
    return not daemon[0] or processes.start_tick(daemon[0]) != daemon[1]


def _end_orphans(settings: Settings, report: Report) -> None:
    left = processes.end_orphans(settings.unistack_home, settings.stop_timeout, report)
    if left:
        raise StackError(f"processes {[p.pid for p in left]} of this home survived SIGKILL; "
                         "see `ps` and var/log/supervisord.log")


def _fresh(service: dict[str, Any], begun: int) -> bool:
    """SERVICE is ready in a process started after tick BEGUN (0: any process)."""
    return bool(service["ready"] and service["pid"]
                and processes.start_tick(service["pid"]) >= begun)


def _confirmed(settings: Settings, service: dict[str, Any]) -> bool:
    """Our own readiness probe passes now, while the hub's pid for SERVICE still runs (same
    start tick before and after): the hub's ready flag may predate that process."""
    pid = service["pid"]
    tick = processes.start_tick(pid)
    spec = by_name()[service["name"]]
    result = build_probe(spec.readiness, spec, settings, timeout=2.0).check()
    return bool(tick and result.ok and processes.start_tick(pid) == tick)


def _lagging(service: dict[str, Any], begun: int) -> str:
    """Why SERVICE does not count as ready for `start`."""
    if _fresh(service, begun):
        return (f"{service['name']} is {service['state']} in the hub's view but did not pass "
                "our own readiness probe")
    return f"{service['name']} is {service['state']}: {service['detail']}"


def wait_ready(settings: Settings, report: Report, deadline: float, begun: int,
               daemon: tuple[int, int]) -> None:
    """Poll the status until healthy; raise "stopped while starting" as soon as supervisord
    (pid DAEMON) is gone, and report each service ready once, from a fresh process."""
    started = time.monotonic()
    seen: set[str] = set()
    last: dict[str, Any] = {}

    def healthy() -> bool:
        nonlocal last
        if _gone(daemon):
            raise StackError(f"stopped while starting: supervisord (pid {daemon[0]}) went away "
                             "before every service was ready (a `stop` from elsewhere?)")
        last = status(settings)
        fresh = [s for s in last["services"] if _fresh(s, begun)
                 and (s["name"] in seen or _confirmed(settings, s))]
        for service in fresh:
            if service["name"] not in seen:
                seen.add(service["name"])
                report(f"  {service['name']:<12} ready  ({time.monotonic() - started:.2f} s)")
        return bool(last["overall"] == HEALTHY and len(fresh) == len(last["services"]))

    if not _poll(healthy, deadline):
        lagging = [_lagging(s, begun) for s in last.get("services", []) if s["name"] not in seen]
        raise StackError(
            f"not ready after {settings.start_timeout:g} s (START_TIMEOUT): "
            + "; ".join(lagging)
            + f". See `scripts/manage_production.sh logs` and {settings.log_dir}."
        )


def stop(settings: Settings, report: Report, wait: bool = True) -> bool:
    """Stop the services in reverse dependency order, then supervisord, in STOP_TIMEOUT;
    then end any process of this home still running (orphans of a killed supervisord).

    Returns False when nothing of the stack was running; raises when a process is left."""
    with control_lock(settings.unistack_home, "stop", wait, report):
        ran = _stop_supervised(settings, report)
        ran = bool(processes.scan(settings.unistack_home)) or ran
        _end_orphans(settings, report)
        left = processes.scan(settings.unistack_home)
    if left:
        raise StackError(
            f"processes {[p.pid for p in left]} still running {settings.stop_timeout:g} s "
            "(STOP_TIMEOUT) after stop began; see var/log/supervisord.log.")
    return ran


def _stop_supervised(settings: Settings, report: Report) -> bool:
    """Stop each program through supervisord, then supervisord; False if it was not running."""
    deadline = time.monotonic() + settings.stop_timeout
    probe = SupervisorClient(settings.supervisor_socket, timeout=2.0)
    if not probe.is_running():
        return False
    for spec in stop_order():
        begun = time.monotonic()
        remaining = max(deadline - begun, 0.5)
        try:
            SupervisorClient(settings.supervisor_socket, timeout=remaining).stop(spec.name)
        except SupervisorError as exc:
            report(f"  {spec.name}: {exc}")
            continue
        report(f"  {spec.name:<12} stopped ({time.monotonic() - begun:.2f} s)")
    home = settings.unistack_home
    owned = processes.scan(home)
    probe.shutdown()
    _poll(lambda: not any(processes.alive(p) for p in owned), deadline)
    return True


def restart_service(settings: Settings, name: str, report: Report, wait: bool = True) -> None:
    """Restart one service through the hub (the owner of restarts) and wait for it.

    Success means the old process was seen gone and a process started after it passed
    the readiness probe; a failure says why (the hub's detail) with the service's log tail."""
    with control_lock(settings.unistack_home, f"restart-{name}", wait, report):
        before = _service_now(settings, name)
        old_tick = processes.start_tick(before.get("pid") or 0)
        asked = time.time()
        _request_restart(settings, name)
        report(f"restarting {name} ...")
        daemon = _supervisord(settings)
    deadline = time.monotonic() + settings.start_timeout
    last: dict[str, Any] = {}

    def renewed() -> bool:
        nonlocal last
        if _gone(daemon):
            raise StackError(f"stopped while restarting {name}: supervisord went away")
        last = _service_now(settings, name)
        # Seen down: the old process (pid and start tick) is gone; a process with a later
        # start tick is the new one.
        gone = not old_tick or processes.start_tick(before["pid"]) != old_tick
        # Failed again: after the old process went, or, when none ran (the hub held it
        # down after failed starts), once its state changed after we asked.
        again = bool(old_tick) or last.get("since", 0) > asked
        if gone and again and not last.get("ready") and last.get("state") in (FAILED, LOOPING):
            raise StackError(_restart_failure(settings, name, last))
        fresh = processes.start_tick(last.get("pid") or 0) > old_tick
        return bool(gone and fresh and last.get("ready") and _confirmed(settings, last))

    if not _poll(renewed, deadline):
        raise StackError(_restart_failure(settings, name, last, settings.start_timeout))
    report(f"{name} ready again (pid {last['pid']})")


def _service_now(settings: Settings, name: str) -> dict[str, Any]:
    return next((s for s in status(settings)["services"] if s["name"] == name), {})


def _request_restart(settings: Settings, name: str) -> None:
    if name == "hub":
        supervisor = SupervisorClient(settings.supervisor_socket, timeout=10.0)
        supervisor.stop("hub")
        supervisor.start("hub")
        return
    try:
        code, body = HubClient(settings).post(f"/services/{name}/restart")
    except HubUnreachable as exc:
        raise StackError(f"{exc}; is the stack running? Try `status`.") from exc
    if code != 202:
        raise StackError(f"hub refused to restart {name}: {body.get('error', code)}")


def _restart_failure(settings: Settings, name: str, last: dict[str, Any],
                     waited: float = 0.0) -> str:
    """Why a restart failed: the hub's detail, and the last lines of the service's log."""
    when = f"not ready again within {waited:g} s" if waited else "failed to start again"
    reason = f"{name} {when}: {last.get('state', '?')}: {last.get('detail', 'no status')}"
    path = logs.log_files(settings).get(name)
    tail = logs.tail_lines(path, 10) if path else []
    shown = "\n".join(f"  | {settings.redact(line)}" for line in tail)
    return f"{reason}\nlast lines of {path}:\n{shown}" if tail else reason
