"""The dashboard program in a real stack: gunicorn (not the Flask development server) on
127.0.0.1 only, the hub's status and live events through it, restarted by the hub and
leaving no process behind at stop. And the dashboard's real hub client against a stand-in
hub on loopback: the Backups card and "Back up now" (POST /backups with the operator
token and the actor header)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from harness.ports import free_ports
from harness.stacks import Stack
from harness.waiting import wait_for
from tests.dashboard_fakes import STATUS, TOKEN, settings_for, sign_in
from unistack.dashboard import create_app
from unistack.dashboard.components import components
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


# --- the hub client against a stand-in hub: backups ------------------------------------------


class Asked(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class StandInHub(ThreadingHTTPServer):
    """The hub API as far as backups go: GET /status (with STATUS's backups document) and
    /alerts; POST /backups starts a backup (202), or refuses while one runs (409). Every
    request is recorded."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _StandInHandler)
        self.asked: list[Asked] = []
        self.running = False


class _StandInHandler(BaseHTTPRequestHandler):
    server: StandInHub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, code: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.asked.append(Asked(self.command, self.path, dict(self.headers.items()),
                                       self.rfile.read(length)))

    def do_GET(self) -> None:
        self._record()
        documents = {"/status": STATUS, "/alerts": {"slack": "off", "incidents": []}}
        found = documents.get(self.path)
        self._answer(200 if found else 404, found or {"error": "no"})

    def do_POST(self) -> None:
        self._record()
        if self.path != "/backups":
            self._answer(404, {"error": "no"})
        elif self.server.running:
            self._answer(409, {"error": "a backup is already running (since 12:00:01 UTC)"})
        else:
            self.server.running = True
            self._answer(202, {"started": True, "service": "backup"})


@contextlib.contextmanager
def stand_in_hub() -> Iterator[StandInHub]:
    hub = StandInHub(free_ports(1)[0])
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join(5)


def back_up_now(client: Any, csrf: str) -> tuple[int, str]:
    """The two POSTs of "Back up now": (the result's status, its page)."""
    first = client.post("/controls/backup", data={"csrf_token": csrf}).get_data(as_text=True)
    nonce = first.split('name="confirm" value="', 1)[1].split('"', 1)[0]
    second = client.post("/controls/backup", data={"csrf_token": csrf, "confirm": nonce})
    return second.status_code, second.get_data(as_text=True)


def test_back_up_now_reaches_the_hub_with_the_token_and_the_actor(tmp_path: Path) -> None:
    with stand_in_hub() as hub:
        settings = settings_for(tmp_path, HUB_PORT=str(hub.server_address[1]),
                                DASHBOARD_CONTROL_INTERVAL="0.01")
        app = create_app(settings)  # with the real HubClient
        client = app.test_client()
        page = client.get("/").get_data(as_text=True)
        assert 'id="backups-card"' in page and "1.2 GiB \u00b7 verified" in page
        csrf = sign_in(client)
        code, result = back_up_now(client, csrf)
        assert code == 200 and "Back up now: accepted" in result
        [post] = [a for a in hub.asked if a.method == "POST"]
        assert post.path == "/backups" and post.body == b""
        assert post.headers["Authorization"] == f"Bearer {TOKEN}"
        assert post.headers["X-Unistack-Actor"] == "dashboard from 127.0.0.1"
        wait_for(lambda: components(app).ledger.wait("backup", 0.01) == 0.0)  # the limit
        code, result = back_up_now(client, csrf)
        assert code == 409 and "Back up now: refused" in result
        assert "a backup is already running (since 12:00:01 UTC)" in result
