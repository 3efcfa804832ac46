"""Production readiness (`verify_production_readiness.sh`): before a deploy, the checkout
and the home as a whole — required files, a valid configuration, strong secrets, no
drift between config.env and the container files, `.env` 0600, the linters and promtool
passing, the API keys set and well-formed, a recent verified backup, Slack, a GPU.
Findings as diagnose makes them."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from unistack.config import Settings
from unistack.diagnose import drift, files
from unistack.diagnose.findings import Finding, fail, ok, warn
from unistack.keys import providers

REQUIRED = ("config.env", "supervisord.conf", "redis.conf", "prometheus.yml",
            "alert_rules.yml", "Dockerfile.unified", "docker-compose.unified.yml",
            "deploy/schemas/compose-spec.json")
_WEAK = re.compile(r"(?i)^(changeme|change-me|password|secret|admin|redis|unistack|test|"
                   r"default|example)[0-9]*$")
_MIN_SECRET = 32


def required_files(root: Path) -> Finding:
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        return fail("ready.files", "required files are missing", ", ".join(missing),
                    remedy="restore them from the repository")
    return ok("ready.files", "every required file is present")


def secrets(settings: Settings) -> list[Finding]:
    found = []
    for key in ("REDIS_PASSWORD", "UNISTACK_OPERATOR_TOKEN"):
        value = str(settings.value(key))
        if not value:
            found.append(fail(f"ready.secret:{key}", f"{key} is not set", "(not set)",
                              remedy="scripts/manage_production.sh start (generates it)"))
        elif len(value) < _MIN_SECRET or _WEAK.match(value):
            found.append(fail(f"ready.secret:{key}", f"{key} is weak",
                              f"(value hidden) {len(value)} characters, or a known default",
                              remedy=f"delete {key} from .env; start generates a strong one"))
    return found or [ok("ready.secrets", "the generated secrets are set and strong")]


def compose_schema(root: Path) -> Finding:
    """docker-compose.unified.yml against the Compose Specification's schema (vendored in
    deploy/schemas, so the check runs offline)."""
    try:
        jsonschema = importlib.import_module("jsonschema")  # a dev extra, as the linters
    except ImportError:
        return warn("ready.compose-schema", "jsonschema is not installed: the compose file "
                    "is not checked", "import jsonschema: not found",
                    remedy="scripts/bootstrap.sh --extras dev (the linters)")
    schema = json.loads((root / "deploy" / "schemas" / "compose-spec.json").read_text())
    document = yaml.safe_load((root / "docker-compose.unified.yml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
              for error in sorted(validator.iter_errors(document), key=str)]
    if errors:
        return fail("ready.compose-schema", "docker-compose.unified.yml does not follow the "
                    "Compose Specification", "\n".join(errors[:12]),
                    remedy="correct the named fields (https://compose-spec.io)")
    return ok("ready.compose-schema", "docker-compose.unified.yml follows the Compose "
              "Specification")


def tool(name: str, argv: list[str], root: Path, what: str) -> Finding:
    """A linter's verdict; a tool that is not installed is a warning saying how."""
    found = shutil.which(argv[0]) or shutil.which(argv[0], path=str(Path(sys.executable).parent))
    if found is None:
        return warn(f"ready.{name}", f"{argv[0]} is not installed: {what} not checked",
                    f"{argv[0]}: not on PATH",
                    remedy="scripts/bootstrap.sh --extras dev (the linters)")
    done = subprocess.run([found, *argv[1:]], cwd=root, capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-12:]
        return fail(f"ready.{name}", f"{what} fails {argv[0]}", "\n".join(output),
                    remedy=f"cd {root} && {' '.join(argv)}")
    return ok(f"ready.{name}", f"{what} passes {argv[0]}")


def linters(root: Path) -> list[Finding]:
    scripts = sorted(str(p.relative_to(root)) for p in (root / "scripts").glob("*.sh"))
    return [tool("hadolint", ["hadolint", "Dockerfile.unified"], root, "Dockerfile.unified"),
            tool("shellcheck", ["shellcheck", *scripts], root, "scripts/*.sh"),
            tool("promtool-config", ["promtool", "check", "config", "prometheus.yml"], root,
                 "prometheus.yml"),
            tool("promtool-rules", ["promtool", "check", "rules", "alert_rules.yml"], root,
                 "alert_rules.yml")]


def api_keys(settings: Settings) -> list[Finding]:
    """Each provider's keys set and well-formed (no request: `keys verify` asks them)."""
    found = []
    for provider in providers.PROVIDERS:
        values = providers.values_of(settings, provider)
        wrong = providers.check_format(provider, values,
                                       str(settings.value(provider.base_key)))
        if wrong is not None:
            found.append(fail(f"ready.keys:{provider.name}", f"{provider.title} API keys are "
                              f"{wrong.status}", wrong.detail,
                              remedy="scripts/update_api_keys.sh, then "
                              "scripts/verify_api_keys.py"))
    return found or [ok("ready.keys", "every API key is set and well-formed (verify them: "
                        "scripts/verify_api_keys.py)")]


def operations(settings: Settings, gpu_usable: Callable[[], bool]) -> list[Finding]:
    found = [files.env_file(settings), *api_keys(settings)]
    if not settings.backup_interval:
        found.append(warn("ready.backup-schedule", "scheduled backups are off",
                          "BACKUP_INTERVAL=0", remedy="set BACKUP_INTERVAL (e.g. 1d)"))
    found.append(files.backups(settings))
    if settings.slack_mode == "off":
        found.append(warn("ready.slack", "Slack alerts are off", "SLACK_WEBHOOK_URL and "
                          "SLACK_BOT_TOKEN not set", remedy="set one in .env (README)"))
    if not gpu_usable():
        found.append(warn("ready.gpu", "no usable GPU: the engine serves on the CPU",
                          "scripts/manage_production.sh ml doctor says why"))
    return found


def readiness(settings: Settings, gpu_usable: Callable[[], bool]) -> list[Finding]:
    root = settings.root
    found = [required_files(root), *files.configuration(settings), *secrets(settings)]
    if found[0].status == "ok":
        found += drift.container_files(root) + drift.supervisord_conf(settings)
        found += [compose_schema(root), *linters(root)]
    found += operations(settings, gpu_usable)
    return [f._replace(evidence=settings.redact(f.evidence)) for f in found]
