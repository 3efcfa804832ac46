"""The dashboard program in a real stack: gunicorn (not the Flask development server) on
127.0.0.1 only, the hub's status and live events through it, restarted by the hub and
leaving no process behind at stop."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import psutil
import pytest

from tests.conftest import Stack, wait_for
from unistack.services import REGISTRY

pytestmark = pytest.mark.integration


def status(stack: Stack) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(stack.cli("status", "--json").stdout)
    return document


def dashboard(stack: Stack) -> dict[str, Any]:
    return next(s for s in status(stack)["services"] if s["name"] == "dashboard")


def get(stack: Stack, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port("DASHBOARD_PORT"),
                                            timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class EventStream:
    """An SSE connection to the dashboard's /api/events, read as parsed messages."""

    def __init__(self, stack: Stack) -> None:
        self._connection = http.client.HTTPConnection(
            "127.0.0.1", stack.port("DASHBOARD_PORT"), timeout=15)
        self._connection.request("GET", "/api/events", headers={"Accept": "text/event-stream"})
        self.response = self._connection.getresponse()

    def next_message(self) -> dict[str, str]:
        """The next message (its `event`, `data`, `id` fields); comments are skipped."""
        message: dict[str, str] = {}
        while True:
            line = self.response.fp.readline().decode().rstrip("\n")
            if not line and message:
                return message
            if line and not line.startswith(":"):
                field, _, value = line.partition(":")
                message[field] = value.removeprefix(" ")

    def until(self, wanted: Any, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next_message()
            if wanted(message):
                return message
        raise AssertionError(f"no wanted message within {timeout} s")

    def close(self) -> None:
        self._connection.close()


def family(pid: int) -> list[psutil.Process]:
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def test_the_dashboard_is_gunicorn_on_loopback_and_stop_leaves_nothing(stack: Stack) -> None:
    started = stack.cli("start")
    assert started.returncode == 0, started.stderr
    port = stack.port("DASHBOARD_PORT")
    assert f"dashboard    http://127.0.0.1:{port}" in started.stdout
    service = dashboard(stack)
    assert service["state"] == "READY" and service["ready"] is True
    processes = family(service["pid"])
    assert len(processes) == 1 + 2  # the gunicorn master and DASHBOARD_WORKERS workers
    for process in processes:
        assert process.cmdline()[-2:] == ["-m", "unistack.dashboard"]
    code, headers, _ = get(stack, "/health")
    assert code == 200 and headers["Server"] == "gunicorn"  # not Werkzeug's dev server
    listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in {p.pid for p in processes}}
    assert listening == {("127.0.0.1", port)}

    code, _, body = get(stack, "/api/status")
    document = json.loads(body)
    assert code == 200
    assert [s["name"] for s in document["status"]["services"]] == \
        [s["name"] for s in status(stack)["services"]]
    assert {s["name"] for s in document["status"]["services"]} == {s.name for s in REGISTRY}
    code, headers, body = get(stack, "/")
    assert code == 200 and "Content-Security-Policy" in headers and b"dashboard.js" in body

    stopped = stack.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert stack.processes() == []


def test_live_events_arrive_through_the_dashboard(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    stream = EventStream(stack)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        first = stream.until(lambda m: m.get("event") == "status", timeout=5)
        names = [s["name"] for s in json.loads(first["data"])["services"]]
        assert names == [s["name"] for s in status(stack)["services"]]
        assert stack.cli("restart", "prometheus").returncode == 0
        event = stream.until(lambda m: m.get("event") == "event" and '"prometheus"' in
                             m.get("data", ""), timeout=10)
        assert int(event["id"]) > 0 and json.loads(event["data"])["service"] == "prometheus"
    finally:
        stream.close()


def hung_events(stack: Stack) -> list[str]:
    log = (stack.home / "var" / "log" / "hub.log").read_text()
    return [line for line in log.splitlines() if "event dashboard hung" in line]


def test_restart_dashboard(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    before = dashboard(stack)
    old = family(before["pid"])
    stream = EventStream(stack)  # an open live view must not hold the stop up
    stream.until(lambda m: m.get("event") == "status", timeout=5)
    began = time.monotonic()
    restarted = stack.cli("restart", "dashboard")
    took = time.monotonic() - began
    stream.close()
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "dashboard ready again" in restarted.stdout
    after = dashboard(stack)
    assert after["pid"] != before["pid"] and after["ready"] is True
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                             for p in old), timeout=5)
    assert get(stack, "/ready")[0] == 200
    assert took < 10
    assert not hung_events(stack)  # probes failing while it stops on request are no hang
