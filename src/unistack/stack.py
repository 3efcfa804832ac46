"""The stack as a whole: launch supervisord, wait for readiness, stop in order, report status.

Operator commands call these; each raises StackError with what broke and what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from unistack import runtime
from unistack.config import SECRET_KEYS, Settings, ensure_secrets
from unistack.hub.client import HubClient, HubUnreachable
from unistack.hub.status import HEALTHY, ServiceStatus, status_document
from unistack.ml.registry import ModelRegistry
from unistack.policy import STOPPED
from unistack.services import REGISTRY, stop_order
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


def status(settings: Settings) -> dict[str, Any]:
    """The status document: the hub's when it answers, else what supervisord knows."""
    supervisor = SupervisorClient(settings.supervisor_socket, timeout=2.0)
    try:
        processes = supervisor.processes()
    except SupervisorError:
        return _fallback_document(settings, {}, "supervisord is not running")
    try:
        code, document = HubClient(settings).get("/status")
        if code == 200 and isinstance(document, dict):
            return document
    except HubUnreachable:
        pass
    return _fallback_document(settings, processes, "hub unreachable")


def _fallback_document(settings: Settings, processes: dict[str, Any], why: str) -> dict[str, Any]:
    services = []
    for spec in REGISTRY:
        info = processes.get(spec.name)
        services.append(ServiceStatus(
            spec.name, spec.group, spec.critical, info.state if info else STOPPED, False,
            info.pid if info else 0, info.since if info else 0.0,
            f"{why}; readiness unknown", spec.url(settings)))
    return status_document(services, time.time(), {"pid": 0, "loop_age": None})


def start(settings: Settings, report: Report) -> Settings:
    """Start the stack (or find it running) and wait until every service is ready."""
    supervisor = SupervisorClient(settings.supervisor_socket)
    if supervisor.is_running():
        report(f"unistack is already running (UNISTACK_HOME={settings.unistack_home}).")
    else:
        check_programs(settings)
        settings = ensure_secrets(settings)
        runtime.prepare_dirs(settings)
        report(f"starting unistack in {settings.unistack_home} ...")
        ensure_default_model(settings, report)
        launch_supervisord(settings)
    wait_ready(settings, report, time.monotonic() + settings.start_timeout)
    return settings


def wait_ready(settings: Settings, report: Report, deadline: float) -> None:
    started = time.monotonic()
    seen: set[str] = set()
    last: dict[str, Any] = {}

    def healthy() -> bool:
        nonlocal last
        last = status(settings)
        for service in last["services"]:
            if service["ready"] and service["name"] not in seen:
                seen.add(service["name"])
                report(f"  {service['name']:<12} ready  ({time.monotonic() - started:.2f} s)")
        return bool(last["overall"] == HEALTHY)

    if not _poll(healthy, deadline):
        lagging = [f"{s['name']} is {s['state']}: {s['detail']}"
                   for s in last.get("services", []) if not s["ready"]]
        raise StackError(
            f"not ready after {settings.start_timeout:g} s (START_TIMEOUT): "
            + "; ".join(lagging)
            + f". See `scripts/manage_production.sh logs` and {settings.log_dir}."
        )


def stop(settings: Settings, report: Report) -> bool:
    """Stop services in reverse dependency order, then supervisord, in STOP_TIMEOUT.

    Returns False when the stack was not running.
    """
    deadline = time.monotonic() + settings.stop_timeout
    probe = SupervisorClient(settings.supervisor_socket, timeout=2.0)
    if not probe.is_running():
        return False
    supervisord_pid = probe.pid()
    pids = [info.pid for info in probe.processes().values() if info.pid]
    for spec in stop_order():
        begun = time.monotonic()
        remaining = max(deadline - begun, 0.5)
        try:
            SupervisorClient(settings.supervisor_socket, timeout=remaining).stop(spec.name)
        except SupervisorError as exc:
            report(f"  {spec.name}: {exc}")
            continue
        report(f"  {spec.name:<12} stopped ({time.monotonic() - begun:.2f} s)")
    probe.shutdown()
    gone = _poll(lambda: not any(_alive(pid) for pid in [supervisord_pid, *pids]), deadline)
    if not gone:
        left = [pid for pid in [supervisord_pid, *pids] if _alive(pid)]
        raise StackError(
            f"processes {left} still running {settings.stop_timeout:g} s (STOP_TIMEOUT) "
            "after stop began; see var/log/supervisord.log."
        )
    return True


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def restart_service(settings: Settings, name: str, report: Report) -> None:
    """Restart one service through the hub (the owner of restarts) and wait for it."""
    # Readiness counts only once the pid differs from the one running now.
    before = {s["name"]: s["pid"] for s in status(settings)["services"]}
    if name == "hub":
        supervisor = SupervisorClient(settings.supervisor_socket, timeout=10.0)
        supervisor.stop("hub")
        supervisor.start("hub")
    else:
        try:
            code, body = HubClient(settings).post(f"/services/{name}/restart")
        except HubUnreachable as exc:
            raise StackError(f"{exc}; is the stack running? Try `status`.") from exc
        if code != 202:
            raise StackError(f"hub refused to restart {name}: {body.get('error', code)}")
    report(f"restarting {name} ...")
    deadline = time.monotonic() + settings.start_timeout

    def fresh_and_ready() -> bool:
        services = {s["name"]: s for s in status(settings)["services"]}
        service = services.get(name, {})
        return bool(service.get("ready") and service.get("pid") != before.get(name))

    if not _poll(fresh_and_ready, deadline):
        raise StackError(f"{name} was not ready again within {settings.start_timeout:g} s")
    report(f"{name} ready again")
