"""The secrets unistack generates itself (`REDIS_PASSWORD`, `UNISTACK_OPERATOR_TOKEN`):
created on the first `start` into UNISTACK_HOME/.env (mode 0600), picked up again when
another process wrote them first, and where every secret that is set came from, said
without its value. Loading the settings stays config's: this module appends the
generated secrets to .env and reads back only those.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from typing import Any

from unistack import envfile
from unistack.config import Settings
from unistack.configkeys import GENERATED_KEYS, SECRET_KEYS


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
