"""Docker-mode checks: the unified container as the engine sees it (what `docker inspect`
shows, through the Docker SDK: Docker's socket in production, podman's compatible one
here). Each check is a finding with the value seen and the command an operator runs.
Read-only: the engine's version and info, the container's inspect document and its last
log lines; nothing is created, started, stopped or run inside the container."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import docker.errors
from docker.models.containers import Container

from unistack import envfile
from unistack.config import PROJECT_ROOT
from unistack.configkeys import KEYS_BY_NAME, LOOPBACK, PORT_KEYS
from unistack.container import SERVICE, Unified, engine_url
from unistack.diagnose.findings import Finding, fail, guarded, ok, warn

START = "scripts/manage_production.sh --docker start"
LOGS = "scripts/manage_production.sh --docker logs"
HOME = "/var/lib/unistack"
# The named volumes of docker-compose.unified.yml and where the container mounts them.
VOLUMES = {"home": HOME, "data": f"{HOME}/var/data", "models": f"{HOME}/var/models",
           "logs": f"{HOME}/var/log", "backups": f"{HOME}/var/backups"}
_TAIL = 15  # log lines shown for a container that is not running
_PROBES = 3  # health probe outputs shown for an unhealthy container
_EXIT_MEANINGS = {
    0: "a clean stop of its main process",
    137: "SIGKILL: the OOM killer, a kill -9, or a stop that outlasted stop_grace_period",
    143: "SIGTERM without a clean exit",
}
_ENGINE_HELP = ("systemctl start docker (podman: podman system service --time=0 "
                "unix:///run/podman/podman.sock &), or set DOCKER_HOST to the engine's socket")


def engine_finding(error: str) -> Finding:
    """The finding when the engine cannot be reached (constructing Unified failed)."""
    return fail("docker.engine", "the container engine does not answer", error,
                remedy=_ENGINE_HELP)


def container_findings(unified: Unified) -> list[Finding]:
    """Every Docker-mode finding about the compose project's container, engine first.
    Each check is isolated: one that breaks is a `diagnose.error:docker.<check>` finding,
    and the others still run."""
    try:
        version = unified.client.version()
        container = unified.container()
    except docker.errors.DockerException as exc:
        return [engine_finding(f"the engine at {engine_url(unified.env)} stopped answering: "
                               f"{exc}")]
    findings = [ok("docker.engine", "the container engine answers",
                   f"{_engine_name(version)} (API {version.get('ApiVersion', '?')}) at "
                   f"{engine_url(unified.env)}")]
    if container is None:
        findings.append(fail(
            "docker.container", f"no container of compose project {unified.project}",
            f"no container labelled com.docker.compose.project={unified.project} and "
            f"com.docker.compose.service={SERVICE} (COMPOSE_PROJECT_NAME names the project)",
            remedy=START))
        return findings
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("container", lambda: [_state(container)]),
        ("health", lambda: _health(container)),
        ("restarts", lambda: [_restarts(container)]),
        ("oom", lambda: [_oom(container, version)]),
        ("ports", lambda: [_ports(container)]),
        ("mounts", lambda: [_mounts(container)]),
        ("gpu", lambda: [_gpu(container, unified)]),
    ]
    for name, check in checks:
        findings += guarded(f"docker.{name}", check)
    return findings


def _engine_name(version: Mapping[str, Any]) -> str:
    """The engine and its version, e.g. `Docker Engine 27.1.1` or `Podman Engine 4.3.1`
    (Docker names its component "Engine", podman "Podman Engine")."""
    components = version.get("Components") or []
    name = next((str(c.get("Name")) for c in components if "Engine" in str(c.get("Name"))),
                "Engine")
    return f"{name if name != 'Engine' else 'Docker Engine'} {version.get('Version', '?')}"


def _podman_before_5(version: Mapping[str, Any]) -> bool:
    if not _engine_name(version).startswith("Podman"):
        return False
    major = str(version.get("Version", "")).split(".")[0]
    return major.isdigit() and int(major) < 5


def _state_of(container: Container) -> dict[str, Any]:
    state: dict[str, Any] = container.attrs.get("State") or {}
    return state


def _running(container: Container) -> bool:
    state = _state_of(container)
    return container.status == "running" and not state.get("Restarting")


def _exit_code(state: Mapping[str, Any]) -> int:
    return int(state.get("ExitCode") or 0)


def _state(container: Container) -> Finding:
    state = _state_of(container)
    name = container.name or container.short_id
    image = (container.attrs.get("Config") or {}).get("Image", "?")
    if _running(container):
        return ok("docker.container", f"{name} is running",
                  f"running since {state.get('StartedAt', '?')}, image {image}")
    if container.status == "created":
        return fail("docker.container", f"container {name} was created but never started",
                    f"status: created at {container.attrs.get('Created', '?')}", remedy=START)
    if container.status == "paused":
        return fail("docker.container", f"container {name} is paused",
                    "status: paused (every process in it is frozen)",
                    remedy=f"docker unpause {name} (podman unpause {name})")
    code = _exit_code(state)
    meaning = _EXIT_MEANINGS.get(code, "the stack's own error: see its last lines")
    lines = [f"status: {container.status}, exit code {code} ({meaning}), finished at "
             f"{state.get('FinishedAt', '?')}"]
    if state.get("Error"):
        lines.append(f"engine error: {state['Error']}")
    lines += ["last log lines:", *_tail(container)]
    return fail("docker.container", f"container {name} is {container.status} "
                f"(exit code {code})", "\n".join(lines), remedy=START)


def _tail(container: Container) -> list[str]:
    try:
        text = container.logs(tail=_TAIL).decode(errors="replace")
    except docker.errors.DockerException as exc:
        return [f"(its logs could not be read: {exc})"]
    return text.strip().splitlines()[-_TAIL:] or ["(no output)"]


def _health(container: Container) -> list[Finding]:
    """State.Health (Docker, and podman 4.3's compatible API); State.Healthcheck is the
    name older podman releases gave it in their own inspect. Not checked when the
    container is not running: docker.container says why."""
    if not _running(container):
        return []
    state = _state_of(container)
    health: dict[str, Any] = state.get("Health") or state.get("Healthcheck") or {}
    status = str(health.get("Status") or "")
    name = container.name or container.short_id
    log = [entry for entry in health.get("Log") or [] if isinstance(entry, dict)]
    last = _probe(log[-1]) if log else "no probe has run yet"
    if status == "healthy":
        return [ok("docker.health", "the healthcheck passes", f"healthy; last probe: {last}")]
    if status == "starting":
        return [warn(
            "docker.health", "health still starting",
            f"starting (failing streak {health.get('FailingStreak', 0)}); last probe: {last}. "
            "Docker runs the healthcheck every 10 s (120 s start period); podman runs it "
            "only from a systemd timer, so without systemd it stays starting until "
            "someone runs it",
            remedy=f"podman healthcheck run {name} (podman without systemd); with Docker, "
            "wait out the 120 s start period")]
    if status == "unhealthy":
        shown = "\n".join(_probe(entry) for entry in log[-_PROBES:]) or last
        return [fail("docker.health", "the container is unhealthy",
                     f"unhealthy, failing streak {health.get('FailingStreak', '?')}; last "
                     f"probes:\n{shown}",
                     remedy="scripts/manage_production.sh --docker status (which service "
                     f"is not ready), then {LOGS} SERVICE")]
    return [warn("docker.health", "the container has no healthcheck",
                 f"health status {status or 'absent'}: the image's HEALTHCHECK is missing "
                 "(podman build drops it in its default OCI format)",
                 remedy="rebuild with docker build, or podman build --format docker, then "
                 + START)]


def _probe(entry: Mapping[str, Any]) -> str:
    output = " | ".join(str(entry.get("Output") or "").strip().splitlines()[-3:])
    return f"exit {entry.get('ExitCode', '?')} at {entry.get('End') or entry.get('Start', '?')}" \
        + (f": {output[:300]}" if output else "")


def _restarts(container: Container) -> Finding:
    count = int(container.attrs.get("RestartCount") or 0)
    policy = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get(
        "Name") or "none"
    if count == 0:
        return ok("docker.restarts", "never restarted by the engine",
                  f"RestartCount 0 (restart policy {policy})")
    state = _state_of(container)
    name = container.name or container.short_id
    return warn("docker.restarts", f"restarted {count} times by the engine",
                f"RestartCount {count} (restart policy {policy}); last exit code "
                f"{_exit_code(state)}; last started at {state.get('StartedAt', '?')}",
                remedy=f"docker logs --tail 50 {name} (podman logs): why its main process "
                "exited")


def _oom(container: Container, version: Mapping[str, Any]) -> Finding:
    state = _state_of(container)
    limit = _bytes(int((container.attrs.get("HostConfig") or {}).get("Memory") or 0))
    if state.get("OOMKilled"):
        return fail("docker.oom", "the container was killed for lack of memory",
                    f"OOMKilled: true, exit code {_exit_code(state)}, memory limit {limit}",
                    remedy="raise mem_limit in docker-compose.unified.yml (its "
                    "UNISTACK_MEMORY_LIMIT: 64g, 4g with docker-compose.cpu.yml), e.g. "
                    f"UNISTACK_MEMORY_LIMIT=8g {START}")
    caveat = ""
    if _podman_before_5(version):
        caveat = ("; podman before 5.0 records OOMKilled only when conmon runs in the "
                  "container's bundle directory (containers/podman#13102): an exit code "
                  "137 may still be an OOM kill (dmesg shows it)")
    return ok("docker.oom", "not killed for lack of memory",
              f"OOMKilled: false, memory limit {limit}{caveat}")


def _bytes(count: int) -> str:
    if count <= 0:
        return "none"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} B"


def _environment(container: Container) -> dict[str, str]:
    """The container's environment (image, env_file, environment: what its processes
    see); the last assignment of a key wins, as in the process."""
    env: dict[str, str] = {}
    for item in (container.attrs.get("Config") or {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


def expected_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Each service port the stack listens on inside the container: the container's
    environment (config.env through compose's env_file), else this checkout's
    config.env, else the key's default."""
    try:
        config = {a.key: a.value for a in envfile.read(PROJECT_ROOT / "config.env")}
    except (envfile.EnvFileError, OSError):
        config = {}
    ports = {}
    for key in PORT_KEYS:
        raw = env.get(key) or config.get(key) or KEYS_BY_NAME[key].default
        ports[key] = int(raw) if raw.strip().isdigit() else int(KEYS_BY_NAME[key].default)
    return ports


def _bindings(container: Container) -> dict[str, list[tuple[str, str]]]:
    """Container port ("5000/tcp") -> its (host address, host port) bindings: what the
    engine made (NetworkSettings.Ports) while it runs, else what was asked
    (HostConfig.PortBindings: a stopped container keeps them). An empty address is every
    interface."""
    made = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    asked = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    source = made if any(made.values()) else asked
    found: dict[str, list[tuple[str, str]]] = {}
    for port, binds in source.items():
        for bind in binds or []:
            pair = (str(bind.get("HostIp") or ""), str(bind.get("HostPort") or ""))
            if pair not in found.setdefault(port, []):
                found[port].append(pair)
    return found


def _ports(container: Container) -> Finding:
    bindings = _bindings(container)
    beyond = [f"{port} published on {ip or '0.0.0.0 (every interface)'}:{host}"
              for port, pairs in sorted(bindings.items()) for ip, host in pairs
              if ip != LOOPBACK]
    missing = [f"{key}={number}: {number}/tcp is not published"
               for key, number in expected_ports(_environment(container)).items()
               if not bindings.get(f"{number}/tcp")]
    seen = ", ".join(f"{port} on {ip or '0.0.0.0'}:{host}"
                     for port, pairs in sorted(bindings.items()) for ip, host in pairs)
    if beyond:
        return fail("docker.ports", "a port is published beyond loopback",
                    "\n".join([*beyond, *missing]),
                    remedy="publish every port as 127.0.0.1:HOST:CONTAINER (the ports of "
                    f"docker-compose.unified.yml), then {START}")
    if missing:
        return warn("docker.ports", "a service port is not published",
                    "\n".join([*missing, f"published: {seen or 'nothing'}"]),
                    remedy="add it as 127.0.0.1:HOST:CONTAINER to the ports of "
                    f"docker-compose.unified.yml (HOST_<SERVICE>_PORT moves the host side), "
                    f"then {START}")
    return ok("docker.ports", "every service port is published on 127.0.0.1 only", seen)


def _mounts(container: Container) -> Finding:
    mounts = {str(m.get("Destination", "")).rstrip("/") or "/": m
              for m in container.attrs.get("Mounts") or []}
    problems, seen = [], []
    for name, destination in VOLUMES.items():
        mount = mounts.get(destination)
        if mount is None:
            problems.append(f"{name} ({destination}) is not mounted: what is written there "
                            "stays in the container and is lost with it")
            continue
        source = mount.get("Name") or mount.get("Source") or "?"
        if not mount.get("RW"):
            problems.append(f"{name} ({destination}) is mounted read-only from {source}")
        seen.append(f"{name}: {source} ({mount.get('Type', '?')}, "
                    f"{'rw' if mount.get('RW') else 'ro'})")
    if problems:
        return fail("docker.mounts", "a volume of docker-compose.unified.yml is missing or "
                    "read-only", "\n".join([*problems, *seen]),
                    remedy="restore the volume under services.unistack.volumes of "
                    f"docker-compose.unified.yml (read-write), then {START}")
    return ok("docker.mounts", "the five volumes are mounted read-write", "\n".join(seen))


def _gpu_requests(host: Mapping[str, Any]) -> list[str]:
    """The container's GPU requests: HostConfig.DeviceRequests with the gpu capability
    (Docker: compose's deploy.resources.reservations.devices, `docker run --gpus`), or
    NVIDIA devices (podman-compose turns the same reservation into the CDI device
    `nvidia.com/gpu=all`; podman 4's compatible API drops DeviceRequests)."""
    found = [f"device {d.get('PathOnHost')}" for d in host.get("Devices") or []
             if str(d.get("PathOnHost", "")).startswith("nvidia.com/gpu")
             or str(d.get("PathInContainer", "")).startswith("/dev/nvidia")]
    for request in host.get("DeviceRequests") or []:
        capabilities = [c for group in request.get("Capabilities") or [] for c in group or []]
        if "gpu" in capabilities:
            count = request.get("Count")
            ids = request.get("DeviceIDs") or []
            found.append(f"driver {request.get('Driver') or '(default)'}, "
                         f"{'count all' if count == -1 else f'count {count}'}"
                         f"{', devices ' + ','.join(ids) if ids else ''}, "
                         f"capabilities {sorted(set(capabilities))}")
    return found


def _gpu(container: Container, unified: Unified) -> Finding:
    host = container.attrs.get("HostConfig") or {}
    required = _environment(container).get("ML_REQUIRE_GPU", "0").strip() == "1"
    requests = _gpu_requests(host)
    runtime = str(host.get("Runtime") or "runc")
    if runtime == "nvidia":  # the older nvidia-docker2 way: the runtime exposes the GPUs
        requests.append("runtime nvidia")
    wanted = f"ML_REQUIRE_GPU={'1' if required else '0'}"
    if not requests and not required:
        return ok("docker.gpu", "no GPU requested (the CPU override)",
                  f"no GPU requested; {wanted}: serving on the CPU is intended")
    runtimes = sorted((unified.client.info().get("Runtimes") or {}).keys())
    engine = f"runtime {runtime}; engine runtimes: {', '.join(runtimes) or '?'}"
    if requests:
        return ok("docker.gpu", "the GPU is requested",
                  f"{'; '.join(requests)}; {engine}; {wanted}")
    return warn("docker.gpu", "the image requires a GPU the container does not request",
                f"{wanted} in the container's environment but no GPU requested (no "
                f"DeviceRequests with capabilities [gpu], no NVIDIA device): the ML engine "
                f"will not be ready; {engine}",
                remedy="keep deploy.resources.reservations.devices (driver nvidia, "
                "capabilities [gpu]) of docker-compose.unified.yml with the NVIDIA container "
                "toolkit on the host, or on a host without a GPU add docker-compose.cpu.yml "
                "(COMPOSE_FILE=docker-compose.unified.yml:docker-compose.cpu.yml), then "
                + START)
