"""The unified container seen from the host (`manage_production.sh --docker ...`).

Compose (docker compose, or podman-compose where that is what is installed) creates,
starts and stops it; the Docker Engine API, through the `docker` SDK, answers every
other question: which container is the stack's, is it running, and the `unistack`
command run inside it (status, logs, backup, ...). The SDK talks to Docker's socket in
production and to podman's compatible one here (`podman system service`).

Compose is configured the standard way: COMPOSE_FILE (default: docker-compose.unified.yml
in the checkout; add docker-compose.cpu.yml without a GPU) and COMPOSE_PROJECT_NAME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from unistack.config import PROJECT_ROOT
from unistack.hub.status import ServiceStatus, status_document
from unistack.policy import STOPPED
from unistack.services import REGISTRY

Report = Callable[[str], None]
SERVICE = "unistack"  # the compose service (docker-compose.unified.yml)
INSIDE = ["/opt/unistack/.venv/bin/python", "-m", "unistack"]  # the CLI in the image
_SOCKETS = ("/var/run/docker.sock", "{runtime}/podman/podman.sock", "/run/podman/podman.sock")


class ContainerError(Exception):
    """Compose or the engine could not do what was asked; the message says why and how."""


def compose_command() -> list[str]:
    """`docker compose` when Docker's plugin answers, else podman-compose, else the old
    docker-compose; ContainerError naming what to install when there is none."""
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    beside = Path(sys.executable).parent
    for name in ("podman-compose", "docker-compose"):
        found = shutil.which(name) or shutil.which(name, path=str(beside))
        if found:
            return [found]
    raise ContainerError("no compose found: install Docker's compose plugin, or podman-compose "
                         "(`.venv/bin/pip install podman-compose`, or Debian's package).")


def compose_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    env.setdefault("COMPOSE_FILE", str(PROJECT_ROOT / "docker-compose.unified.yml"))
    env.setdefault("COMPOSE_PROJECT_NAME", "unistack")
    return env


def engine_url(environ: dict[str, str]) -> str:
    """DOCKER_HOST, else the first engine socket that exists (Docker's, then podman's)."""
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    runtime = environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    for pattern in _SOCKETS:
        path = Path(pattern.format(runtime=runtime))
        if path.is_socket():
            return f"unix://{path}"
    raise ContainerError(
        "no container engine socket: set DOCKER_HOST, or start one (Docker: `systemctl start "
        "docker`; podman: `systemctl --user start podman.socket` or `podman system service "
        "--time=0 unix:///run/podman/podman.sock &`).")


class Unified:
    """The stack's container: found by its compose labels through the engine API."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self.env = compose_environment(environ)
        self.project = self.env["COMPOSE_PROJECT_NAME"]
        url = engine_url(self.env)
        try:
            self.client = docker.DockerClient(base_url=url, timeout=30)
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise ContainerError(f"the container engine at {url} does not answer: {exc}") \
                from exc

    def container(self) -> Container | None:
        labels = [f"com.docker.compose.project={self.project}",
                  f"com.docker.compose.service={SERVICE}"]
        found = self.client.containers.list(all=True, filters={"label": labels})
        return max(found, key=lambda c: c.attrs.get("Created", ""), default=None)

    def running(self) -> Container:
        container = self.container()
        if container is None:
            raise ContainerError(f"no container of compose project {self.project!r}: "
                                 "`manage_production.sh --docker start` creates it.")
        if container.status != "running":
            raise ContainerError(f"container {container.name} is {container.status}: "
                                 "`manage_production.sh --docker start` starts it.")
        return container

    def restarts(self) -> int:
        container = self.container()
        return int(container.attrs.get("RestartCount") or 0) if container else 0

    def check_not_failing(self, restarts: int) -> None:
        """ContainerError with its last log lines once the container's main process has
        exited with an error (a bad config.env value, a secret too short) or was
        restarted since RESTARTS: compose's `restart: unless-stopped` would otherwise
        retry it forever while `start` waits."""
        container = self.container()
        if container is None:
            return
        code = int(container.attrs.get("State", {}).get("ExitCode") or 0)
        restarted = int(container.attrs.get("RestartCount") or 0) - restarts
        if container.status in ("exited", "dead") and code != 0:
            what = f"exited with code {code}"
        elif restarted > 0:
            what = f"keeps exiting (restarted {restarted} times since this start)"
        else:
            return
        tail = container.logs(tail=15).decode(errors="replace").strip()
        raise ContainerError(f"container {container.name} {what}; its last lines:\n{tail}")

    def compose(self, *args: str, report: Report) -> None:
        command = [*compose_command(), *args]
        report(f"$ {' '.join(Path(command[0]).name.split() + command[1:])}")
        done = subprocess.run(command, env=self.env, cwd=PROJECT_ROOT, check=False)
        if done.returncode != 0:
            raise ContainerError(f"compose {args[0]} failed (exit {done.returncode}); its "
                                 "output is above.")

    def run(self, argv: Sequence[str]) -> tuple[int, bytes]:
        """`unistack ARGV` inside the running container: exit code and output."""
        container = self.running()
        try:
            result = container.exec_run([*INSIDE, *argv], demux=False)
        except docker.errors.APIError as exc:  # it stopped while the command ran
            raise ContainerError(f"`unistack {' '.join(argv)}` in {container.name} did not "
                                 f"finish: {exc.explanation or exc}") from exc
        output = result.output if isinstance(result.output, bytes) else b""
        return result.exit_code if result.exit_code is not None else 1, output

    def stream(self, argv: Sequence[str]) -> Iterator[bytes]:
        """`unistack ARGV` inside, its output as it comes (logs -f)."""
        container = self.running()
        try:
            result = container.exec_run([*INSIDE, *argv], stream=True)
            for chunk in result.output:
                if isinstance(chunk, bytes):
                    yield chunk
        except docker.errors.APIError as exc:
            raise ContainerError(f"`unistack {' '.join(argv)}` in {container.name} ended: "
                                 f"{exc.explanation or exc}") from exc


def stopped_document(why: str) -> dict[str, Any]:
    """The status document's shape when the container is not running: every service
    STOPPED, saying why (the same shape as native `status --json`)."""
    services = [ServiceStatus(spec.name, spec.group, spec.critical, STOPPED, False, 0, 0.0,
                              why, "") for spec in REGISTRY]
    return status_document(services, time.time(), {"pid": 0, "loop_age": None})


def start(unified: Unified, timeout: float, report: Report) -> None:
    """compose up -d, then wait until `health --ready` passes inside the container."""
    restarts = unified.restarts()
    unified.compose("up", "-d", report=report)
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        unified.check_not_failing(restarts)
        try:
            code, output = unified.run(["health", "--ready"])
        except ContainerError as exc:
            code, output = 1, str(exc).encode()
        if code == 0:
            return
        text = output.decode(errors="replace").strip()
        if text != said:
            report(f"  waiting: {text}")
            said = text
        if time.monotonic() > deadline:
            raise ContainerError(f"not ready within {timeout:g} s: {text}; see "
                                 "`manage_production.sh --docker logs`.")
        time.sleep(1.0)


def status(unified: Unified) -> dict[str, Any]:
    try:
        code, output = unified.run(["status", "--json"])
    except ContainerError as exc:
        return stopped_document(str(exc))
    try:
        document: dict[str, Any] = json.loads(output)
    except ValueError:
        return stopped_document(f"status inside the container failed (exit {code}): "
                                f"{output.decode(errors='replace')[-300:]}")
    return document


_LIFECYCLE = {"start", "stop", "status"}


def main(argv: list[str], table: Callable[[dict[str, Any]], str]) -> int:
    """`--docker COMMAND ...`: start, stop and status here; every other command (logs,
    backup, ml doctor, ...) runs as `unistack COMMAND ...` inside the container."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nCommands: start [--timeout S], stop, status [--json], "
              "diagnose [--json], and any other unistack command, run inside the container.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "diagnose":  # the engine's view, then diagnose inside the container
        from unistack.diagnose.report import cmd_docker_diagnose  # noqa: PLC0415

        return cmd_docker_diagnose(rest)
    try:
        unified = Unified()
        if command not in _LIFECYCLE:
            return _inside(unified, argv)
        return _lifecycle(unified, command, rest, table)
    except ContainerError as exc:
        print(f"unistack --docker {command}: {exc}", file=sys.stderr)
        return 1


def _lifecycle(unified: Unified, command: str, rest: list[str],
               table: Callable[[dict[str, Any]], str]) -> int:
    if command == "start":
        timeout = float(rest[rest.index("--timeout") + 1]) if "--timeout" in rest else 300.0
        start(unified, timeout, _say)
        _say("unistack (container) is ready")
        return 0
    if command == "stop":
        begun = time.monotonic()
        unified.compose("stop", report=_say)
        _say(f"stopped in {time.monotonic() - begun:.1f} s")
        return 0
    document = status(unified)
    _say(json.dumps(document, indent=2) if "--json" in rest else table(document))
    return {"healthy": 0, "degraded": 1}.get(document["overall"], 2)


def _inside(unified: Unified, argv: list[str]) -> int:
    if argv[0] == "logs" and ("-f" in argv or "--follow" in argv):
        for chunk in unified.stream(argv):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return 0
    code, output = unified.run(argv)
    sys.stdout.buffer.write(output)
    sys.stdout.flush()
    return code


def _say(text: str) -> None:
    print(text, flush=True)
