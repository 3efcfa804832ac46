"""A small client of Prometheus's HTTP query API (`/api/v1/query`, `/api/v1/query_range`)
on 127.0.0.1:PROMETHEUS_PORT; every failure is one `MetricsUnavailable` saying why."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlencode

from unistack.config import Settings
from unistack.dashboard.upstream import MetricsUnavailable


class PrometheusClient:
    def __init__(self, settings: Settings, timeout: float = 2.0) -> None:
        self._host, self._port = settings.prometheus_host, settings.prometheus_port
        self._timeout = timeout

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of PROMQL now."""
        return self._get("/api/v1/query", {"query": promql})

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        """The range matrix of PROMQL from START to END (epoch seconds) every STEP seconds."""
        return self._get("/api/v1/query_range",
                         {"query": promql, "start": start, "end": end, "step": step})

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        where = f"prometheus at http://{self._host}:{self._port}"
        try:
            connection.request("GET", f"{path}?{urlencode(params)}")
            response = connection.getresponse()
            document = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise MetricsUnavailable(f"{where} did not answer: {exc}") from exc
        finally:
            connection.close()
        if not isinstance(document, dict) or document.get("status") != "success":
            error = document.get("error") if isinstance(document, dict) else None
            raise MetricsUnavailable(f"{where} refused the query: {error or response.status}")
        result: list[dict[str, Any]] = document["data"]["result"]
        return result
