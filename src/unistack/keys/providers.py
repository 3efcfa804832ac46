"""The trading system's API providers: their keys, each key's format, and one cheap
authenticated request that says whether the keys work. A result names the provider and
what happened, never a key (every detail passes through the keys' redaction).

Outcomes: valid (the provider answered as its API does), rejected (401/403), rate
limited (429), unreachable (no answer in time, a 5xx, or an answer that is not the API's:
a wrong base URL, a proxy), and, before any request, missing or malformed.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from unistack.config import Settings
from unistack.redaction import redact

VALID, REJECTED, RATE_LIMITED, UNREACHABLE = "valid", "rejected", "rate-limited", "unreachable"
MISSING, MALFORMED = "missing", "malformed"
OUTCOMES = (VALID, REJECTED, RATE_LIMITED, UNREACHABLE, MISSING, MALFORMED)
ALPACA_PAPER, ALPACA_LIVE = "https://paper-api.alpaca.markets", "https://api.alpaca.markets"


class Format(NamedTuple):
    pattern: str
    described: str  # what a well-formed value looks like, for the error


class Provider(NamedTuple):
    name: str  # "alpaca": the service name of its events
    title: str  # "Alpaca"
    keys: tuple[str, ...]  # its configuration keys, all needed
    base_key: str  # the configuration key of its base URL
    path: str  # the cheap authenticated GET
    formats: dict[str, Format]
    headers: Callable[[Mapping[str, str]], dict[str, str]]
    answer: Callable[[Any], bool]  # the JSON is the API's own answer


def _bearer(key: str) -> Callable[[Mapping[str, str]], dict[str, str]]:
    return lambda values: {"Authorization": f"Bearer {values[key]}"}


PROVIDERS = (
    Provider(
        "polygon", "Polygon.io", ("POLYGON_API_KEY",), "POLYGON_BASE_URL",
        "/v1/marketstatus/now",
        {"POLYGON_API_KEY": Format(r"[A-Za-z0-9_]{20,64}",
                                   "20-64 letters, digits or _ (the dashboard's API key)")},
        _bearer("POLYGON_API_KEY"),
        lambda body: isinstance(body, dict) and "market" in body),
    Provider(
        "unusual_whales", "Unusual Whales", ("UNUSUAL_WHALES_API_KEY",),
        "UNUSUAL_WHALES_BASE_URL", "/api/stock/SPY/info",
        {"UNUSUAL_WHALES_API_KEY": Format(
            r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
            "a UUID token like 01234567-89ab-cdef-0123-456789abcdef")},
        _bearer("UNUSUAL_WHALES_API_KEY"),
        lambda body: isinstance(body, dict) and "data" in body),
    Provider(
        "alpaca", "Alpaca", ("ALPACA_API_KEY_ID", "ALPACA_API_SECRET_KEY"), "ALPACA_BASE_URL",
        "/v2/account",
        {"ALPACA_API_KEY_ID": Format(r"[PA]K[A-Z0-9]{14,30}",
                                     "PK... (paper) or AK... (live), 16-32 capitals and digits"),
         "ALPACA_API_SECRET_KEY": Format(r"[A-Za-z0-9/+]{30,64}",
                                         "30-64 letters, digits, / or +")},
        lambda values: {"APCA-API-KEY-ID": values["ALPACA_API_KEY_ID"],
                        "APCA-API-SECRET-KEY": values["ALPACA_API_SECRET_KEY"]},
        lambda body: isinstance(body, dict) and "status" in body),
)
BY_NAME = {provider.name: provider for provider in PROVIDERS}
KEY_NAMES = tuple(key for provider in PROVIDERS for key in provider.keys)


class Result(NamedTuple):
    provider: str
    title: str
    status: str  # one of OUTCOMES
    detail: str  # one sentence for the operator; never a key
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def values_of(settings: Settings, provider: Provider) -> dict[str, str]:
    return {key: str(settings.value(key)) for key in provider.keys}


def check_format(provider: Provider, values: Mapping[str, str], base_url: str
                 ) -> Result | None:
    """MISSING or MALFORMED before any request (None when the keys look right)."""
    missing = [key for key in provider.keys if not values.get(key)]
    if missing:
        return Result(provider.name, provider.title, MISSING,
                      f"{', '.join(missing)} not set: scripts/update_api_keys.sh sets it")
    for key, wanted in provider.formats.items():
        if not re.fullmatch(wanted.pattern, values[key]):
            return Result(provider.name, provider.title, MALFORMED,
                          f"{key} (value hidden, {len(values[key])} characters) is not "
                          f"{wanted.described}; not sent")
    if provider.name == "alpaca":
        return _alpaca_environment(provider, values["ALPACA_API_KEY_ID"], base_url)
    return None


def _alpaca_environment(provider: Provider, key_id: str, base_url: str) -> Result | None:
    """Paper keys (PK...) against the live endpoint, or live keys against paper: Alpaca
    would reject them, and the wrong pairing is the operator's to notice."""
    live_key, paper_url = key_id.startswith("AK"), "paper-api." in base_url
    if live_key == paper_url:
        which = "a live key (AK...)" if live_key else "a paper key (PK...)"
        return Result(provider.name, provider.title, MALFORMED,
                      f"ALPACA_API_KEY_ID is {which} but ALPACA_BASE_URL is {base_url}: "
                      f"set ALPACA_BASE_URL to {ALPACA_LIVE if live_key else ALPACA_PAPER}; "
                      "not sent")
    return None


def verify(provider: Provider, values: Mapping[str, str], base_url: str, timeout: float
           ) -> Result:
    """The format check, then one GET of the provider's cheap authenticated path."""
    found = check_format(provider, values, base_url)
    if found is not None:
        return found
    begun = time.monotonic()
    status, detail = _ask(provider, values, base_url, timeout)
    took = time.monotonic() - begun
    return Result(provider.name, provider.title, status,
                  redact(detail, [v for v in values.values() if v]), round(took, 3))


def _ask(provider: Provider, values: Mapping[str, str], base_url: str, timeout: float
         ) -> tuple[str, str]:
    url = base_url.rstrip("/") + provider.path
    headers = {**provider.headers(values), "Accept": "application/json",
               "User-Agent": "unistack-keys"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s): config)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            raw = answer.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return _refused(exc, url)
    except OSError as exc:  # refused, unresolvable, no answer in time
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return UNREACHABLE, f"GET {url}: no answer within {timeout:g} s"
        return UNREACHABLE, f"GET {url}: {reason}"
    try:
        body = json.loads(raw)
    except ValueError:
        return UNREACHABLE, (f"GET {url} answered 200 but not with JSON: is "
                             f"{provider.base_key} the API's address (not a proxy or a web "
                             "page)?")
    if not provider.answer(body):
        return UNREACHABLE, (f"GET {url} answered JSON that is not {provider.title}'s: check "
                             f"{provider.base_key}")
    return VALID, f"GET {provider.path}: 200, the keys work"


def _refused(exc: urllib.error.HTTPError, url: str) -> tuple[str, str]:
    if exc.code in (401, 403):
        return REJECTED, f"GET {url}: HTTP {exc.code}: the provider refused the keys"
    if exc.code == 429:
        retry = exc.headers.get("Retry-After") if exc.headers else None
        after = f"; it asks to retry after {retry} s" if retry else ""
        return RATE_LIMITED, f"GET {url}: HTTP 429: rate limited{after} (the keys were not judged)"
    return UNREACHABLE, f"GET {url}: HTTP {exc.code} {exc.reason}"


def verify_all(settings: Settings, names: tuple[str, ...] = (), timeout: float = 5.0
               ) -> list[Result]:
    """Each provider (or NAMES) at once: the slowest sets the time, not their sum."""
    chosen = [BY_NAME[name] for name in names] if names else list(PROVIDERS)
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        futures = [pool.submit(verify, provider, values_of(settings, provider),
                               str(settings.value(provider.base_key)), timeout)
                   for provider in chosen]
        return [future.result() for future in futures]
