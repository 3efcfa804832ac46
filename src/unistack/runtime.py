"""Runtime files of one stack under var/: directories, Redis's secret config, Prometheus's
config and its scrape targets, all derived from Settings and the service registry.

Every write is atomic (temp file, fsync, rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from unistack.config import ConfigError, Settings
from unistack.services import REGISTRY, ServiceSpec


def state_dirs(settings: Settings) -> dict[Path, int]:
    """Every state directory with its mode; run/ holds secrets and the control socket."""
    var = settings.var
    return {
        var: 0o755,
        settings.run_dir: 0o700,
        settings.run_dir / "prometheus": 0o700,
        settings.run_dir / "prometheus" / "targets": 0o700,
        settings.log_dir: 0o750,
        settings.log_dir / "incidents": 0o700,
        settings.redis_data_dir: 0o700,
        settings.prometheus_data_dir: 0o700,
        settings.market_dir: 0o750,
        settings.alerts_db.parent: 0o700,
        settings.models_dir: 0o750,
        var / "backups": 0o700,  # BACKUP_DIR's default (a BACKUP_DIR elsewhere is the operator's)
    }


def prepare_dirs(settings: Settings) -> None:
    for path, mode in state_dirs(settings).items():
        path.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(path, mode)
        except PermissionError:
            # A volume's root (a Kubernetes PVC at var/models) may be root's and writable
            # through the pod's fsGroup: its mode is the storage's to set.
            if not os.path.ismount(path):
                raise


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write TEXT to PATH with MODE so that readers see the old file or the new one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """fsync one file or directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_runtime_secrets(settings: Settings) -> Settings:
    """Write the secrets that came from the environment or a `<KEY>_FILE` (not from
    .env) to var/run/secrets.env, 0600, where the services read them; remove it when
    there are none. The file is `start`'s output, never its input: what an earlier
    start wrote there and this one's environment lacks is unset in the Settings returned."""
    stale = {key for key, where in settings.secret_sources if where == "var/run/secrets.env"}
    cleared: dict[str, Any] = {key.lower(): "" for key in stale}
    settings = replace(settings, **cleared,
                       secret_sources=tuple(item for item in settings.secret_sources
                                            if item[0] not in stale))
    outside = [key for key, where in settings.secret_sources
               if where.startswith(("the environment", "the file"))]
    path = settings.runtime_secrets
    if not outside:
        path.unlink(missing_ok=True)
        return settings
    lines = []
    for key in outside:
        value = str(getattr(settings, key.lower()))
        if "\n" in value or "\r" in value:
            raise ConfigError(f"{key} (value hidden) holds a line break: expected one line")
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{quoted}"\n')
    write_atomic(path, "# Written by `start`: secrets from its environment (0600).\n"
                 + "".join(lines), 0o600)
    return settings


def redis_quote(value: object) -> str:
    """A Redis config argument in double quotes, so spaces and quotes survive."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def redis_conf(settings: Settings) -> str:
    lines = [
        "# Written by the unistack hub at start; holds the password: mode 0600.",
        f"include {redis_quote(settings.root / 'redis.conf')}",
        f"bind {settings.unistack_bind_address}",
        f"port {settings.redis_port}",
        f"dir {redis_quote(settings.redis_data_dir)}",
        f"requirepass {redis_quote(settings.redis_password)}",
        f"maxmemory {settings.redis_maxmemory}",
    ]
    return "\n".join(lines) + "\n"


def _rule_files(settings: Settings, patterns: list[str]) -> list[str]:
    """The template's rule files as absolute paths into the checkout: Prometheus resolves a
    relative path against the rendered config's directory, where no rules are. Pointing at
    the checkout (rather than copying) keeps one file, the one promtool checks and tests."""
    return [str(settings.root / pattern) for pattern in patterns]


def prometheus_conf(settings: Settings) -> str:
    config = yaml.safe_load((settings.root / "prometheus.yml").read_text())
    config.setdefault("global", {})
    config["global"]["scrape_interval"] = settings.prometheus_scrape_interval
    config["global"]["evaluation_interval"] = settings.prometheus_scrape_interval
    if config.get("rule_files"):
        config["rule_files"] = _rule_files(settings, config["rule_files"])
    header = "# Written by the unistack hub from prometheus.yml and config.env.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def scrape_targets(settings: Settings, registry: tuple[ServiceSpec, ...] = REGISTRY) -> str:
    """file_sd JSON: one target per registered service that exposes metrics."""
    groups = [
        {
            "targets": [f"{settings.host(spec.port_key)}:{spec.port(settings)}"],
            "labels": {"service": spec.name, "group": spec.group,
                       "__metrics_path__": spec.metrics_path},
        }
        for spec in registry
        if spec.metrics_path
    ]
    return json.dumps(groups, indent=2) + "\n"


def expected(settings: Settings) -> list[tuple[Path, str]]:
    """Every runtime file with the text SETTINGS render it to."""
    run = settings.run_dir
    return [(run / "redis.conf", redis_conf(settings)),
            (run / "prometheus" / "prometheus.yml", prometheus_conf(settings)),
            (run / "prometheus" / "targets" / "services.json", scrape_targets(settings))]


def rendered(settings: Settings) -> bool:
    """Every runtime file is there (written by an earlier hub)."""
    return all(path.is_file() for path, _ in expected(settings))


def render(settings: Settings) -> None:
    """Create the state directories and write every runtime file for SETTINGS."""
    prepare_dirs(settings)
    for path, text in expected(settings):
        write_atomic(path, text)
