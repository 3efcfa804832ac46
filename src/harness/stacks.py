"""A whole unistack stack in a temp UNISTACK_HOME on free loopback ports, driven through
the real CLI (`python -m unistack`), and always stopped and removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.ports import free_ports
from harness.processes import kill_leftovers, process_age, processes_of
from harness.runs import check_exit, progress
from harness.waiting import WaitTimeout, wait_for
from unistack.config import Settings, load_settings
from unistack.configkeys import LOOPBACK, PORT_KEYS
from unistack.hub.client import HubClient, HubUnreachable
from unistack.hub.status import HEALTHY
from unistack.policy import READY
from unistack.supervisor import SupervisorClient, SupervisorError

# Settings a stack reads from its environment: never inherited from the caller's.
STACK_PREFIXES = ("UNISTACK_", "REDIS_", "PROMETHEUS_", "HUB_", "ML_")
STOP_LIMIT = 30.0


def make_home(prefix: str = "us-") -> Path:
    """A new private directory for UNISTACK_HOME. Short, under /tmp: the supervisord
    socket path must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def write_env_file(home: Path, **values: str) -> None:
    """HOME/.env with VALUES, mode 0600 from its creation (HOME made 0700 when missing): how
    an operator hands a stack a secret, never on a command line; supervisord passes no
    secret from its own environment to the hub."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(home / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.writelines(f"{key}={value}\n" for key, value in values.items())


def stack_environment(home: Path, clear: tuple[str, ...] = ()) -> dict[str, str]:
    """The process environment of a stack rooted at HOME on fresh loopback ports: ours,
    without any setting of another stack (STACK_PREFIXES, and the prefixes in CLEAR)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_PREFIXES + clear)}
    env.update(zip(PORT_KEYS, map(str, free_ports(len(PORT_KEYS))), strict=True))
    env["UNISTACK_HOME"] = str(home)
    return env


def unistack_cli(env: dict[str, str], *args: str,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m unistack ARGS` in ENV; its output captured, its exit status kept."""
    return subprocess.run([sys.executable, "-m", "unistack", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def hub_healthy(settings: Settings, timeout: float = 1.0) -> bool:
    """Whether the hub of SETTINGS says in /status that every service is ready (overall
    healthy); False while it does not answer."""
    try:
        code, document = HubClient(settings, timeout=timeout).get("/status")
    except HubUnreachable:
        return False
    return code == 200 and document.get("overall") == HEALTHY


@dataclass
class Stack:
    """One stack: its home and environment, its CLI, its processes and its hub's API."""

    home: Path
    env: dict[str, str]

    @classmethod
    def start(cls, home: Path, overrides: dict[str, str] | None = None,
              timeout: float = 60) -> Self:
        """`unistack start` a stack in HOME on fresh ports (OVERRIDES added to its
        environment); raise BenchmarkError with its output if the start fails."""
        stack = cls(home, stack_environment(home) | (overrides or {}))
        check_exit("unistack start", stack.cli("start", timeout=timeout))
        return stack

    @cached_property
    def settings(self) -> Settings:
        """The stack's settings, loaded from its environment once."""
        return load_settings(self.env)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`python -m unistack ARGS` for this stack."""
        return unistack_cli(self.env, *args, timeout=timeout)

    def port(self, key: str) -> int:
        """The port this stack was given for KEY (REDIS_PORT, HUB_PORT, ...)."""
        return int(self.env[key])

    def processes(self) -> list[psutil.Process]:
        """Every live process whose command line or cwd belongs to this stack's home."""
        return processes_of(self.home)

    def stop(self, timeout: float = 60) -> None:
        """`unistack stop`, then wait until no process of the home is left."""
        self.cli("stop", timeout=timeout)
        wait_for(lambda: not self.processes(), STOP_LIMIT, 0.01,
                 f"stop of the stack in {self.home}")

    def cleanup(self) -> None:
        """Stop the stack, killing whatever of it is left."""
        self.cli("stop", timeout=STOP_LIMIT)
        for proc in self.processes():
            proc.kill()

    @property
    def supervisor(self) -> SupervisorClient:
        """A client of the stack's supervisord, over its unix socket."""
        return SupervisorClient(self.settings.supervisor_socket, timeout=30.0)

    def pid(self, name: str) -> int:
        """The pid of program NAME, as supervisord reports it."""
        return self.supervisor.processes()[name].pid

    def redis(self) -> redis.Redis:
        """A redis-py client of the stack's Redis (the caller closes it)."""
        return redis_client(self.settings)

    def healthy(self) -> bool:
        """Whether the hub's /status says every service is ready (overall healthy)."""
        return hub_healthy(self.settings)

    def get(self, path: str) -> Any:
        """The hub's JSON document at PATH; {} when the hub does not answer 200."""
        try:
            code, document = HubClient(self.settings, timeout=1.0).get(path)
        except HubUnreachable:
            return {}
        return document if code == 200 else {}

    def services(self) -> dict[str, dict[str, Any]]:
        """The services of the hub's /status, by name ({} when the hub does not answer)."""
        return {s["name"]: s for s in self.get("/status").get("services", [])}

    def settled(self, name: str, settle: float, timeout: float = 60.0) -> dict[str, Any]:
        """NAME's /status once it is READY and its process has lived SETTLE seconds (past
        supervisord's startsecs)."""
        def check() -> dict[str, Any] | None:
            service = self.services().get(name)
            if service and service["state"] == READY and service["ready"]:
                return service if process_age(service["pid"]) >= settle else None
            return None

        return wait_for(check, timeout, 0.01, f"{name} READY for {settle:g} s")


def redis_client(settings: Settings, timeout: float | None = None,
                 connect_timeout: float | None = None) -> redis.Redis:
    """A redis-py client of SETTINGS' Redis (the caller closes it). With a TIMEOUT (seconds
    per call), it never retries inside a call: a loading or busy Redis fails it at once."""
    if timeout is None:
        return redis.Redis(host=LOOPBACK, port=settings.redis_port,
                           password=settings.redis_password)
    return redis.Redis(host=LOOPBACK, port=settings.redis_port, password=settings.redis_password,
                       socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                       retry=Retry(NoBackoff(), 0))


def command_calls(connection: redis.Redis, commands: Iterable[str]) -> dict[str, float]:
    """How often Redis has run each of COMMANDS (lower case) since it started, from INFO
    commandstats (the commands of a script count too)."""
    stats = connection.info("commandstats")
    return {name: float(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands}


def remove_home(home: Path) -> None:
    """Stop the stack of HOME and any supervisord with its socket one directory below HOME
    (a benchmark's baseline) politely, then kill whatever is left and remove HOME."""
    try:
        unistack_cli(stack_environment(home), "stop", timeout=STOP_LIMIT)
        for socket_path in home.glob("*/supervisor.sock"):
            baseline = SupervisorClient(socket_path, timeout=STOP_LIMIT)
            if baseline.is_running():
                baseline.shutdown()
        wait_for(lambda: not processes_of(home), STOP_LIMIT, 0.01, "cleanup: no process left")
    except (subprocess.TimeoutExpired, SupervisorError, WaitTimeout) as exc:
        progress(f"  polite stop failed ({exc}); killing")
    finally:
        kill_leftovers(home, progress)
        shutil.rmtree(home, ignore_errors=True)


def remove_homes(root: Path, names: tuple[str, ...]) -> None:
    """remove_home() each of ROOT's homes NAMES that exists, then kill whatever is left
    of ROOT and remove it."""
    for name in names:
        if (root / name).exists():
            remove_home(root / name)
    kill_leftovers(root, progress)
    shutil.rmtree(root, ignore_errors=True)
