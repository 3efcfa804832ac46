"""The hub's HTTP API on UNISTACK_BIND_ADDRESS:HUB_PORT (127.0.0.1 natively).

GET /health (the loop is alive), /ready (every critical service ready), /status,
/events[?after=ID], /events/stream (server-sent events: each event with its id, then the
status document; `Last-Event-ID` replays what a reconnecting reader missed), /metrics,
/alerts (open incidents, silences, the outbox), /alerts/message?key=K, /incidents/<file>,
/backups (the archives, the schedule, the last run), /maintenance (the current hold),
/keys (which API keys are set, their last verification).
POST /services/<name>/restart, /alerts/test, /alerts/silences ({"service", "seconds",
"reason"}), /alerts/silences/<service>/end, /backups (take one now), /maintenance
({"services", "reason", "pid"}: hold them, for a restore), /maintenance/end and
/keys/verified ({"results": [{"provider", "status", "detail"}]}: `keys verify`) need the
operator token; each one done or refused is an audit event naming who asked (the
X-Unistack-Actor header) and the result.
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
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from unistack.alerts.service import Alerts
from unistack.event import Event, Kind, Severity
from unistack.hub.backups import BackupScheduler
from unistack.hub.client import ACTOR_HEADER
from unistack.hub.events import EventLog
from unistack.hub.keyreports import BadReport, KeyReports
from unistack.hub.maintenance import BadHold, Maintenance
from unistack.hub.metrics import HubMetrics
from unistack.hub.status import DOWN, status_document

log = logging.getLogger("unistack.hub.api")

_RESTART = re.compile(r"^/services/([a-z_]+)/restart$")
_END_SILENCE = re.compile(r"^/alerts/silences/([a-z_]+)/end$")
_INCIDENT = re.compile(r"^/incidents/([A-Za-z0-9._-]+)$")
_BODY_MAX = 4096
_SILENCE_MAX = 7 * 86400.0
_STREAM_EVERY = 10.0  # seconds: the status document (and a keepalive) at least this often
_ACTOR_MAX = 160


class BadRequest(Exception):
    """A request the API refuses; the message says what was expected."""


class Action(NamedTuple):
    """A control action: the service it is about, what it does (for the audit), the call
    that does it, and whether it sends a Slack message of its own (then its audit does not)."""

    service: str
    what: str
    run: Callable[[], tuple[int, dict[str, Any]]]
    quiet: bool = False


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
        incident: Callable[[str], str | None] = lambda name: None,
        backups: BackupScheduler | None = None,
        maintenance: Maintenance | None = None,
        keys: KeyReports | None = None,
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
        self.incident = incident  # an incident file's text by its name
        self.backups = backups
        self.maintenance = maintenance
        self.keys = keys

    def audit(self, action: Action, actor: str, code: int, body: dict[str, Any]) -> None:
        """One audit event per control action: what, by whom, and its result."""
        result = "done" if code < 300 else f"refused ({body.get('error', f'HTTP {code}')})"
        what = action.what
        if code == 201 and "until" in body:  # a silence: say which, how long and why
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(body["until"]))
            what = f"silence of {body['service']} until {until} ({body['reason']})"
        self.events.emit(body.get("service") or action.service, Kind.AUDIT, Severity.INFO,
                         f"{what} by {actor}: {result}", actor=actor,
                         quiet=action.quiet and code < 300)

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
            document = self._documents().get(path)
            if document is not None:
                self._json(200, document())
            elif path == "/health":
                self._json(*api.health())
            elif path == "/ready":
                self._json(*api.ready())
            elif path == "/events":
                self._json(200, {"events": self._events()})
            elif path == "/events/stream":
                self._stream()
            elif _INCIDENT.match(path):
                self._incident(_INCIDENT.match(path).group(1))  # type: ignore[union-attr]
            elif path == "/metrics":
                self._send(200, api.metrics.render(), "text/plain; version=0.0.4")
            elif path == "/alerts/message" and api.alerts:
                key = parse_qs(urlsplit(self.path).query).get("key", [""])[0]
                found = api.alerts.message(key)
                self._json(200 if found else 404, found or {"error": f"no message {key!r}"})
            else:
                self._json(404, {"error": f"no such resource {path}"})

        def _documents(self) -> dict[str, Callable[[], Any]]:
            """The GET paths that answer one JSON document, by what serves it."""
            found: dict[str, Callable[[], Any]] = {"/status": api.status}
            for path, source in (("/backups", api.backups), ("/maintenance", api.maintenance),
                                 ("/keys", api.keys), ("/alerts", api.alerts)):
                if source is not None:
                    found[path] = source.status
            return found

        def _events(self) -> list[Event]:
            after = parse_qs(urlsplit(self.path).query).get("after", [""])[0]
            return api.events.after(int(after)) if after.isdigit() else api.events.recent()

        def _incident(self, name: str) -> None:
            text = api.incident(name)
            if text is None:
                self._json(404, {"error": f"no incident file {name!r}"})
            else:
                self._send(200, text.encode(), "text/plain; charset=utf-8")

        def _stream(self) -> None:
            """Server-sent events until the reader goes away: what it missed (after its
            Last-Event-ID), then each new event and the status document after it, and the
            document again whenever a service's status changes without an event."""
            last = self._stream_start()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            chunk = b"retry: 1000\n\n"
            try:
                while True:
                    revision = api.events.revision  # before the document that shows it
                    events = api.events.after(last)
                    if events:
                        last = events[-1]["id"]
                    chunk += b"".join(_sse("event", e, e["id"]) for e in events)
                    self.wfile.write(chunk + _sse("status", api.status()) + b": keepalive\n\n")
                    chunk = b""
                    api.events.wait(last, revision, _STREAM_EVERY)
            except OSError:
                return  # the reader went away

        def _stream_start(self) -> int:
            """The reader's Last-Event-ID (or ?after=), else the newest event: no replay."""
            raw = self.headers.get("Last-Event-ID") or \
                parse_qs(urlsplit(self.path).query).get("after", [""])[0]
            if raw.isdigit():
                return int(raw)
            newest = api.events.recent(1)
            return newest[-1]["id"] if newest else 0

        def do_POST(self) -> None:
            found = self._action()
            if found is None:
                self._json(404, {"error": f"no such action {self.path}"})
                return
            supplied = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not api.token or not hmac.compare_digest(supplied.encode(), api.token.encode()):
                log.warning("%s refused: no valid operator token", found.what)
                self._json(401, {"error": "a valid operator token is required "
                                          "(Authorization: Bearer <UNISTACK_OPERATOR_TOKEN>)"})
                return
            try:
                code, body = found.run()
            except (BadRequest, BadHold, BadReport) as exc:
                code, body = 400, {"error": str(exc)}
            api.audit(found, self._actor(), code, body)
            self._json(code, body)

        def _actor(self) -> str:
            said = self.headers.get(ACTOR_HEADER, "")
            said = "".join(c for c in said if c.isprintable())[:_ACTOR_MAX].strip()
            return said or f"an unnamed client at {self.client_address[0]}"

        def _action(self) -> Action | None:
            """The control action of this POST path, or None (404)."""
            restart, end = _RESTART.match(self.path), _END_SILENCE.match(self.path)
            alerts = api.alerts
            if restart:
                name = restart.group(1)
                return Action(name, f"restart of {name}", lambda: _restarted(api, name))
            if alerts is None or not self.path.startswith("/alerts/"):
                return self._backup_action()
            return self._alert_action(alerts, end)

        def _alert_action(self, alerts: Alerts, end: re.Match[str] | None) -> Action | None:
            if self.path == "/alerts/test":  # Slack gets the test message itself
                return Action("stack", "test alert", lambda: (
                    202, {"key": alerts.test(), "slack": alerts.slack_mode}), quiet=True)
            if self.path == "/alerts/silences":  # ... and the silence's announcement
                return Action("stack", "silence", lambda: api.silence(self._body()), quiet=True)
            if end:
                name = end.group(1)
                return Action(name, f"end of the silence of {name}", lambda: (
                    200, {"ended": alerts.unsilence(name), "service": name}), quiet=True)
            return None

        def _backup_action(self) -> Action | None:
            """POST /backups, /maintenance (a restore's hold) and /maintenance/end."""
            backups, hold = api.backups, api.maintenance
            if self.path == "/backups" and backups:
                return Action("backup", "backup now", lambda: backups.request(self._actor()))
            if self.path == "/maintenance" and hold:  # the hold announces itself
                return Action("stack", "maintenance", lambda: (201, hold.begin(self._body())),
                              quiet=True)
            if self.path == "/maintenance/end" and hold:
                return Action("stack", "end of maintenance", lambda: (200, hold.end()),
                              quiet=True)
            if self.path == "/keys/verified" and api.keys:  # the results speak for it
                keys = api.keys
                return Action("stack", "API key verification",
                              lambda: keys.report(self._body()), quiet=True)
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


def _sse(kind: str, document: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(document)}\n\n".encode()


def _restarted(api: HubApi, name: str) -> tuple[int, dict[str, Any]]:
    error = api.restart(name)
    return (404, {"error": error}) if error else (202, {"restarting": name})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class HubServer:
    """Serves HubApi on ADDRESS (UNISTACK_BIND_ADDRESS) in a background thread."""

    def __init__(self, api: HubApi, address: str, port: int) -> None:
        self._server = _Server((address, port), _handler(api))
        # An idle hub must cost next to nothing: poll for shutdown rarely. stop() does not
        # wait for that poll; the thread is a daemon and the hub exits right after.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(5.0,),
                                        name="hub-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.server_close()


class StatusSources(NamedTuple):
    """What the /status document is made of, each read when it is asked for."""

    statuses: Callable[[], list[Any]]
    loop_age: Callable[[], float]
    pid: int
    warnings: Callable[[], list[str]] = list
    facts: Callable[[str], dict[str, Any]] = lambda name: {}
    system: Callable[[], dict[str, Any]] = dict
    gpu: Callable[[], dict[str, Any]] = dict
    backups: Callable[[], dict[str, Any]] = dict
    maintenance: Callable[[], dict[str, Any]] = dict
    keys: Callable[[], dict[str, Any]] = dict


def document_builder(sources: StatusSources) -> Callable[[], dict[str, Any]]:
    """The /status document: services with their facts, the hub's own loop age, the
    stack's warnings, the machine and its GPUs."""
    def build() -> dict[str, Any]:
        hub = {"pid": sources.pid, "loop_age": round(sources.loop_age(), 3)}
        return status_document(sources.statuses(), time.time(), hub, sources.warnings(),
                               sources.facts, system=sources.system(), gpu=sources.gpu(),
                               backups=sources.backups(), maintenance=sources.maintenance(),
                               keys=sources.keys())

    return build
