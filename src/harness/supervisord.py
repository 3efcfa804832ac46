"""The plain supervisord baseline of the benchmarks: the project's managed programs under
supervisord alone, without the hub, in a directory of a stack's home."""

from __future__ import annotations

import configparser
import subprocess
import sys
import time
from pathlib import Path

from harness.processes import gone, processes_of
from harness.runs import check_exit
from harness.waiting import wait_for
from unistack import runtime
from unistack.config import Settings, load_settings
from unistack.credentials import ensure_secrets
from unistack.services import REGISTRY
from unistack.stack import supervisord_env
from unistack.supervisor import SupervisorClient

SUPERVISORD = (sys.executable, "-m", "supervisor.supervisord", "-c")
POLL = 0.01  # seconds between two looks at the processes while the baseline stops
STOP_LIMIT = 30.0


def conf_text(conf: configparser.RawConfigParser) -> str:
    """CONF as supervisord reads it; continuation lines (prometheus's flags) stay
    indented, so that they stay in their value."""
    lines: list[str] = []
    for name, section in conf.items():
        if name != configparser.DEFAULTSECT:
            values = (f"{k}={v}".replace("\n", "\n    ") for k, v in section.items())
            lines += [f"[{name}]", *values, ""]
    return "\n".join(lines)


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
    return conf_text(conf)


def baseline_settings(env: dict[str, str], directory: Path) -> tuple[Settings, Path]:
    """Settings of this run, the runtime files the hub renders, and the baseline conf."""
    settings = ensure_secrets(load_settings(env))
    runtime.render(settings)
    directory.mkdir(mode=0o700, exist_ok=True)
    conf = directory / "supervisord.conf"
    conf.write_text(baseline_conf(settings, directory))
    return settings, conf


def run_supervisord(settings: Settings, conf: Path, timeout: float) -> None:
    """Start supervisord with CONF, daemonizing; raise BenchmarkError if it fails."""
    daemon = subprocess.run([*SUPERVISORD, str(conf)], env=supervisord_env(settings),
                            cwd=settings.unistack_home, capture_output=True, text=True,
                            timeout=timeout, check=False)
    check_exit("baseline supervisord", daemon)


def stop_baseline(socket_path: Path, home: Path) -> float:
    """supervisor.shutdown through SOCKET_PATH; seconds until no process of HOME is left."""
    client = SupervisorClient(socket_path, timeout=STOP_LIMIT)
    daemon = client.pid()
    began = time.perf_counter()
    client.shutdown()
    wait_for(lambda: gone(daemon) and not processes_of(home), STOP_LIMIT, POLL,
             "baseline stop: no process left")
    return time.perf_counter() - began
