"""A container's or a pod's main process: prepare the home as `start` does, then become
the program (exec), so it receives the runtime's SIGTERM itself.

- `start --foreground` (the unified container): supervisord in the foreground; on
  SIGTERM it stops its programs in reverse priority order (supervisord.conf).
- `run SERVICE` (a Kubernetes pod of the scale-out overlay, UNISTACK_MODE=kubernetes):
  one service's program, its command line read from supervisord.conf's
  [program:SERVICE], the one place it is written. The hub runs this way too, in its
  monitor-only mode (hub/pods.py).
"""

from __future__ import annotations

import configparser
import os
import shlex
import sys
import time
from typing import NoReturn

from unistack import runtime, stack
from unistack.config import Settings, check_home_writable
from unistack.configkeys import GENERATED_KEYS
from unistack.credentials import describe_secrets
from unistack.lock import control_lock
from unistack.services import by_name
from unistack.supervisor import SupervisorClient, SupervisorError

Report = stack.Report


def start(settings: Settings, report: Report) -> NoReturn:
    """Prepare the home, then exec supervisord in the foreground (`-n`)."""
    check_home_writable(settings)
    with control_lock(settings.unistack_home, "start --foreground", False, report):
        if SupervisorClient(settings.supervisor_socket).is_running():
            raise stack.StackError(
                f"unistack is already running in {settings.unistack_home}; a container runs "
                "one stack: stop it first (`stop`), or give this one its own UNISTACK_HOME.")
        settings = stack.prepare(settings, report)
    report("handing over to supervisord (foreground)")
    command = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
               str(settings.supervisord_conf)]
    os.chdir(settings.unistack_home)
    if os.fork() == 0:
        _wake(settings)  # never returns
    os.execve(command[0], command, stack.supervisord_env(settings))


def _wake(settings: Settings) -> NoReturn:
    """A child that calls supervisord as soon as it answers: supervisord in the foreground
    spawns its autostart programs (the hub) on its first poll, which otherwise waits a
    whole second for a request. Its parent, supervisord itself, reaps it."""
    try:
        client = SupervisorClient(settings.supervisor_socket, timeout=1.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.pid()
                break
            except SupervisorError:
                time.sleep(0.02)
    finally:
        os._exit(0)


def run(settings: Settings, service: str, report: Report) -> NoReturn:
    """Write SERVICE's runtime files, then exec its program as supervisord would. The
    generated secrets must come from outside (a Kubernetes Secret as `<KEY>_FILE`): a
    pod generating its own would lock every other pod out."""
    if not settings.in_pods:
        raise stack.StackError(
            f"run is a Kubernetes pod's main process (UNISTACK_MODE=kubernetes, here "
            f"{settings.unistack_mode}): on a host use `start`, in one container "
            "`start --foreground`.")
    missing = [key for key in GENERATED_KEYS if not getattr(settings, key.lower())]
    if missing:
        raise stack.StackError(
            f"{', '.join(missing)} not set: every pod must share them; mount them from a "
            f"Secret and point {missing[0]}_FILE at the file (deploy/k8s).")
    check_home_writable(settings)
    runtime.render(settings)  # replicas share the model registry: none trains at start
    settings = runtime.write_runtime_secrets(settings)
    report(f"{service}: secrets: {describe_secrets(settings)}")
    env = stack.supervisord_env(settings)
    argv = program_command(settings, service, env)
    report(f"{service}: exec {shlex.join(argv[:1])}")
    os.chdir(settings.unistack_home)
    os.execvpe(argv[0], argv, env)


def program_command(settings: Settings, service: str, env: dict[str, str]) -> list[str]:
    """[program:SERVICE]'s command from supervisord.conf, expanded as supervisord does
    (`%(ENV_X)s` from ENV, `%(here)s` the file's directory) and split like a shell."""
    parser = configparser.RawConfigParser()
    parser.read(settings.supervisord_conf)
    section = f"program:{service}"
    if not parser.has_section(section):
        raise stack.StackError(f"no [{section}] in {settings.supervisord_conf}: expected one of "
                               f"{', '.join(sorted(by_name()))}.")
    text: str = parser.get(section, "command") % expansions(settings, env)
    return shlex.split(text)


def expansions(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """What supervisord substitutes in its configuration: `%(ENV_X)s` from ENV, `%(here)s`
    the file's directory."""
    found = {f"ENV_{key}": value for key, value in env.items()}
    found["here"] = str(settings.supervisord_conf.parent)
    return found
