"""Plain HTTP GETs of a benchmark or test: never through a proxy, never raising; and the
samples of a Prometheus /metrics page."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    """(status, body) of GET URL; (0, "") when nothing answers."""
    try:
        with NO_PROXY.open(url, timeout=timeout) as answer:
            return int(answer.status), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def http_json(url: str, timeout: float = 1.0) -> Any:
    """The JSON document at URL, or None when it does not answer 200 with JSON."""
    code, body = http_get(url, timeout)
    if code != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def metric_samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of the Prometheus exposition TEXT: (name, its labels sorted) → value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
