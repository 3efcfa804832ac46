"""The configuration's keys: each key's name, default, how its value parses and what fits,
in one table (`KEYS`), with the names other modules look keys up by (ports, secrets, the
generated secrets, the services that listen and the services the hub probes).

A parser takes the raw text and returns the value or raises ValueError; naming the key
and the value in the message is config's business, which reads the files and the
environment. A leaf: it imports nothing of ours.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOOPBACK = "127.0.0.1"


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0):
        raise ValueError
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError
        return raw

    return parse


def _pattern(regex: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def parse(raw: str) -> str:
        if not compiled.fullmatch(raw):
            raise ValueError
        return raw

    return parse


def _address(raw: str) -> str:
    """An IPv4 address literal (what a listener binds; IPv6 would need brackets in URLs
    and in Prometheus's listen address)."""
    return str(ipaddress.IPv4Address(raw.strip()))


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*"


def _host(raw: str) -> str:
    """A host name (a Kubernetes Service, `redis.ns.svc`) or an IPv4 address literal."""
    value = raw.strip()
    try:
        return _address(value)
    except ValueError:
        return _pattern(_HOSTNAME)(value)


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < 1:
        raise ValueError
    return value


def _percent(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 100:
        raise ValueError
    return value


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError
    return raw.strip()


def _optional(raw: str) -> str:
    return raw.strip()


def _optional_pattern(regex: str) -> Callable[[str], str]:
    """Empty (the feature is off), or text matching REGEX."""
    compiled = re.compile(regex)

    def parse(raw: str) -> str:
        value = raw.strip()
        if value and not compiled.fullmatch(value):
            raise ValueError
        return value

    return parse


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> float:
    """A duration like 90s, 30m, 1.5h or 2d as seconds > 0; ValueError otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)(s|m|h|d)\s*", raw)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a duration like 30m, 2h or 90s, got {raw!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _durations(raw: str) -> tuple[float, ...]:
    """A comma-separated schedule like "30m,1h,4h" as seconds, each later than the last."""
    values = [parse_duration(part) for part in raw.split(",")]
    if values != sorted(set(values)):
        raise ValueError
    return tuple(values)


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, how it parses, and what fits."""

    name: str
    default: str
    parse: Callable[[str], Any]
    expected: str
    secret: bool = False
    generated: bool = False  # a secret unistack creates itself (others the operator sets)


_DURATION = r"[0-9]+(ms|s|m|h|d|w|y)"
# Every service that listens: its port is <PREFIX>_PORT and clients reach it at
# <PREFIX>_HOST (127.0.0.1, or a Kubernetes Service name in the scale-out overlay).
SERVICE_PREFIXES = ("REDIS", "PROMETHEUS", "HUB", "ML_ENGINE", "DASHBOARD")
# Services the hub probes, each with its own liveness and readiness timings.
PROBED_SERVICES = ("REDIS", "PROMETHEUS", "ML_ENGINE", "DASHBOARD")
_PROBE_DEFAULTS = {"INTERVAL": "0.3", "TIMEOUT": "0.4", "THRESHOLD": "2"}


def _probe_keys() -> tuple[Key, ...]:
    """Readiness runs every INTERVAL; liveness has no interval of its own: it runs right
    after a failed readiness probe, confirmed 50 ms later (hub/monitor.py)."""
    keys = []
    for service in PROBED_SERVICES:
        for kind in ("LIVENESS", "READINESS"):
            prefix = f"{service}_{kind}"
            keys += [
                Key(f"{prefix}_TIMEOUT", _PROBE_DEFAULTS["TIMEOUT"], _positive_float,
                    "seconds > 0"),
                Key(f"{prefix}_THRESHOLD", _PROBE_DEFAULTS["THRESHOLD"], _positive_int,
                    "a count > 0"),
            ]
        keys.append(Key(f"{service}_READINESS_INTERVAL", _PROBE_DEFAULTS["INTERVAL"],
                        _positive_float, "seconds > 0"))
    return tuple(keys)


def parse_interval(raw: str) -> float:
    """A duration, or 0 for off."""
    return 0.0 if raw.strip() == "0" else parse_duration(raw)


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError
    return value


# Retention, restic's rules (unistack.backup.retention): kept by any rule means kept.
_KEEP_DEFAULTS = {"LAST": "7", "HOURLY": "0", "DAILY": "7", "WEEKLY": "4", "MONTHLY": "6",
                  "YEARLY": "0"}


def _keep_keys() -> tuple[Key, ...]:
    return tuple(Key(f"BACKUP_KEEP_{rule}", default, _count, "a count >= 0")
                 for rule, default in _KEEP_DEFAULTS.items())


_SIZE = r"[0-9]+(B|KB|MB|GB|TB)"
_CHANNEL = r"#[a-z0-9_.-]{1,80}|[CGD][A-Z0-9]{6,20}"


def _window(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 2:
        raise ValueError
    return value


KEYS: tuple[Key, ...] = (
    Key("UNISTACK_MODE", "native", _choice("native", "docker", "kubernetes"),
        "one of native, docker, kubernetes"),
    Key("UNISTACK_HOME", "", _optional, "a directory path (empty: the checkout)"),
    Key("UNISTACK_BIND_ADDRESS", LOOPBACK, _address,
        "an IPv4 address (127.0.0.1 natively; 0.0.0.0 only in docker or kubernetes mode)"),
    *(Key(f"{service}_HOST", LOOPBACK, _host, "a host name or an IPv4 address")
      for service in SERVICE_PREFIXES),
    Key("REDIS_PORT", "6380", _port, "a TCP port 1-65535"),
    Key("PROMETHEUS_PORT", "9190", _port, "a TCP port 1-65535"),
    Key("HUB_PORT", "9180", _port, "a TCP port 1-65535"),
    Key("ML_ENGINE_PORT", "9181", _port, "a TCP port 1-65535"),
    Key("DASHBOARD_PORT", "5000", _port, "a TCP port 1-65535"),
    Key("REDIS_SERVER_BIN", "redis-server", _text, "a program name or path"),
    Key("REDIS_MAXMEMORY", "1gb", _pattern(r"[1-9][0-9]*(kb|mb|gb)?"),
        "a size like 512mb or 2gb (Redis refuses writes past it: noeviction)"),
    Key("PROMETHEUS_BIN", "prometheus", _text, "a program name or path"),
    Key("PROMETHEUS_SCRAPE_INTERVAL", "5s", _pattern(_DURATION), "a duration like 5s"),
    Key("PROMETHEUS_RETENTION_TIME", "15d", _pattern(_DURATION), "a duration like 15d"),
    Key("PROMETHEUS_RETENTION_SIZE", "1GB", _pattern(_SIZE), "a size like 1GB"),
    Key("HUB_LOOP_INTERVAL", "1.0", _positive_float, "seconds > 0"),
    Key("HUB_STALE_AFTER", "5", _positive_float, "seconds > 0"),
    Key("SERVICE_READY_TIMEOUT", "20", _positive_float, "seconds > 0"),
    Key("RESTART_BACKOFF_INITIAL", "1", _positive_float, "seconds > 0"),
    Key("RESTART_BACKOFF_MAX", "300", _positive_float, "seconds > 0"),
    Key("RESTART_BACKOFF_JITTER", "0.2", _fraction, "a fraction 0 <= x < 1"),
    Key("RESTART_STABLE_PERIOD", "600", _positive_float, "seconds > 0"),
    Key("FLAP_RESTARTS", "3", _positive_int, "a count > 0"),
    Key("FLAP_WINDOW", "600", _positive_float, "seconds > 0"),
    Key("INCIDENT_RESOLVE_AFTER", "3", _positive_float, "seconds > 0"),
    Key("LOOP_RESOLVE_AFTER", "60", _positive_float, "seconds > 0"),
    Key("INCIDENT_LOG_LINES", "50", _positive_int, "a count > 0"),
    Key("INCIDENT_MAX_AGE", "30d", parse_duration, "a duration like 30d or 12h"),
    Key("INCIDENT_MAX_FILES", "500", _positive_int, "a count > 0"),
    Key("BUSY_GRACE", "10", _positive_float, "seconds > 0"),
    Key("HEARTBEAT_URL", "", _optional_pattern(r"https?://\S+"),
        "an http(s) URL the hub calls while it runs (empty: off)", secret=True),
    Key("HEARTBEAT_INTERVAL", "60", _positive_float, "seconds > 0"),
    Key("RESOURCE_INTERVAL", "5", _positive_float, "seconds > 0"),
    Key("CPU_WARN_PERCENT", "90", _percent, "a percentage 0 < x <= 100"),
    Key("MEMORY_WARN_PERCENT", "90", _percent, "a percentage 0 < x <= 100"),
    Key("DISK_FREE_WARN_PERCENT", "10", _percent, "a percentage 0 < x <= 100"),
    Key("RESOURCE_HYSTERESIS_PERCENT", "5", _percent, "a percentage 0 < x <= 100"),
    Key("EVENTS_STREAM_MAXLEN", "10000", _positive_int, "a count > 0"),
    Key("ML_ENGINE_CONSUMER", "", _optional_pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
        "a stream consumer name (empty: the host name, unique per pod)"),
    Key("ML_REQUIRE_GPU", "0", _choice("0", "1"), "0 or 1"),
    Key("ML_MAX_BATCH_ROWS", "1024", _positive_int, "a count > 0"),
    Key("ML_MAX_WAIT_US", "200", _positive_int, "microseconds > 0"),
    Key("ML_CLAIM_IDLE_MS", "2000", _positive_int, "milliseconds > 0"),
    Key("ML_MAX_DELIVERIES", "3", _positive_int, "a count > 0"),
    Key("ML_REPLY_TTL", "60", _positive_int, "seconds > 0"),
    Key("ML_MODEL_REFRESH_INTERVAL", "2", _positive_float, "seconds > 0"),
    Key("DASHBOARD_WORKERS", "2", _positive_int, "a count > 0"),
    Key("DASHBOARD_THREADS", "16", _positive_int, "a count > 0"),
    Key("DASHBOARD_CONTROL_INTERVAL", "10", _positive_float, "seconds > 0"),
    Key("BACKUP_DIR", "", _optional_pattern(r"/\S.*|/"),
        "an absolute directory path (empty: UNISTACK_HOME/var/backups)"),
    Key("BACKUP_INTERVAL", "1d", parse_interval,
        "a duration like 6h or 1d, or 0 (no scheduled backups)"),
    *_keep_keys(),
    Key("BACKUP_RECIPIENT", "", _optional_pattern(r"age1[02-9ac-hj-np-z]{58}"),
        "an age recipient (age1..., 62 characters) that --include-secrets archives are "
        "encrypted to (empty: --include-secrets refused)"),
    *_probe_keys(),
    Key("START_TIMEOUT", "30", _positive_float, "seconds > 0"),
    Key("STOP_TIMEOUT", "12", _positive_float, "seconds > 0"),
    Key("LOG_FORMAT", "text", _choice("text", "json"), "one of text, json"),
    Key("LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"),
        "one of DEBUG, INFO, WARNING, ERROR"),
    Key("LOG_MAX_BYTES", "10485760", _positive_int, "bytes > 0"),
    Key("LOG_BACKUPS", "5", _positive_int, "a count > 0"),
    Key("SLACK_API_URL", "https://slack.com/api/", _pattern(r"https?://\S+/"),
        "an http(s) URL ending in /"),
    Key("SLACK_CHANNEL_INFO", "#alerts", _pattern(_CHANNEL), "a channel like #alerts or C0123"),
    Key("SLACK_CHANNEL_WARNING", "#alerts", _pattern(_CHANNEL),
        "a channel like #alerts or C0123"),
    Key("SLACK_CHANNEL_CRITICAL", "#alerts", _pattern(_CHANNEL),
        "a channel like #alerts or C0123"),
    Key("SLACK_MENTION_CRITICAL", "<!here>", _optional_pattern(r"<[!@#][^<>\s]+>"),
        "a Slack mention like <!here> or <@U0123> (empty: none)"),
    Key("SLACK_TIMEOUT", "5", _positive_float, "seconds > 0"),
    Key("ALERT_GROUP_WINDOW", "0.5", _window, "seconds, 0 <= x <= 2"),
    Key("ALERT_REMINDERS", "30m,1h,2h,4h", _durations,
        "increasing durations like 30m,1h,4h (the last one repeats)"),
    Key("ALERT_RESOLVED_NOTICE", "1", _choice("0", "1"), "0 or 1"),
    Key("ALERT_CHANNEL_INTERVAL", "1", _positive_float, "seconds > 0 between two messages"),
    Key("ALERT_RETRY_MAX", "60", _positive_float, "seconds > 0"),
    Key("ALERT_OUTBOX_MAX", "10000", _positive_int, "a count > 0"),
    Key("ALERT_PROMETHEUS_POLL", "1", _positive_float, "seconds > 0"),
    Key("REDIS_PASSWORD", "", _optional, "a generated secret", secret=True, generated=True),
    Key("UNISTACK_OPERATOR_TOKEN", "", _optional, "a generated secret", secret=True,
        generated=True),
    Key("SLACK_WEBHOOK_URL", "", _optional_pattern(r"https?://\S+"),
        "an incoming-webhook URL (empty: webhook mode off)", secret=True),
    Key("SLACK_BOT_TOKEN", "", _optional_pattern(r"xox[a-z]-[A-Za-z0-9-]+"),
        "a bot token starting xoxb- (empty: bot mode off)", secret=True),
    # The trading system's API keys (unistack.keys): each provider's format is checked by
    # `keys verify`, which names the key; here only a value with no blank in it.
    Key("POLYGON_API_KEY", "", _optional_pattern(r"\S+"), "a Polygon.io API key",
        secret=True),
    Key("UNUSUAL_WHALES_API_KEY", "", _optional_pattern(r"\S+"),
        "an Unusual Whales API token", secret=True),
    Key("ALPACA_API_KEY_ID", "", _optional_pattern(r"\S+"), "an Alpaca API key id",
        secret=True),
    Key("ALPACA_API_SECRET_KEY", "", _optional_pattern(r"\S+"), "an Alpaca API secret key",
        secret=True),
    Key("POLYGON_BASE_URL", "https://api.polygon.io", _pattern(r"https?://\S+"),
        "an http(s) URL"),
    Key("UNUSUAL_WHALES_BASE_URL", "https://api.unusualwhales.com", _pattern(r"https?://\S+"),
        "an http(s) URL"),
    Key("ALPACA_BASE_URL", "https://paper-api.alpaca.markets", _pattern(r"https?://\S+"),
        "an http(s) URL (paper: https://paper-api.alpaca.markets, live: "
        "https://api.alpaca.markets)"),
    Key("KEYS_VERIFY_TIMEOUT", "5", _positive_float, "seconds > 0"),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
PORT_KEYS = tuple(key.name for key in KEYS if key.name.endswith("_PORT"))
SECRET_KEYS = tuple(key.name for key in KEYS if key.secret)
GENERATED_KEYS = tuple(key.name for key in KEYS if key.generated)
