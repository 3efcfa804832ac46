"""Settings: the only reader of os.environ, config.env and .env.

Precedence, lowest first: defaults in code < config.env < .env < process environment.
Everything else in unistack receives the frozen `Settings` this module returns.
It owns loading and validation; the keys and how each value parses are configkeys',
masking secrets is redaction's, and generating secrets is credentials'.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from unistack import envfile
from unistack.configkeys import (
    KEYS,
    KEYS_BY_NAME,
    PORT_KEYS,
    PROBED_SERVICES,
    SECRET_KEYS,
    Key,
    parse_duration,
    parse_interval,
)
from unistack.redaction import redact

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# sun_path in struct sockaddr_un holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class ConfigError(Exception):
    """A configuration value is invalid; the message names the key, the value and what fits."""


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
    if key.parse is parse_duration or (key.parse is parse_interval and value):
        return _seconds(value)
    return "0" if key.parse is parse_interval else str(value)


def _seconds(value: float) -> str:
    """Seconds as parse_duration reads them: no exponent (2592000s, not 2.592e+06s)."""
    return f"{value:.0f}s" if float(value).is_integer() else f"{value}s"


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
        f"environment variable {name} is not a unistack key{envfile.nearest(name, _KNOWN)};"
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
    return replace(settings, warnings=environment_warnings(raw_env),
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
