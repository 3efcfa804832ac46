"""A small client of the hub API for the CLI and the dashboard. Cheap to import: it
needs nothing of the hub but its address and token."""

from __future__ import annotations

import getpass
import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

from unistack.config import Settings

ACTOR_HEADER = "X-Unistack-Actor"  # who asks for a control action: the hub audits it
_CHUNK = 65536


class HubUnreachable(Exception):
    """The hub did not answer; the message says why."""


def cli_actor() -> str:
    """How the CLI names itself in the hub's audit events."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"cli ({user}, pid {os.getpid()})"


class HubClient:
    def __init__(self, settings: Settings, timeout: float = 2.0) -> None:
        self._host, self._port = settings.hub_host, settings.hub_port
        self._token = settings.unistack_operator_token
        self._timeout = timeout

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout or self._timeout)

    def _unreachable(self, method: str, path: str, exc: Exception) -> HubUnreachable:
        return HubUnreachable(
            f"hub at http://{self._host}:{self._port} did not answer {method} {path}: {exc}")

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = self._connection()
        payload = None if body is None else json.dumps(body).encode()
        headers = dict(headers or {})
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(method, path, exc) from exc
        finally:
            connection.close()

    def _json(self, method: str, path: str, raw: bytes) -> Any:
        try:
            return json.loads(raw) if raw else {}
        except ValueError as exc:
            raise self._unreachable(method, path, exc) from exc

    def get(self, path: str) -> tuple[int, Any]:
        code, raw = self._request("GET", path)
        return code, self._json("GET", path, raw)

    def text(self, path: str) -> tuple[int, str]:
        """GET PATH as text (an incident file)."""
        code, raw = self._request("GET", path)
        return code, raw.decode(errors="replace")

    def post(self, path: str, body: Any = None, *, actor: str = "") -> tuple[int, Any]:
        """A control action with the operator token; ACTOR names who asked (audited)."""
        headers = {"Authorization": f"Bearer {self._token}", ACTOR_HEADER: actor or cli_actor()}
        code, raw = self._request("POST", path, body, headers)
        return code, self._json("POST", path, raw)

    def stream(self, last_event_id: str | None = None, timeout: float = 30.0) -> Iterator[bytes]:
        """The hub's live event stream (server-sent events) as raw bytes, as they arrive;
        with LAST_EVENT_ID the events after it come first. Ends when the hub closes it;
        a hub silent for TIMEOUT seconds (it sends something every 10 s) is unreachable."""
        path = "/events/stream"
        connection = self._connection(timeout)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status != 200:
                raise HubUnreachable(f"hub answered GET {path} with HTTP {response.status}")
            while chunk := response.read1(_CHUNK):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable("GET", path, exc) from exc
        finally:
            connection.close()
