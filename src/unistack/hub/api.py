"""The hub's HTTP API on 127.0.0.1:HUB_PORT.

GET /health (the loop is alive), /ready (every critical service ready), /status,
/events, /metrics. POST /services/<name>/restart needs the operator token.
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

from unistack.config import LOOPBACK
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.hub.status import DOWN, status_document

log = logging.getLogger("unistack.hub.api")

_RESTART = re.compile(r"^/services/([a-z_]+)/restart$")


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
    ) -> None:
        self.status = status
        self.loop_age = loop_age
        self.stale_after = stale_after
        self.events = events
        self.metrics = metrics
        self.restart = restart
        self.token = token

    def health(self) -> tuple[int, dict[str, Any]]:
        age = self.loop_age()
        fresh = age <= self.stale_after
        return (200 if fresh else 503), {"alive": fresh, "loop_age": round(age, 3)}

    def ready(self) -> tuple[int, dict[str, Any]]:
        document = self.status()
        ready = document["overall"] != DOWN
        return (200 if ready else 503), {"ready": ready, "overall": document["overall"]}


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
            else:
                self._json(404, {"error": f"no such resource {path}"})

        def do_POST(self) -> None:
            match = _RESTART.match(self.path)
            if not match:
                self._json(404, {"error": f"no such action {self.path}"})
                return
            supplied = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not api.token or not hmac.compare_digest(supplied.encode(), api.token.encode()):
                self._json(401, {"error": "a valid operator token is required "
                                          "(Authorization: Bearer <UNISTACK_OPERATOR_TOKEN>)"})
                return
            error = api.restart(match.group(1))
            if error:
                self._json(404, {"error": error})
            else:
                self._json(202, {"restarting": match.group(1)})

    return Handler


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
    statuses: Callable[[], list[Any]], loop_age: Callable[[], float], pid: int
) -> Callable[[], dict[str, Any]]:
    """The /status document: services plus the hub's own loop age."""
    def build() -> dict[str, Any]:
        services = statuses()
        hub = {"pid": pid, "loop_age": round(loop_age(), 3)}
        return status_document(services, time.time(), hub)

    return build
