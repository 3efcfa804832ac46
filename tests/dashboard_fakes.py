"""Hand-written stand-ins for the dashboard's two upstreams (the hub API client and
Prometheus), recording what they were asked, a dashboard app built on them, and that app
served on loopback for a browser."""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import WSGIRequestHandler, make_server

from unistack.config import Settings, load_settings
from unistack.dashboard import create_app
from unistack.dashboard.components import components
from unistack.dashboard.upstream import MetricsUnavailable
from unistack.hub.client import HubUnreachable

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "operator-token-for-tests-0123456789abcdef"
NOW = 1700000100.0  # the time of STATUS
HOUR = 3600.0


def service(name: str, group: str, state: str = "READY", **extra: Any) -> dict[str, Any]:
    record = {"name": name, "group": group, "critical": name != "prometheus", "state": state,
              "ready": state == "READY", "pid": 100, "since": 1700000000.0, "detail": "ready",
              "url": "http://127.0.0.1:1", "restarts": 0, "incident": "", "last_incident": "",
              "facts": {}}
    record.update(extra)
    return record


def backups(now: float = NOW, **changes: Any) -> dict[str, Any]:
    """The hub's `backups` document at NOW: daily, the last run ok 3 h ago, nothing running;
    CHANGES replace its keys."""
    name = "unistack-20231115T190000Z.tar.zst"
    newest = {"name": name, "ts": now - 3 * HOUR, "size": 1288490189, "state": "verified"}
    document = {
        "dir": "/home/x/var/backups", "interval": 86400.0, "running": False,
        "running_since": None, "next_due": now + 21 * HOUR, "stale": False,
        "last": {"ok": True, "ts": now - 3 * HOUR + 14.2, "name": name, "took": 14.2,
                 "detail": "backup verified: 1000001 keys, 1.2 GB, 14.2 s"},
        "newest_verified": newest,
        "backups": [{**newest, "verified_at": now - 3 * HOUR + 14.0, "keys": 1000001,
                     "encrypted": False},
                    {"name": "unistack-20231114T190000Z.tar.zst", "ts": now - 27 * HOUR,
                     "size": 1073741824, "state": "verified", "verified_at": None,
                     "keys": 999000, "encrypted": False}],
    }
    document.update(changes)
    return document


STATUS: dict[str, Any] = {
    "overall": "healthy", "ts": 1700000100.0, "hub": {"pid": 7, "loop_age": 0.1},
    "services": [
        service("redis", "infrastructure", facts={"used_memory_bytes": 1048576, "keys": 3}),
        service("prometheus", "infrastructure"),
        service("dashboard", "frontend"),
        service("ml_engine", "ml", facts={"models": [{"name": "default", "version": 2,
                                                      "kind": "xgboost", "device": "cpu"}]}),
        service("hub", "infrastructure"),
    ],
    "warnings": [],
    "system": {"cpu_percent": 12.5, "memory_percent": 40.0, "disks": []},
    "gpu": {"available": False, "reason": "no NVIDIA driver", "devices": []},
    "backups": backups(),
}
ALERTS: dict[str, Any] = {"slack": "off", "incidents": [], "silences": [],
                          "outbox": {"counts": {"pending": 0}, "pending": [],
                                     "held_in_memory": 0}, "delivery": {}}


def status_message(status: dict[str, Any]) -> bytes:
    """STATUS as the hub's stream sends it."""
    return f"event: status\ndata: {json.dumps(status)}\n\n".encode()


class FakeHub:
    """The hub API client: answers from its attributes, records every call. With `live`
    set, its stream stays open after `chunks` and carries what `publish` sends."""

    def __init__(self) -> None:
        self.status = copy.deepcopy(STATUS)
        self.alerts = copy.deepcopy(ALERTS)
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}
        self.chunks = [b"retry: 1000\n\n", b"id: 5\nevent: event\ndata: {}\n\n"]
        self.answer: tuple[int, Any] = (202, {"restarting": "redis"})
        # Answers by path; a POST to any other path gets `answer`.
        self.answers: dict[str, tuple[int, Any]] = {
            "/backups": (202, {"started": True, "service": "backup"})}
        self.down = ""  # a reason: every call raises HubUnreachable
        self.gets: list[str] = []
        self.posts: list[tuple[str, Any, str]] = []
        self.streams: list[str | None] = []
        self.stream_closed = False
        self.flowing = threading.Event()  # cleared: the stream stalls after its first chunk
        self.flowing.set()
        self.live = False
        self.ended = threading.Event()  # set: live streams end
        self._listeners: list[queue.Queue[bytes]] = []

    def _check(self) -> None:
        if self.down:
            raise HubUnreachable(self.down)

    def get(self, path: str) -> tuple[int, Any]:
        self._check()
        self.gets.append(path)
        documents = {"/status": self.status, "/alerts": self.alerts,
                     "/events": {"events": self.events}}
        return (200, documents[path]) if path in documents else (404, {"error": "no"})

    def text(self, path: str) -> tuple[int, str]:
        self._check()
        name = path.rsplit("/", 1)[-1]
        return (200, self.incidents[name]) if name in self.incidents else (404, "{}")

    def post(self, path: str, body: Any = None, *, actor: str = "") -> tuple[int, Any]:
        self._check()
        self.posts.append((path, body, actor))
        return self.answers.get(path, self.answer)

    def publish(self, status: dict[str, Any]) -> None:
        """STATUS becomes the hub's status, sent to every open live stream at once, as the
        hub sends a `status` message when something changed."""
        self.status = status
        for listener in list(self._listeners):
            listener.put(status_message(status))

    def stream(self, last_event_id: str | None = None) -> Iterator[bytes]:
        self.streams.append(last_event_id)
        try:
            self._check()
            for number, chunk in enumerate(self.chunks):
                if number:
                    self.flowing.wait(10)
                yield chunk
            if self.live:
                yield from self._follow()
        finally:
            self.stream_closed = True

    def _follow(self) -> Iterator[bytes]:
        listener: queue.Queue[bytes] = queue.Queue()
        self._listeners.append(listener)
        try:
            while not self.ended.is_set():
                with contextlib.suppress(queue.Empty):
                    yield listener.get(timeout=0.1)
        finally:
            self._listeners.remove(listener)


class FakePrometheus:
    """Prometheus: one series per query, or down."""

    def __init__(self) -> None:
        self.down = ""
        self.queries: list[tuple[str, float, float, float]] = []
        self.instant: list[str] = []

    def query(self, promql: str) -> list[dict[str, Any]]:
        if self.down:
            raise MetricsUnavailable(self.down)
        self.instant.append(promql)
        return [{"metric": {}, "value": [1700000000.0, "0.25"]}]

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        if self.down:
            raise MetricsUnavailable(self.down)
        self.queries.append((promql, start, end, step))
        values = [[start + i * step, "0.5"] for i in range(int((end - start) / step) + 1)]
        values[-1][1] = "NaN"
        return [{"metric": {"service": "redis"}, "values": values}]


def settings_for(home: Path, **environ: str) -> Settings:
    return load_settings(environ={"UNISTACK_HOME": str(home),
                                  "UNISTACK_OPERATOR_TOKEN": TOKEN, **environ}, root=ROOT)


def make_app(home: Path, hub: FakeHub, prometheus: FakePrometheus, **environ: str) -> Flask:
    return create_app(settings_for(home, **environ), hub=hub, prometheus=prometheus)


def csrf_of(client: FlaskClient) -> str:
    """The CSRF token of CLIENT's session, as the login form carries it."""
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def sign_in(client: FlaskClient) -> str:
    """Sign CLIENT in as the operator; return the new session's CSRF token."""
    answer = client.post("/login", data={"csrf_token": csrf_of(client), "token": TOKEN})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return csrf_of(client)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request would bury the test's own output


@contextlib.contextmanager
def served(app: Flask, port: int) -> Iterator[str]:
    """APP served on 127.0.0.1:PORT (a thread per request) while inside; its URL. Only for
    tests driving the app with stand-ins from a browser: production runs gunicorn."""
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        components(app).stopping.set()  # open live streams end, as in a stopping worker
        server.shutdown()
        thread.join(5)
