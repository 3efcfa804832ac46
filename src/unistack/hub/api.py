"""The hub's HTTP API on 127.0.0.1:HUB_PORT.

GET /health (the loop is alive), /ready (every critical service ready), /status,
/events, /metrics, /alerts (open incidents, silences, the outbox), /alerts/message?key=K.
POST /services/<name>/restart, /alerts/test, /alerts/silences ({"service", "seconds",
"reason"}) and /alerts/silences/<service>/end need the operator token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from unistack.alerts.service import Alerts
from unistack.config import LOOPBACK
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.hub.status import DOWN, status_document

log = logging.getLogger("unistack.hub.api")

_RESTART = re.compile(r"^/services/([a-z_]+)/restart$")
_END_SILENCE = re.compile(r"^/alerts/silences/([a-z_]+)/end$")
_BODY_MAX = 4096
_SILENCE_MAX = 7 * 86400.0


class BadRequest(Exception):
    """A request the API refuses; the message says what was expected."""


class HubApi:
    """What the HTTP handlers read and call; built by the factory."""

    def __init__(
        self,
        *,
        status: Callable[[], dict[str, Any]],
        loop_age: Callable[[], float],
        stale_after: float,
        events: EventLog,
        metrics: HubMetrics,
        restart: Callable[[str], str | None],
        token: str,
        alerts: Alerts | None = None,
        services: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.loop_age = loop_age
        self.stale_after = stale_after
        self.events = events
        self.metrics = metrics
        self.restart = restart
        self.token = token
        self.alerts = alerts
        self.services = services  # what a silence may name (with "stack")

    def health(self) -> tuple[int, dict[str, Any]]:
        age = self.loop_age()
        fresh = age <= self.stale_after
        return (200 if fresh else 503), {"alive": fresh, "loop_age": round(age, 3)}

    def ready(self) -> tuple[int, dict[str, Any]]:
        document = self.status()
        ready = document["overall"] != DOWN
        return (200 if ready else 503), {"ready": ready, "overall": document["overall"]}

    def silence(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self.alerts is not None
        service, seconds, reason = body.get("service"), body.get("seconds"), body.get("reason")
        known = (*self.services, "stack")
        if service not in known:
            raise BadRequest(f"service {service!r} is unknown: expected one of {list(known)}")
        if not isinstance(seconds, int | float) or not 0 < seconds <= _SILENCE_MAX:
            raise BadRequest(f"seconds {seconds!r} is invalid: expected a number of seconds "
                             f"> 0 and at most {_SILENCE_MAX:g} (7 days)")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
            raise BadRequest("reason is required: 1-200 characters saying why")
        until = self.alerts.silence(service, float(seconds), reason.strip())
        return 201, {"service": service, "until": until, "reason": reason.strip()}


def _handler(api: HubApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "unistack-hub"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, document: Any) -> None:
            self._send(code, json.dumps(document).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._json(*api.health())
            elif path == "/ready":
                self._json(*api.ready())
            elif path == "/status":
                self._json(200, api.status())
            elif path == "/events":
                self._json(200, {"events": api.events.recent()})
            elif path == "/metrics":
                self._send(200, api.metrics.render(), "text/plain; version=0.0.4")
            elif path == "/alerts" and api.alerts:
                self._json(200, api.alerts.status())
            elif path == "/alerts/message" and api.alerts:
                key = parse_qs(urlsplit(self.path).query).get("key", [""])[0]
                found = api.alerts.message(key)
                self._json(200 if found else 404, found or {"error": f"no message {key!r}"})
            else:
                self._json(404, {"error": f"no such resource {path}"})

        def do_POST(self) -> None:
            action = self._action()
            if action is None:
                self._json(404, {"error": f"no such action {self.path}"})
                return
            supplied = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not api.token or not hmac.compare_digest(supplied.encode(), api.token.encode()):
                self._json(401, {"error": "a valid operator token is required "
                                          "(Authorization: Bearer <UNISTACK_OPERATOR_TOKEN>)"})
                return
            try:
                self._json(*action())
            except BadRequest as exc:
                self._json(400, {"error": str(exc)})

        def _action(self) -> Callable[[], tuple[int, dict[str, Any]]] | None:
            """The POST handler for this path, or None (404)."""
            restart, end = _RESTART.match(self.path), _END_SILENCE.match(self.path)
            alerts = api.alerts
            if restart:
                return lambda: _restarted(api, restart.group(1))
            if alerts is None:
                return None
            if self.path == "/alerts/test":
                return lambda: (202, {"key": alerts.test(), "slack": alerts.slack_mode})
            if self.path == "/alerts/silences":
                return lambda: api.silence(self._body())
            if end:
                return lambda: (200, {"ended": alerts.unsilence(end.group(1)),
                                      "service": end.group(1)})
            return None

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= _BODY_MAX:
                raise BadRequest(f"expected a JSON body of 1-{_BODY_MAX} bytes, got {length}")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            return body

    return Handler


def _restarted(api: HubApi, name: str) -> tuple[int, dict[str, Any]]:
    error = api.restart(name)
    return (404, {"error": error}) if error else (202, {"restarting": name})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class HubServer:
    """Serves HubApi on 127.0.0.1 in a background thread."""

    def __init__(self, api: HubApi, port: int) -> None:
        self._server = _Server((LOOPBACK, port), _handler(api))
        # An idle hub must cost next to nothing: poll for shutdown rarely. stop() does not
        # wait for that poll; the thread is a daemon and the hub exits right after.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(5.0,),
                                        name="hub-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.server_close()


def document_builder(
    statuses: Callable[[], list[Any]], loop_age: Callable[[], float], pid: int,
    warnings: Callable[[], list[str]] = list,
) -> Callable[[], dict[str, Any]]:
    """The /status document: services, the hub's own loop age, the stack's warnings."""
    def build() -> dict[str, Any]:
        services = statuses()
        hub = {"pid": pid, "loop_age": round(loop_age(), 3)}
        return status_document(services, time.time(), hub, warnings())

    return build
