"""Settings: the only reader of os.environ, config.env and .env.

Precedence, lowest first: defaults in code < config.env < .env < process environment.
Everything else in unistack receives the frozen `Settings` this module returns.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import stat
import tempfile
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from unistack import envfile

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# sun_path in struct sockaddr_un holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class ConfigError(Exception):
    """A configuration value is invalid; the message names the key, the value and what fits."""


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

def _interval(raw: str) -> float:
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
    Key("BACKUP_INTERVAL", "1d", _interval,
        "a duration like 6h or 1d, or 0 (no scheduled backups)"),
    *_keep_keys(),
    Key("BACKUP_RECIPIENT", "", _optional_pattern(r"age1[02-9ac-hj-np-z]{58}"),
        "an age recipient (age1..., 62 characters) that --include-secrets archives are "
        "encrypted to (empty: --include-secrets refused)"),
    *_probe_keys(),
    Key("START_TIMEOUT", "30", _positive_float, "seconds > 0"),
    Key("STOP_TIMEOUT", "11", _positive_float, "seconds > 0"),
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


class ProbeTiming(NamedTuple):
    """How often one probe runs, how long it may take, failures in a row that count."""

    interval: float
    timeout: float
    threshold: int


@dataclass(frozen=True)
class Settings:
    """Every port, path, interval and threshold of one stack, validated."""

    unistack_mode: str
    unistack_home: Path
    unistack_bind_address: str
    redis_host: str
    prometheus_host: str
    hub_host: str
    ml_engine_host: str
    dashboard_host: str
    redis_port: int
    prometheus_port: int
    hub_port: int
    ml_engine_port: int
    dashboard_port: int
    redis_server_bin: str
    redis_maxmemory: str
    prometheus_bin: str
    prometheus_scrape_interval: str
    prometheus_retention_time: str
    prometheus_retention_size: str
    hub_loop_interval: float
    hub_stale_after: float
    service_ready_timeout: float
    restart_backoff_initial: float
    restart_backoff_max: float
    restart_backoff_jitter: float
    restart_stable_period: float
    flap_restarts: int
    flap_window: float
    incident_resolve_after: float
    loop_resolve_after: float
    incident_log_lines: int
    incident_max_age: float
    incident_max_files: int
    busy_grace: float
    heartbeat_url: str
    heartbeat_interval: float
    resource_interval: float
    cpu_warn_percent: float
    memory_warn_percent: float
    disk_free_warn_percent: float
    resource_hysteresis_percent: float
    events_stream_maxlen: int
    ml_engine_consumer: str
    ml_require_gpu: str
    ml_max_batch_rows: int
    ml_max_wait_us: int
    ml_claim_idle_ms: int
    ml_max_deliveries: int
    ml_reply_ttl: int
    ml_model_refresh_interval: float
    dashboard_workers: int
    dashboard_threads: int
    dashboard_control_interval: float
    backup_dir: str
    backup_interval: float
    backup_keep_last: int
    backup_keep_hourly: int
    backup_keep_daily: int
    backup_keep_weekly: int
    backup_keep_monthly: int
    backup_keep_yearly: int
    backup_recipient: str
    slack_api_url: str
    slack_channel_info: str
    slack_channel_warning: str
    slack_channel_critical: str
    slack_mention_critical: str
    slack_timeout: float
    alert_group_window: float
    alert_reminders: tuple[float, ...]
    alert_resolved_notice: str
    alert_channel_interval: float
    alert_retry_max: float
    alert_outbox_max: int
    alert_prometheus_poll: float
    start_timeout: float
    stop_timeout: float
    log_format: str
    log_level: str
    log_max_bytes: int
    log_backups: int
    redis_password: str
    unistack_operator_token: str
    slack_webhook_url: str
    slack_bot_token: str
    polygon_api_key: str
    unusual_whales_api_key: str
    alpaca_api_key_id: str
    alpaca_api_secret_key: str
    polygon_base_url: str
    unusual_whales_base_url: str
    alpaca_base_url: str
    keys_verify_timeout: float
    probes: Mapping[str, ProbeTiming]
    root: Path = PROJECT_ROOT
    # What load_settings had to say: warnings (a variable that looks like a misspelt
    # key), and in lenient mode the errors it worked around with defaults.
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    # Where each secret that is set came from: (KEY, "the environment" / "the file PATH
    # (KEY_FILE)" / ".env" / "var/run/secrets.env").
    secret_sources: tuple[tuple[str, str], ...] = ()

    @property
    def var(self) -> Path:
        return self.unistack_home / "var"

    @property
    def run_dir(self) -> Path:
        return self.var / "run"

    @property
    def log_dir(self) -> Path:
        return self.var / "log"

    @property
    def data_dir(self) -> Path:
        return self.var / "data"

    @property
    def redis_data_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def prometheus_data_dir(self) -> Path:
        return self.data_dir / "prometheus"

    @property
    def market_dir(self) -> Path:
        return self.data_dir / "market"

    @property
    def models_dir(self) -> Path:
        return self.var / "models"

    @property
    def backups_dir(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else self.var / "backups"

    @property
    def alerts_db(self) -> Path:
        """The alert outbox and incident state (SQLite: it must work while Redis is down)."""
        return self.data_dir / "alerts" / "outbox.sqlite"

    @property
    def slack_mode(self) -> str:
        """"bot" (chat.postMessage, threads), "webhook" (incoming webhook) or "off"."""
        if self.slack_bot_token:
            return "bot"
        return "webhook" if self.slack_webhook_url else "off"

    @property
    def env_file(self) -> Path:
        return self.unistack_home / ".env"

    @property
    def runtime_secrets(self) -> Path:
        """Secrets `start` found in its environment, for the services (mode 0600):
        supervisord's environment and command lines never carry a secret."""
        return self.run_dir / "secrets.env"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def supervisord_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def in_pods(self) -> bool:
        """Kubernetes mode: each service in a pod of its own, restarted by Kubernetes."""
        return self.unistack_mode == "kubernetes"

    @property
    def hub_url(self) -> str:
        return f"http://{self.hub_host}:{self.hub_port}"

    def host(self, port_key: str) -> str:
        """Where clients reach the service listening on PORT_KEY (e.g. "REDIS_PORT")."""
        value: str = getattr(self, port_key.lower().removesuffix("_port") + "_host")
        return value

    def probe_timing(self, service: str, kind: str) -> ProbeTiming:
        """Timings of SERVICE's KIND ("liveness" or "readiness") probe."""
        return self.probes[f"{service}_{kind}".upper()]

    def port(self, key: str) -> int:
        """The port configured under KEY (e.g. "REDIS_PORT")."""
        value: int = getattr(self, key.lower())
        return value

    def value(self, key: str) -> Any:
        """The parsed value of configuration KEY, e.g. "REDIS_LIVENESS_TIMEOUT"."""
        prefix, _, field = key.rpartition("_")
        if prefix in self.probes:
            return getattr(self.probes[prefix], field.lower())
        return getattr(self, key.lower())

    def secret_values(self) -> tuple[str, ...]:
        return tuple(v for v in (getattr(self, k.lower()) for k in SECRET_KEYS) if v)

    def redact(self, text: str) -> str:
        return redact(text, self.secret_values())

    def to_env(self) -> dict[str, str]:
        """The non-secret settings as environment variables for child processes."""
        env = {key.name: _text_of(key, self.value(key.name)) for key in KEYS if not key.secret}
        env["UNISTACK_ROOT"] = str(self.root)
        return env


def _text_of(key: Key, value: Any) -> str:
    """A parsed value written back the way its key reads it."""
    if isinstance(value, tuple):
        return ",".join(map(_seconds, value))
    if key.parse is parse_duration or (key.parse is _interval and value):
        return _seconds(value)
    return "0" if key.parse is _interval else str(value)


def _seconds(value: float) -> str:
    """Seconds as parse_duration reads them: no exponent (2592000s, not 2.592e+06s)."""
    return f"{value:.0f}s" if float(value).is_integer() else f"{value}s"


_SECRET_PATTERNS = (
    re.compile(r"https://hooks\.slack\.com/services/\S+"),
    re.compile(r"xox[abpr]-[A-Za-z0-9-]+"),
)


def redact(text: str, values: Iterable[str]) -> str:
    """Mask each secret value in TEXT, keeping its last 4 characters as a fingerprint."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 8:
            text = text.replace(value, "****" + value[-4:])
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("****", text)
    return text


class _Problems:
    """Strict: the first problem raises ConfigError. Lenient: problems are collected and
    loading goes on with defaults, for the commands that must run on a broken
    configuration (stop, status, logs; the diagnose scripts)."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.errors: list[str] = []

    def __call__(self, message: str) -> None:
        if not self.lenient:
            raise ConfigError(message)
        self.errors.append(message)


_KNOWN = frozenset(KEYS_BY_NAME) | {f"{name}_FILE" for name in KEYS_BY_NAME}


def _read_file(path: Path, problems: _Problems) -> dict[str, str]:
    """PATH's assignments of known keys, `<KEY>_FILE` resolved; every other line is a problem."""
    try:
        assignments = envfile.read(path)
    except envfile.EnvFileError as exc:
        problems(str(exc))
        return {}
    except OSError as exc:
        problems(f"{path} is unreadable: {exc.strerror or exc}")
        return {}
    values: dict[str, str] = {}
    for item in assignments:
        if item.key not in _KNOWN:
            hint = envfile.nearest(item.key, KEYS_BY_NAME)
            problems(f"{item.where}: unknown key {item.key}{hint}; every key is listed in "
                     "docs/configuration.md")
        else:
            values[item.key] = item.value
    return _resolve_files(values, problems)


def _resolve_files(layer: Mapping[str, str], problems: _Problems) -> dict[str, str]:
    """`<KEY>_FILE=path` sets KEY to that file's content (Docker and Kubernetes secrets)."""
    values = {k: v for k, v in layer.items() if not k.endswith("_FILE") or k in KEYS_BY_NAME}
    for name in KEYS_BY_NAME:
        source = layer.get(f"{name}_FILE")
        if source:
            try:
                values[name] = Path(source).read_text().strip()
            except OSError as exc:
                problems(f"{name}_FILE={source} is unreadable: {exc.strerror or exc}")
    return values


# Variables of the stack's own that are not configuration keys.
STACK_VARIABLES = frozenset({"UNISTACK_ROOT", "UNISTACK_PYTHON", "UNISTACK_SOAK_SECONDS",
                             "UNISTACK_POLICY_RC_D", "UNISTACK_SYSTEMD_DIR"})
_PREFIXES = tuple(sorted({name.split("_", 1)[0] + "_" for name in KEYS_BY_NAME}))


def environment_warnings(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Variables that start like a key but are none (`REDIS_PROT`): warned, never fatal,
    since the environment also holds other programs' variables."""
    return tuple(
        f"environment variable {name} is not a unistack key{envfile.nearest(name, KEYS_BY_NAME)};"
        " it is ignored"
        for name in sorted(environ)
        if name.startswith(_PREFIXES) and name not in _KNOWN and name not in STACK_VARIABLES)


def _parse(raw: Mapping[str, str], root: Path, problems: _Problems) -> Settings:
    values: dict[str, Any] = {}
    for key in KEYS:
        text = raw[key.name]
        try:
            values[key.name.lower()] = key.parse(text)
        except (ValueError, TypeError):
            shown = f" (value hidden, {len(text)} characters)" if key.secret else f"={text!r}"
            problems(f"{key.name}{shown} is invalid: expected {key.expected}.")
            values[key.name.lower()] = key.parse(key.default)
    values["unistack_home"] = Path(values["unistack_home"]).expanduser().resolve()
    probes = {}
    for service in PROBED_SERVICES:
        interval = values.pop(f"{service}_readiness_interval".lower())
        for kind in ("LIVENESS", "READINESS"):
            prefix = f"{service}_{kind}"
            probes[prefix] = ProbeTiming(interval, *(values.pop(f"{prefix}_{field}".lower())
                                                     for field in ("TIMEOUT", "THRESHOLD")))
    return Settings(root=root, probes=probes, **values)


_MIN_PASSWORD = 16


def _validate(settings: Settings, problems: _Problems) -> None:
    seen: dict[int, str] = {}
    for key in PORT_KEYS:
        port = settings.port(key)
        if port in seen:
            problems(f"{key}={port} is invalid: port {port} is already used by {seen[port]}; "
                     "expected a distinct port for every service.")
        seen[port] = key
    _validate_home(settings.unistack_home, settings.supervisor_socket, problems)
    bind = ipaddress.IPv4Address(settings.unistack_bind_address)
    if not bind.is_loopback and settings.unistack_mode == "native":
        problems(f"UNISTACK_BIND_ADDRESS={settings.unistack_bind_address} is invalid with "
                 "UNISTACK_MODE=native: expected a loopback address such as 127.0.0.1 (every "
                 "listener stays on this host); other addresses are for a container's or a "
                 "pod's own network namespace (UNISTACK_MODE=docker or kubernetes).")
    if settings.restart_backoff_initial > settings.restart_backoff_max:
        problems(f"RESTART_BACKOFF_INITIAL={settings.restart_backoff_initial:g} is above "
                 f"RESTART_BACKOFF_MAX={settings.restart_backoff_max:g}: expected the first "
                 "delay to be at most the cap.")
    if settings.redis_password and len(settings.redis_password) < _MIN_PASSWORD:
        problems(f"REDIS_PASSWORD (value hidden, {len(settings.redis_password)} characters) "
                 f"is too short: expected at least {_MIN_PASSWORD} characters. Set a longer one "
                 "where it comes from (the file REDIS_PASSWORD_FILE names, the environment), or "
                 f"delete its line from {settings.env_file} and a strong one is generated at "
                 "the next start.")


def _validate_home(home: Path, socket_path: Path, problems: _Problems) -> None:
    if any(char in str(home) for char in '"\n\\'):
        problems(f"UNISTACK_HOME={str(home)!r} is invalid: expected a path without double "
                 "quotes, backslashes or newlines (they cannot be quoted in supervisord.conf).")
    if home.exists() and not home.is_dir():
        problems(f"UNISTACK_HOME={home} is not a directory: expected a directory (it is a "
                 "file); choose another path.")
    if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
        problems(f"UNISTACK_HOME={home} is invalid: the supervisord socket path "
                 f"{socket_path} is {len(str(socket_path).encode())} bytes; expected at most "
                 f"{_MAX_SOCKET_PATH} (a unix socket limit). Choose a shorter UNISTACK_HOME.")


def check_home_writable(settings: Settings) -> None:
    """Before `start` writes anything: UNISTACK_HOME can be created and written to."""
    home = settings.unistack_home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise ConfigError(f"UNISTACK_HOME={home} is unusable: {exc.strerror or exc}; expected "
                          "a directory this user can write (not a read-only filesystem).") \
            from None


def _check_env_file(path: Path, problems: _Problems) -> None:
    try:
        info = path.stat()
    except OSError:
        return
    if info.st_uid != os.geteuid():
        problems(f"{path} is owned by uid {info.st_uid}, not by the user running unistack "
                 f"(uid {os.geteuid()}); it holds secrets. Expected: `chown "
                 f"{os.geteuid()} {path}`.")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        problems(f"{path} is readable by group or others (mode {mode:04o}); it holds secrets. "
                 f"Expected mode 0600: run `chmod 600 {path}`.")


def load_settings(
    environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT, lenient: bool = False
) -> Settings:
    """Read defaults < ROOT/config.env < UNISTACK_HOME/.env < ENVIRON into validated Settings.

    Reads only; never writes. Strict (the default): raises ConfigError naming the first
    problem. LENIENT: works around every problem with the key's default and lists them
    in `Settings.errors`, so stop, status and logs still reach a stack whose
    configuration was broken after it started.
    """
    problems = _Problems(lenient)
    raw_env = dict(os.environ if environ is None else environ)
    process_env = _resolve_files(raw_env, problems)
    defaults = {key.name: key.default for key in KEYS}
    config_env = _read_file(root / "config.env", problems)
    home_raw = ChainMap(process_env, config_env, defaults)["UNISTACK_HOME"] or str(root)
    env_file = Path(home_raw).expanduser() / ".env"
    _check_env_file(env_file, problems)
    dot_env = _read_file(env_file, problems)
    leaked = sorted(k for k in SECRET_KEYS if config_env.get(k))
    if leaked:
        problems(f"{', '.join(leaked)} found in {root / 'config.env'}: secrets belong in "
                 f"{env_file} (mode 0600), never in config.env.")
    runtime = _runtime_secrets(Path(home_raw).expanduser(), problems)
    merged = ChainMap({"UNISTACK_HOME": home_raw}, process_env, dot_env, runtime, config_env,
                      defaults)
    settings = _parse({key.name: merged[key.name] for key in KEYS}, root, problems)
    _validate(settings, problems)
    sources = _secret_sources(merged, raw_env, process_env, dot_env)
    return replace(settings, warnings=environment_warnings(process_env),
                   errors=tuple(problems.errors), secret_sources=sources)


def _runtime_secrets(home: Path, problems: _Problems) -> dict[str, str]:
    """var/run/secrets.env: only secret keys count (below .env: an edited .env wins)."""
    path = home / "var" / "run" / "secrets.env"
    _check_env_file(path, problems)
    return {k: v for k, v in _read_file(path, problems).items() if k in SECRET_KEYS}


def _secret_sources(merged: Mapping[str, str], raw_env: Mapping[str, str],
                    process_env: Mapping[str, str], dot_env: Mapping[str, str]
                    ) -> tuple[tuple[str, str], ...]:
    sources = []
    for key in SECRET_KEYS:
        if not merged.get(key):
            continue
        if key in process_env:
            where = f"the file {raw_env[key + '_FILE']} ({key}_FILE)" \
                if raw_env.get(key + "_FILE") else "the environment"
        else:
            where = ".env" if key in dot_env else "var/run/secrets.env"
        sources.append((key, where))
    return tuple(sources)


def describe_secrets(settings: Settings) -> str:
    """Which secrets are set and where from, never their values."""
    found = dict(settings.secret_sources)
    return "; ".join(f"{key} from {found[key]}" if key in found else f"{key} not set"
                     for key in SECRET_KEYS)


def refresh_generated(settings: Settings) -> Settings:
    """SETTINGS with the generated secrets another process wrote to .env since SETTINGS
    were read (a second `start` that waited for the first one's lock)."""
    missing = [key for key in GENERATED_KEYS if not getattr(settings, key.lower())]
    if not missing or not settings.env_file.is_file():
        return settings
    try:
        values = {item.key: item.value for item in envfile.read(settings.env_file)}
    except (OSError, envfile.EnvFileError):
        return settings
    found: dict[str, Any] = {key.lower(): values[key] for key in missing if values.get(key)}
    return replace(settings, **found) if found else settings


def ensure_secrets(settings: Settings) -> Settings:
    """Generate missing secrets into UNISTACK_HOME/.env (created 0600); return updated Settings."""
    missing = [key for key in GENERATED_KEYS if not getattr(settings, key.lower())]
    if not missing:
        return settings
    generated = {key: secrets.token_urlsafe(32) for key in missing}
    path = settings.env_file
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{key}={value}\n" for key, value in generated.items())
    existing = path.read_text() if path.is_file() else ""
    if existing and not existing.endswith("\n"):
        lines = "\n" + lines
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(lines)
    changes: dict[str, Any] = {key.lower(): value for key, value in generated.items()}
    sources = settings.secret_sources + tuple((key, ".env (generated now)") for key in missing)
    return replace(settings, **changes, secret_sources=sources)
