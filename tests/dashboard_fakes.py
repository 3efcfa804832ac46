"""Hand-written stand-ins for the dashboard's two upstreams (the hub API client and
Prometheus), recording what they were asked, and a dashboard app built on them."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from unistack.config import Settings, load_settings
from unistack.dashboard import create_app
from unistack.dashboard.upstream import MetricsUnavailable
from unistack.hub.client import HubUnreachable

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "operator-token-for-tests-0123456789abcdef"


def service(name: str, group: str, state: str = "READY", **extra: Any) -> dict[str, Any]:
    record = {"name": name, "group": group, "critical": name != "prometheus", "state": state,
              "ready": state == "READY", "pid": 100, "since": 1700000000.0, "detail": "ready",
              "url": "http://127.0.0.1:1", "restarts": 0, "incident": "", "last_incident": "",
              "facts": {}}
    record.update(extra)
    return record


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
}
ALERTS: dict[str, Any] = {"slack": "off", "incidents": [], "silences": [],
                          "outbox": {"counts": {"pending": 0}, "pending": [],
                                     "held_in_memory": 0}, "delivery": {}}


class FakeHub:
    """The hub API client: answers from its attributes, records every call."""

    def __init__(self) -> None:
        self.status = copy.deepcopy(STATUS)
        self.alerts = copy.deepcopy(ALERTS)
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}
        self.chunks = [b"retry: 1000\n\n", b"id: 5\nevent: event\ndata: {}\n\n"]
        self.answer: tuple[int, Any] = (202, {"restarting": "redis"})
        self.down = ""  # a reason: every call raises HubUnreachable
        self.gets: list[str] = []
        self.posts: list[tuple[str, Any, str]] = []
        self.streams: list[str | None] = []
        self.stream_closed = False
        self.flowing = threading.Event()  # cleared: the stream stalls after its first chunk
        self.flowing.set()

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
        return self.answer

    def stream(self, last_event_id: str | None = None) -> Iterator[bytes]:
        self.streams.append(last_event_id)
        try:
            self._check()
            for number, chunk in enumerate(self.chunks):
                if number:
                    self.flowing.wait(10)
                yield chunk
        finally:
            self.stream_closed = True


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
