"""`start --foreground` (a container's main process) and `run SERVICE` (a pod's), on the
real supervisord, redis-server and hub: no container runtime needed to prove the stop
order, Redis's stop without a full RDB save, the HEALTHCHECK command and exec."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from harness.stacks import Stack
from harness.waiting import wait_for

pytestmark = pytest.mark.integration


def _foreground(stack: Stack) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "unistack", "start", "--foreground"],
                            env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _ready(stack: Stack) -> subprocess.CompletedProcess[str]:
    return stack.cli("health", "--ready", timeout=10)


def _password(stack: Stack) -> str:
    line = next(x for x in (stack.home / ".env").read_text().splitlines()
                if x.startswith("REDIS_PASSWORD="))
    return line.split("=", 1)[1]


def test_foreground_becomes_supervisord_and_stops_in_reverse_order(stack: Stack) -> None:
    main = _foreground(stack)
    try:
        assert _ready(stack).returncode == 1  # not yet: the HEALTHCHECK says not ready
        wait_for(lambda: _ready(stack).returncode == 0, timeout=60, interval=0.3)
        assert _ready(stack).stdout.strip() == "ready"
        status = stack.cli("status", "--json")
        assert status.returncode == 0, status.stdout
        pid = int((stack.home / "var/run/supervisord.pid").read_text())
        assert pid == main.pid  # exec: supervisord is the main process itself
        client = redis.Redis(port=stack.port("REDIS_PORT"), password=_password(stack))
        client.set("acknowledged", "yes")
        second = stack.cli("start", "--foreground", "--no-wait")
        assert second.returncode == 1 and "already running" in second.stderr
        stopped = time.monotonic()
        main.send_signal(signal.SIGTERM)  # what `podman stop` does
        output, _ = main.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if main.poll() is None:
            main.kill()
    assert main.returncode == 0, output
    assert took < 11, f"stop took {took:.1f} s, above the stop budget"
    order = re.findall(r"stopped: (\w+)", output)
    assert order == ["hubguard", "hub", "ml_engine", "dashboard", "prometheus", "redis"], output
    assert "hub (exit status 0)" in output or "hub (terminated by SIGTERM)" in output, output
    redis_log = (stack.home / "var/log/redis.log").read_text()
    after = redis_log[redis_log.rindex("Received SIGTERM"):]
    assert "fsync() on the AOF" in after
    assert "DB saved on disk" not in after and "Saving the final RDB" not in after
    assert not stack.processes()

    main = _foreground(stack)  # a new main process on the same home keeps the write
    try:
        wait_for(lambda: _ready(stack).returncode == 0, timeout=60, interval=0.3)
        client = redis.Redis(port=stack.port("REDIS_PORT"), password=_password(stack))
        assert client.get("acknowledged") == b"yes"
    finally:
        main.send_signal(signal.SIGTERM)
        main.communicate(timeout=30)


def test_run_execs_one_service_from_its_supervisord_program(stack: Stack) -> None:
    env = {**stack.env, "REDIS_PASSWORD": "a-shared-secret-from-a-k8s-secret",
           "UNISTACK_OPERATOR_TOKEN": "an-operator-token-from-a-secret",
           "UNISTACK_MODE": "kubernetes"}
    server = subprocess.Popen([sys.executable, "-m", "unistack", "run", "redis"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = redis.Redis(port=stack.port("REDIS_PORT"),
                             password="a-shared-secret-from-a-k8s-secret")

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout=20, interval=0.1)
        name = Path(f"/proc/{server.pid}/comm").read_text().strip()
        assert name.startswith("redis-server")  # the same pid became redis-server
        assert os.stat(stack.home / "var/run/redis.conf").st_mode & 0o077 == 0
    finally:
        server.terminate()
        server.communicate(timeout=10)


def test_run_refuses_outside_kubernetes_and_without_shared_secrets(stack: Stack) -> None:
    native = stack.cli("run", "redis")
    assert native.returncode == 1 and "UNISTACK_MODE=kubernetes" in native.stderr
    assert "`start`" in native.stderr
    stack.env["UNISTACK_MODE"] = "kubernetes"
    done = stack.cli("run", "ml_engine")
    assert done.returncode == 1
    assert "REDIS_PASSWORD" in done.stderr and "REDIS_PASSWORD_FILE" in done.stderr
    assert stack.cli("run", "nothing").returncode == 2  # not a service of the registry
    assert not (stack.home / "var").exists()  # refused before writing anything
