"""API key verifications, as `keys verify` reports them (POST /keys/verified, operator
token): each result an event, a rejected or malformed key a warning alert naming the
provider (never the key), a valid one resolving it; the record `keys verify` and
`keys set` write (var/run/keys.json, no key in it) served as the status document's
`keys`, for the dashboard."""

from __future__ import annotations

import json
from typing import Any

from unistack.config import Settings
from unistack.event import Kind, Severity
from unistack.hub.events import EventLog
from unistack.keys.providers import (
    BY_NAME,
    MALFORMED,
    OUTCOMES,
    PROVIDERS,
    REJECTED,
    VALID,
)

_DETAIL_MAX = 500


class BadReport(ValueError):
    """A report the hub refuses; the message says what was expected."""


class KeyReports:
    def __init__(self, settings: Settings, events: EventLog) -> None:
        self._settings = settings
        self._events = events
        self._path = settings.run_dir / "keys.json"

    def report(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        results = body.get("results")
        if not isinstance(results, list) or not results:
            raise BadReport("results is required: a list of {provider, status, detail}")
        checked = [self._checked(result) for result in results]
        for provider, status, detail in checked:
            title = BY_NAME[provider].title
            if status in (REJECTED, MALFORMED):
                self._events.emit(provider, Kind.KEY_REJECTED, Severity.WARNING,
                                  f"{title} API keys {status}: {detail}",
                                  next_step="scripts/update_api_keys.sh, then "
                                  "scripts/verify_api_keys.py")
            elif status == VALID:
                self._events.emit(provider, Kind.KEY_VALID, Severity.INFO,
                                  f"{title} API keys valid")
            else:
                self._events.emit(provider, Kind.KEY_UNVERIFIED, Severity.INFO,
                                  f"{title} API keys not verified ({status}): {detail}")
        return 202, {"recorded": len(checked)}

    def _checked(self, result: Any) -> tuple[str, str, str]:
        if not isinstance(result, dict):
            raise BadReport("each result must be an object {provider, status, detail}")
        provider, status, detail = (result.get(k) for k in ("provider", "status", "detail"))
        if provider not in BY_NAME:
            raise BadReport(f"provider {provider!r} is unknown: expected one of "
                            f"{list(BY_NAME)}")
        if status not in OUTCOMES:
            raise BadReport(f"status {status!r} is unknown: expected one of {list(OUTCOMES)}")
        if not isinstance(detail, str) or len(detail) > _DETAIL_MAX:
            raise BadReport(f"detail must be text of at most {_DETAIL_MAX} characters")
        return provider, status, self._settings.redact(detail)

    def status(self) -> dict[str, Any]:
        """Each provider: which keys are set, its base URL, the last verification."""
        try:
            record = json.loads(self._path.read_text())
            known = record["providers"] if isinstance(record, dict) else {}
        except (OSError, ValueError, KeyError):
            known = {}
        found = {}
        for provider in PROVIDERS:
            entry = known.get(provider.name) if isinstance(known, dict) else None
            if not isinstance(entry, dict):  # never recorded: what this hub was started with
                entry = {"title": provider.title,
                         "base_url": str(self._settings.value(provider.base_key)),
                         "keys": {key: bool(self._settings.value(key))
                                  for key in provider.keys}}
            found[provider.name] = {k: entry.get(k) for k in
                                    ("title", "base_url", "keys", "status", "detail",
                                     "verified")}
        return {"providers": found}
