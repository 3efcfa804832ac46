"""A local HTTP server standing in for Slack: incoming webhooks and the Web API methods
unistack uses, recording every request, and told when to fail.

    with SlackStandIn() as slack:
        slack.fail(500, count=3)                 # the next 3 requests answer 500
        slack.rate_limit(2, path="/api/")        # the next Web API request: 429, Retry-After: 2
        slack.hang(count=1)                      # the next request sleeps past any timeout
        slack.api_error("channel_not_found")     # the next Web API call: 200 ok=false
        slack.down(); slack.up()                 # refuse connections, then listen again
        slack.webhook_url, slack.api_url         # what to put in SLACK_WEBHOOK_URL / _API_URL
        slack.ping_url                           # a dead man's switch (HEARTBEAT_URL): 200
        slack.requests                           # every request, in arrival order
        slack.quiet_for(3)                       # ... once none has come for 3 s
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from harness.waiting import wait_for

WEBHOOK_PATH = "/webhook/T000/B000/standin-secret-path"
PING_PATH = "/ping/0d4c6b4e-standin-check-uuid"
API_METHODS = ("chat.postMessage", "chat.update", "auth.test")


@dataclass
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON or form fields; the raw text when neither parses
    raw: str
    monotonic: float
    wall: float
    status: int = 0  # what the stand-in answered (0: no answer, it hung or closed)


@dataclass
class Fault:
    kind: str  # "status", "rate_limit", "hang", "api_error"
    count: int
    path: str  # a path prefix; "" matches every path
    value: float = 0.0  # status code, Retry-After seconds, or hang seconds
    error: str = ""  # api_error: Slack's error code


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))


def channel_id(channel: str) -> str:
    """The id Slack answers with for CHANNEL (a name like #alerts becomes C...)."""
    if not channel.startswith("#"):
        return channel
    return "C" + hashlib.sha256(channel.encode()).hexdigest()[:10].upper()


def _parse(raw: str, content_type: str) -> Any:
    if "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    if "form" in content_type:
        return dict(parse_qsl(raw))
    return raw


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `requests`, not stderr

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        record = Recorded("POST", self.path, dict(self.headers.items()),
                          _parse(raw, self.headers.get("Content-Type", "")), raw,
                          time.monotonic(), time.time())
        with state.lock:
            state.requests.append(record)
            fault = self._take_fault(state)
        if fault is not None and fault.kind == "hang":
            state.release.wait(fault.value)
            self.close_connection = True
            return
        status, headers, body = self._answer(fault, record)
        record.status = status
        self._reply(status, headers, body)

    def _take_fault(self, state: _State) -> Fault | None:
        for fault in state.faults:
            if fault.count > 0 and self.path.startswith(fault.path):
                fault.count -= 1
                return fault
        return None

    def _answer(self, fault: Fault | None,
                record: Recorded) -> tuple[int, dict[str, str], bytes]:
        if fault is not None and fault.kind == "rate_limit":
            return 429, {"Retry-After": f"{fault.value:g}"}, b'{"ok":false,"error":"ratelimited"}'
        if fault is not None and fault.kind == "api_error":
            body = {"ok": False, "error": fault.error}
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if fault is not None:
            return int(fault.value), {}, b"server error"
        if self.path.startswith(("/webhook/", "/ping/")):
            return 200, {"Content-Type": "text/plain"}, b"ok"
        return self._api(record)

    def _api(self, record: Recorded) -> tuple[int, dict[str, str], bytes]:
        method = self.path.removeprefix("/api/").split("?")[0]
        if method not in API_METHODS:
            return 404, {}, b"unknown method"
        body = record.body if isinstance(record.body, dict) else {}
        answer: dict[str, Any] = {"ok": True}
        if method == "chat.postMessage":
            answer.update(channel=channel_id(str(body.get("channel", ""))),
                          ts=f"{1700000000 + next(self.server.state.ts)}.000100")
        elif method == "chat.update":
            answer.update(channel=body.get("channel"), ts=body.get("ts"))
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class SlackStandIn:
    """The stand-in server on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self) -> None:
        self._state = _State()
        self._server: _Server | None = None
        self.port = 0

    def __enter__(self) -> SlackStandIn:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self._state.release.set()
        self.down()

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PING_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    def calls(self, path: str = "", answered: int | None = 200) -> list[Recorded]:
        """Requests to paths starting with PATH that got ANSWERED (None: every request)."""
        return [r for r in self.requests if r.path.startswith(path)
                and (answered is None or r.status == answered)]

    def quiet_for(self, seconds: float, timeout: float = 60.0) -> list[Recorded]:
        """Every request, once none has arrived for SECONDS (nothing more is on its way);
        WaitTimeout after TIMEOUT seconds."""
        def quiet() -> bool:
            requests = self.requests
            return not requests or time.monotonic() - requests[-1].monotonic >= seconds

        wait_for(quiet, timeout, 0.05, f"{seconds:g} s without a request at the stand-in")
        return self.requests

    def up(self) -> None:
        """Listen (again, on the same port after down())."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.state = self._state
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Close the listening socket: connections are refused until up()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail(self, status: int = 500, count: int = 1, path: str = "") -> None:
        self._add(Fault("status", count, path, status))

    def rate_limit(self, retry_after: float, count: int = 1, path: str = "") -> None:
        self._add(Fault("rate_limit", count, path, retry_after))

    def hang(self, seconds: float = 30.0, count: int = 1, path: str = "") -> None:
        """Read the request, then answer nothing for SECONDS (or until the stand-in stops)."""
        self._add(Fault("hang", count, path, seconds))

    def api_error(self, error: str, count: int = 1, path: str = "/api/") -> None:
        """Answer 200 {"ok": false, "error": ERROR}, as the Web API does."""
        self._add(Fault("api_error", count, path, error=error))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def _add(self, fault: Fault) -> None:
        with self._state.lock:
            self._state.faults.append(fault)
