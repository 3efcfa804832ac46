"""Kubernetes mode without a cluster: every service started by `run SERVICE` as its own
process (as its own pod would), the hub among them in monitor-only mode. The hub probes
each at its <SERVICE>_HOST, reports and alerts, and never starts, stops or kills one:
a killed engine stays down until "Kubernetes" (this test) starts it again."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.stacks import Stack
from harness.waiting import wait_for

pytestmark = pytest.mark.integration

SECRETS = {"REDIS_PASSWORD": "a-shared-redis-secret-from-a-k8s-secret",
           "UNISTACK_OPERATOR_TOKEN": "a-shared-operator-token-from-a-secret"}


class Pods:
    """Each service as its own process, started the way its pod's container starts it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, service: str) -> None:
        with (self.stack.home / f"{service}.out").open("ab") as log:
            self.running[service] = subprocess.Popen(
                [sys.executable, "-m", "unistack", "run", service], env=self.stack.env,
                stdout=log, stderr=subprocess.STDOUT)

    def stop_all(self) -> None:
        for pod in self.running.values():
            if pod.poll() is None:
                pod.terminate()
                try:
                    pod.wait(10)
                except subprocess.TimeoutExpired:
                    pod.kill()


@pytest.fixture
def pods(stack: Stack) -> Iterator[Pods]:
    stack.env.update(SECRETS, UNISTACK_MODE="kubernetes")
    made = Pods(stack)
    try:
        yield made
    finally:
        made.stop_all()


def _hub(stack: Stack, path: str, method: str = "GET") -> tuple[int, Any]:
    token = SECRETS["UNISTACK_OPERATOR_TOKEN"]
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}",
                                     method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, {}


def _services(stack: Stack) -> dict[str, dict[str, Any]]:
    code, document = _hub(stack, "/status")
    return {s["name"]: s for s in document.get("services", [])} if code == 200 else {}


def _events(stack: Stack, service: str) -> dict[str, str]:
    """SERVICE's events so far: the detail of the last one of each kind."""
    code, document = _hub(stack, "/events")
    events = document.get("events", []) if code == 200 else []
    return {e["kind"]: e["detail"] for e in events if e.get("service") == service}


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_hub_watches_pods_and_leaves_restarts_to_kubernetes(
        stack: Stack, pods: Pods) -> None:
    trained = stack.cli("ml", "train", "--synthetic", "3000", "--rounds", "20")
    assert trained.returncode == 0, trained.stderr  # the operator's step (docs/deployment.md)
    for service in ("redis", "prometheus", "dashboard", "ml_engine", "hub"):
        pods.run(service)
    wait_for(lambda: len(_services(stack)) == 5
             and all(s["ready"] for s in _services(stack).values()), timeout=90, interval=0.3)
    status = stack.cli("status", "--json")  # no supervisord: the CLI asks the hub
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["overall"] == "healthy"
    assert _services(stack)["ml_engine"]["pid"] == 0  # no process of the hub's host

    code, said = _hub(stack, "/services/ml_engine/restart", "POST")
    assert code == 404 and "Kubernetes restarts it" in said["error"], (code, said)

    pods.running["ml_engine"].kill()  # the pod dies
    wait_for(lambda: "crashed" in _events(stack, "ml_engine"), timeout=15, interval=0.2)
    engine = _services(stack)["ml_engine"]
    assert not engine["ready"] and engine["incident"] == "crashed", engine
    said = _events(stack, "ml_engine")["crashed"]
    assert "refused" in said and "Kubernetes restarts it" in said, said
    deadline = time.monotonic() + 3  # the hub starts nothing: the port stays closed
    while time.monotonic() < deadline:
        assert _refused(stack.port("ML_ENGINE_PORT"))
        time.sleep(0.2)

    pods.run("ml_engine")  # Kubernetes restarts the pod
    wait_for(lambda: _services(stack)["ml_engine"]["ready"], timeout=60, interval=0.2)
    wait_for(lambda: "recovered" in _events(stack, "ml_engine"), timeout=30, interval=0.3)
    assert _services(stack)["redis"]["ready"] and not _services(stack)["redis"]["incident"]
