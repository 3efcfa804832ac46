"""A small client of the hub API for the CLI and the dashboard."""

from __future__ import annotations

import http.client
import json
from typing import Any

from unistack.config import LOOPBACK, Settings


class HubUnreachable(Exception):
    """The hub did not answer; the message says why."""


class HubClient:
    def __init__(self, settings: Settings, timeout: float = 2.0) -> None:
        self._port = settings.hub_port
        self._token = settings.unistack_operator_token
        self._timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(LOOPBACK, self._port, timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"} if method == "POST" else {}
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else {}
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise HubUnreachable(
                f"hub at http://{LOOPBACK}:{self._port} did not answer {method} {path}: {exc}"
            ) from exc
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, Any]:
        return self._request("GET", path)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self._request("POST", path, body)
