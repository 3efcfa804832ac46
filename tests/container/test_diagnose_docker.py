"""Docker-mode diagnosis (unistack.diagnose.docker) against podman's Docker-compatible API:
the unified container healthy, stopped, OOM-killed, published beyond loopback, and
without one of its volumes. Unified finds each by its compose labels, as it finds the
stack's container in production.

The healthy and stopped cases are one compose project (podman-compose, as the other
container tests); the others are single containers of the same image with the compose
labels, created (never started: nothing listens) except the OOM one, which runs a Python
that allocates past its 40 MiB limit. Everything is removed at the end, also after a
failure, and named `<project>_...` so that sweep_stale removes what a killed session left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import free_ports
from harness.waiting import wait_for
from tests.container.conftest import TIMINGS, Podman
from tests.container.test_container import (
    FILES,
    PUBLISHED,
    VOLUMES,
    Deployment,
    sweep_stale,
    write_secrets,
)
from tests.container.test_docker_mode import engine_socket
from unistack.container import Unified
from unistack.diagnose.docker import container_findings
from unistack.diagnose.findings import Finding

__all__ = ["engine_socket"]  # the fixture, imported for pytest to find
pytestmark = [pytest.mark.container, pytest.mark.timeout(300)]

PYTHON = "/opt/unistack/.venv/bin/python"  # the image's interpreter


def new_project() -> str:
    return f"ust{os.getpid()}{secrets.token_hex(2)}"


def findings_of(podman: Podman, socket: str, project: str) -> dict[str, Finding]:
    """container_findings through the engine socket, by id (each id once)."""
    unified = Unified({**podman.env, "DOCKER_HOST": socket, "COMPOSE_PROJECT_NAME": project,
                       "COMPOSE_FILE": ":".join(FILES)})
    begun = time.monotonic()
    found = container_findings(unified)
    TIMINGS.setdefault("diagnose docker", time.monotonic() - begun)
    by_id = {f.id: f for f in found}
    assert len(by_id) == len(found), [f.id for f in found]
    assert not [f for f in found if f.id.startswith("diagnose.error")], found
    return by_id


@pytest.fixture(scope="module")
def stack(podman: Podman, image: str) -> Iterator[Deployment]:
    """One compose project of the unified container, started and healthy (`podman
    healthcheck run` has passed: no systemd runs it here)."""
    sweep_stale(podman)
    secrets_dir = Path(tempfile.mkdtemp(prefix="us-secrets-"))
    project = new_project()
    ports = dict(zip(PUBLISHED, free_ports(len(PUBLISHED)), strict=True))
    deployment = Deployment(podman, project, secrets_dir, ports, write_secrets(secrets_dir))
    try:
        TIMINGS["diagnose: start->healthy"] = deployment.start()
        yield deployment
    finally:
        deployment.remove()
        shutil.rmtree(secrets_dir, ignore_errors=True)


@pytest.fixture
def single(podman: Podman, image: str) -> Iterator[str]:
    """A project name for one container created by hand (`<project>_unistack_1`) and
    its volumes (`<project>_<name>`), removed afterwards."""
    project = new_project()
    try:
        yield project
    finally:
        podman.run("rm", "-f", "-v", "-t", "0", f"{project}_unistack_1", check=False)
        for name in VOLUMES:
            podman.run("volume", "rm", "-f", f"{project}_{name}", check=False)


def create(podman: Podman, project: str, *args: str) -> str:
    """`podman create` of the image as compose would label it; its name."""
    name = f"{project}_unistack_1"
    podman.run("create", "--name", name,
               "--label", f"com.docker.compose.project={project}",
               "--label", "com.docker.compose.service=unistack",
               "--label", f"io.podman.compose.project={project}", *args)
    return name


def test_a_healthy_container_has_no_failure(podman: Podman, stack: Deployment,
                                            engine_socket: str) -> None:
    if not stack.inspect()["State"]["Running"]:  # the stopped case ran first
        stack.start()
    before = stack.inspect()
    found = findings_of(podman, engine_socket, stack.project)
    assert [f for f in found.values() if f.status == "fail"] == [], found
    assert {found[i].status for i in ("docker.engine", "docker.container", "docker.health",
                                      "docker.restarts", "docker.oom", "docker.ports",
                                      "docker.mounts", "docker.gpu")} == {"ok"}, found
    assert "Podman Engine 4" in found["docker.engine"].evidence
    assert found["docker.health"].evidence.startswith("healthy; last probe: exit 0")
    for host_port in stack.ports.values():
        assert f"127.0.0.1:{host_port}" in found["docker.ports"].evidence
    for name in VOLUMES:
        assert f"{name}: {stack.project}_{name} (volume, rw)" in found["docker.mounts"].evidence
    assert "ML_REQUIRE_GPU=0" in found["docker.gpu"].evidence  # docker-compose.cpu.yml
    after = stack.inspect()  # read-only: nothing restarted or changed
    assert (after["State"]["StartedAt"], after["RestartCount"]) == \
        (before["State"]["StartedAt"], before["RestartCount"])


def test_a_stopped_container_fails_with_its_exit_status(podman: Podman, stack: Deployment,
                                                        engine_socket: str) -> None:
    stack.compose("stop", timeout=120)
    found = findings_of(podman, engine_socket, stack.project)
    container = found["docker.container"]
    assert container.status == "fail"
    assert container.title == f"container {stack.container} is exited (exit code 0)"
    assert container.evidence.startswith("status: exited, exit code 0 (a clean stop of its "
                                         "main process), finished at ")
    tail = container.evidence.split("last log lines:\n", 1)[1].splitlines()
    assert 1 <= len(tail) <= 15, container.evidence
    assert container.remedy == "scripts/manage_production.sh --docker start"
    assert "docker.health" not in found  # nothing to probe; docker.container says why
    assert found["docker.ports"].status == found["docker.mounts"].status == "ok"


def test_no_container_names_the_project(podman: Podman, engine_socket: str) -> None:
    project = new_project()
    found = findings_of(podman, engine_socket, project)
    assert list(found) == ["docker.engine", "docker.container"]
    assert found["docker.container"].status == "fail"
    assert found["docker.container"].title == f"no container of compose project {project}"


def test_an_oom_killed_container_fails(podman: Podman, single: str,
                                       engine_socket: str) -> None:
    """A real OOM kill (the kernel's, under a 40 MiB limit without swap). Podman 4.3
    records OOMKilled only when conmon's working directory is the container's bundle
    directory: conmon writes its `oom` marker into its cwd, which podman before 5.0
    leaves as the caller's, while podman reads it from the bundle (containers/podman
    #13102, fixed in 5.0 by the persist directory). So `podman start` runs from there."""
    name = create(podman, single, "--memory", "40m", "--memory-swap", "40m",
                  "--entrypoint", PYTHON, "localhost/unistack:test",
                  "-c", "import time; time.sleep(0.5); hog = bytearray(400 << 20)")
    bundle = podman.run("inspect", name, "--format", "{{.StaticDir}}").stdout.strip()
    assert Path(bundle).is_dir(), bundle
    started = subprocess.run(["podman", "start", name], cwd=bundle, env=podman.env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    assert podman.run("wait", name, timeout=60).stdout.strip() == "137"
    found = findings_of(podman, engine_socket, single)
    oom = found["docker.oom"]
    assert oom.status == "fail" and oom.severity == "critical"
    assert oom.evidence == "OOMKilled: true, exit code 137, memory limit 40 MiB"
    assert "UNISTACK_MEMORY_LIMIT" in oom.remedy and "mem_limit" in oom.remedy
    assert found["docker.container"].status == "fail"
    assert "exit code 137 (SIGKILL: the OOM killer" in found["docker.container"].evidence


def test_a_port_published_beyond_loopback_fails_naming_it(podman: Podman, single: str,
                                                          engine_socket: str) -> None:
    ports = free_ports(len(PUBLISHED))
    published = [f"127.0.0.1:{host}:{port}" for port, host in zip(PUBLISHED, ports,
                                                                   strict=True)
                 if port != 5000]
    wide = ports[list(PUBLISHED).index(5000)]
    args = [f"--publish={p}" for p in published] + [f"--publish=0.0.0.0:{wide}:5000"]
    create(podman, single, *args, "localhost/unistack:test")  # created, never started
    found = findings_of(podman, engine_socket, single)
    finding = found["docker.ports"]
    assert finding.status == "fail" and finding.title == "a port is published beyond loopback"
    # podman's compatible API shows 0.0.0.0 as an empty HostIp, as Docker does for "all".
    assert finding.evidence == f"5000/tcp published on 0.0.0.0 (every interface):{wide}"
    assert "127.0.0.1:HOST:CONTAINER" in finding.remedy


def test_a_missing_volume_fails_naming_it(podman: Podman, single: str,
                                          engine_socket: str) -> None:
    volumes = [f"--volume={single}_{name}:{path}" + (":ro" if name == "backups" else "")
               for name, path in VOLUMES.items() if name != "logs"]
    create(podman, single, *volumes, "localhost/unistack:test")
    found = findings_of(podman, engine_socket, single)
    finding = found["docker.mounts"]
    assert finding.status == "fail" and finding.severity == "critical"
    lines = finding.evidence.splitlines()
    assert lines[0].startswith("logs (/var/lib/unistack/var/log) is not mounted")
    assert lines[1] == (f"backups (/var/lib/unistack/var/backups) is mounted read-only from "
                        f"{single}_backups")
    assert f"home: {single}_home (volume, rw)" in lines


def test_health_starting_warns_then_unhealthy_fails(podman: Podman, single: str,
                                                    engine_socket: str) -> None:
    """The image's own healthcheck on a container whose stack never starts (its entry
    point is sleep): starting until someone runs it (no systemd here), then unhealthy.
    Podman 4.3 takes --health-start-period and --health-retries only together with
    --health-cmd (else the image's 120 s and 3 apply): the same command is repeated."""
    probe = '["/opt/unistack/.venv/bin/python", "-m", "unistack", "health", "--ready"]'
    name = create(podman, single, "--health-cmd", probe, "--health-start-period", "1s",
                  "--health-retries", "2", "--entrypoint", "sleep", "localhost/unistack:test",
                  "300")
    podman.run("start", name)
    begun = time.monotonic()
    starting = findings_of(podman, engine_socket, single)["docker.health"]
    assert starting.status == "warn" and starting.title == "health still starting"
    assert starting.evidence.startswith("starting (failing streak 0); last probe: no probe "
                                        "has run yet")
    assert starting.remedy.startswith(f"podman healthcheck run {name}")
    time.sleep(max(0.0, 1.2 - (time.monotonic() - begun)))  # past the start period
    for _ in range(2):
        assert podman.run("healthcheck", "run", name, check=False).returncode == 1
    unhealthy = findings_of(podman, engine_socket, single)["docker.health"]
    assert unhealthy.status == "fail" and unhealthy.title == "the container is unhealthy"
    lines = unhealthy.evidence.splitlines()
    assert lines[0] == "unhealthy, failing streak 2; last probes:"
    assert len(lines) == 3 and all(line.startswith("exit 1 at ") for line in lines[1:])
    assert "not ready: hub at http://127.0.0.1:9180 did not answer GET /ready" in lines[-1]


def test_restarts_warn_with_the_count(podman: Podman, single: str,
                                      engine_socket: str) -> None:
    name = create(podman, single, "--restart", "on-failure:2", "--entrypoint", "/bin/false",
                  "localhost/unistack:test")
    podman.run("start", name)

    def restarted() -> bool:
        state = podman.json("inspect", name)[0]
        return bool(state["RestartCount"] == 2 and state["State"]["Status"] == "exited")

    wait_for(restarted, 30, 0.1, "two restarts by the engine")
    found = findings_of(podman, engine_socket, single)
    assert found["docker.restarts"].status == "warn"
    assert found["docker.restarts"].title == "restarted 2 times by the engine"
    assert found["docker.restarts"].evidence.startswith(
        "RestartCount 2 (restart policy on-failure); last exit code 1")
    assert found["docker.container"].title == f"container {name} is exited (exit code 1)"
    assert "(the stack's own error: see its last lines)" in found["docker.container"].evidence


def test_a_gpu_requiring_container_without_a_gpu_warns(podman: Podman, single: str,
                                                       engine_socket: str) -> None:
    """ML_REQUIRE_GPU=1 (the gpu target's image, or the compose file without its CPU
    override) and no GPU requested: the engine would never be ready."""
    create(podman, single, "--env", "ML_REQUIRE_GPU=1", "localhost/unistack:test")
    finding = findings_of(podman, engine_socket, single)["docker.gpu"]
    assert finding.status == "warn"
    assert finding.evidence.startswith("ML_REQUIRE_GPU=1 in the container's environment but "
                                       "no GPU requested")
    assert "; engine runtimes: " in finding.evidence and "runc" in finding.evidence
    assert "docker-compose.cpu.yml" in finding.remedy
