"""A port already held by another process: `start` refuses within 2 s, exit 2, naming
the key, the port and the holder, and starts nothing."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from harness.stacks import Stack
from harness.waiting import wait_for
from unistack.preflight import bindable


@pytest.mark.parametrize("key", ["REDIS_PORT", "HUB_PORT"])
def test_a_taken_port_is_named_with_its_holder_in_two_seconds(
    stack: Stack, key: str
) -> None:
    port = stack.port(key)
    squatter = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: not bindable(port))
        began = time.monotonic()
        done = stack.cli("start")
        took = time.monotonic() - began
    finally:
        squatter.kill()
        squatter.wait(5)
    assert done.returncode == 2, done.stderr
    assert took <= 2.0, f"took {took:.2f} s"
    assert f"{key}={port} is taken by pid {squatter.pid} (redis-server" in done.stderr
    assert f"set {key}=" in done.stderr and "config.env" in done.stderr
    assert not (stack.home / "var/run/supervisor.sock").exists()  # nothing started
    assert stack.processes() == []


def test_every_taken_port_is_named_at_once(stack: Stack) -> None:
    held = []
    for key in ("PROMETHEUS_PORT", "ML_ENGINE_PORT"):
        sock = socket.socket()
        sock.bind(("127.0.0.1", stack.port(key)))
        sock.listen()
        held.append(sock)
    try:
        done = stack.cli("start")
    finally:
        for sock in held:
            sock.close()
    assert done.returncode == 2
    assert "PROMETHEUS_PORT=" in done.stderr and "ML_ENGINE_PORT=" in done.stderr
    assert "likewise for the others" in done.stderr
