"""`manage_production.sh --docker ...` against podman's Docker-compatible API socket:
compose (podman-compose here) starts and stops the unified container, and the Docker SDK
finds it by its compose labels and runs every other command inside it. `status --json`
has the shape it has natively, also when the container is not running."""

from __future__ import annotations

import json
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
from tests.conftest import ROOT
from tests.container.conftest import IMAGE as IMAGE_TAG
from tests.container.conftest import Podman
from tests.container.test_container import FILES, PUBLISHED, Deployment, write_secrets

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]


@pytest.fixture
def engine_socket(podman: Podman) -> Iterator[str]:
    """podman's Docker-compatible API on a unix socket of our own, for this test only."""
    directory = Path(tempfile.mkdtemp(prefix="us-podman-"))
    path = directory / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{path}"],
                               env=podman.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not path.is_socket():
            assert time.monotonic() < deadline, "podman system service did not listen"
            time.sleep(0.05)
        yield f"unix://{path}"
    finally:
        service.terminate()
        service.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def docker_mode(podman: Podman, image: str, engine_socket: str) -> Iterator[dict[str, str]]:
    """The environment an operator's `--docker` commands run with, and the project
    removed afterwards."""
    secrets_dir = Path(tempfile.mkdtemp(prefix="us-secrets-"))
    project = f"ust{os.getpid()}{secrets.token_hex(2)}"
    ports = dict(zip(PUBLISHED, free_ports(len(PUBLISHED)), strict=True))
    deployment = Deployment(podman, project, secrets_dir, ports, write_secrets(secrets_dir))
    env = {**podman.env, **deployment.compose_env, "DOCKER_HOST": engine_socket,
           "COMPOSE_PROJECT_NAME": project, "COMPOSE_FILE": ":".join(FILES)}
    try:
        yield env
    finally:
        deployment.remove()
        shutil.rmtree(secrets_dir, ignore_errors=True)


def docker(env: dict[str, str], *args: str, timeout: float = 240
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts/manage_production.sh"), "--docker", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_docker_mode_drives_the_container_through_compose_and_the_engine_api(
        docker_mode: dict[str, str]) -> None:
    assert IMAGE_TAG in docker_mode["UNISTACK_IMAGE"]
    down = docker(docker_mode, "status", "--json")  # nothing created yet
    assert down.returncode == 2, down.stderr
    document = json.loads(down.stdout)
    assert document["overall"] == "down"
    assert all(s["state"] == "STOPPED" and "no container of compose project" in s["detail"]
               for s in document["services"]), document

    started = docker(docker_mode, "start", "--timeout", "180")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "unistack (container) is ready" in started.stdout

    status = docker(docker_mode, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    native_shape = json.loads(status.stdout)
    assert native_shape["overall"] == "healthy"
    assert {s["name"] for s in native_shape["services"]} == {s["name"] for s in
                                                            document["services"]}
    assert set(native_shape) >= set(document)  # the same document, filled in
    table = docker(docker_mode, "status")
    assert table.returncode == 0 and "redis" in table.stdout and "READY" in table.stdout

    doctor = docker(docker_mode, "ml", "doctor", "--json")  # runs inside the container
    assert doctor.returncode == 0, doctor.stderr
    assert json.loads(doctor.stdout)["backends"]["xgboost"]["device"] == "cpu"

    backup = docker(docker_mode, "backup", "--json")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    listed = docker(docker_mode, "backups", "--json")
    assert listed.returncode == 0 and "verified" in listed.stdout, listed.stdout

    diagnosed = docker(docker_mode, "diagnose", "--json")  # the engine's view, then inside
    found = {f["id"]: f for f in json.loads(diagnosed.stdout)["findings"]}
    assert diagnosed.returncode in (0, 1), diagnosed.stdout + diagnosed.stderr
    for passed in ("docker.container", "docker.ports", "docker.mounts", "service.redis",
                   "supervisord.reachable"):
        assert found[passed]["status"] == "ok", found[passed]

    logs = docker(docker_mode, "logs", "hub", "-n", "5")
    assert logs.returncode == 0 and "hub" in logs.stdout

    stopped = docker(docker_mode, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    after = docker(docker_mode, "status", "--json")
    assert after.returncode == 2
    assert all("is exited" in s["detail"] for s in json.loads(after.stdout)["services"])
    inside = docker(docker_mode, "ml", "models")
    assert inside.returncode == 1 and "is exited" in inside.stderr
    assert "--docker start" in inside.stderr  # the way out


def test_docker_mode_without_an_engine_says_how_to_get_one(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"}
    done = docker(env, "status")
    assert done.returncode == 1
    assert f"unix://{tmp_path}/nothing.sock does not answer" in done.stderr


def test_docker_start_fails_fast_with_the_reason_when_the_stack_cannot_start(
        docker_mode: dict[str, str]) -> None:
    secrets_dir = Path(docker_mode["UNISTACK_SECRETS_DIR"])
    short = secrets_dir / "redis_password"  # the operator's typo: a password too short
    short.chmod(0o600)
    short.write_text("short-pass\n")
    short.chmod(0o400)
    begun = time.monotonic()
    done = docker(docker_mode, "start", "--timeout", "120")
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - begun < 60  # the reason at once, not the timeout
    assert "exited with code 2" in done.stderr or "keeps exiting" in done.stderr, done.stderr
    assert "REDIS_PASSWORD (value hidden, 10 characters) is too short" in done.stderr
    assert "short-pass" not in done.stdout + done.stderr
