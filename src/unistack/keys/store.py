"""`.env` as the keys' home: values shown masked, replaced atomically (readers, and a
crash at any point, see the old file or the new one, never half of either), the previous
file kept as `.env.bak`, both 0600. Under the home's control lock, so that `start`
appending generated secrets and an update never interleave."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from unistack import envfile
from unistack.lock import control_lock
from unistack.runtime import fsync_path, write_atomic

Report = Callable[[str], None]
_BARE = re.compile(r"[A-Za-z0-9_./+:@=,-]+")


class BadValue(ValueError):
    """A value that cannot be written: the message names the key, never the value."""


def masked(value: str) -> str:
    """How a key is shown: its last 4 characters (as `redact` shows every secret), or
    only its length when it is too short to show any of it."""
    if not value:
        return "(not set)"
    return f"****{value[-4:]}" if len(value) >= 8 else f"(set, {len(value)} characters)"


def backup_path(env_file: Path) -> Path:
    return env_file.with_name(env_file.name + ".bak")


def _line(key: str, value: str) -> str:
    if not value or any(c in value for c in "\r\n\0") or value != value.strip():
        raise BadValue(f"{key} (value hidden, {len(value)} characters) is empty, spans lines "
                       "or has blanks at its ends: expected one line")
    if _BARE.fullmatch(value):
        return f"{key}={value}\n"
    return '{}="{}"\n'.format(key, value.replace("\\", "\\\\").replace('"', '\\"'))


def replaced(text: str, updates: Mapping[str, str], name: str) -> str:
    """TEXT (a .env) with each key of UPDATES set: its assignment line replaced where it
    is (every one, if it is there twice), else appended; every other line as it was."""
    envfile.parse(text, name)  # a broken file is refused, naming file:line, not rewritten
    lines, seen = text.splitlines(keepends=True), set()
    for number, line in enumerate(lines):
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match and match.group(1) in updates:
            lines[number] = _line(match.group(1), updates[match.group(1)])
            seen.add(match.group(1))
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [_line(key, value) for key, value in updates.items() if key not in seen]
    return "".join(lines)


def update(home: Path, env_file: Path, updates: Mapping[str, str], report: Report) -> Path:
    """Set UPDATES in ENV_FILE (created 0600 if absent); the previous file, if any, is kept
    as ENV_FILE.bak (0600). Returns ENV_FILE."""
    with control_lock(home, "keys update", True, report):
        _clear_leftovers(env_file)
        old = env_file.read_text() if env_file.is_file() else ""
        new = replaced(old, updates, str(env_file))
        if env_file.is_file():
            write_atomic(backup_path(env_file), old, 0o600)
        write_atomic(env_file, new, 0o600)
        fsync_path(env_file.parent)  # the rename is durable
    return env_file


def _clear_leftovers(env_file: Path) -> None:
    """Temporary files of an update killed before its rename (write_atomic's names)."""
    for name in (env_file.name, backup_path(env_file).name):
        for left in env_file.parent.glob(f".{name}.*"):
            left.unlink(missing_ok=True)


def values(env_file: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """KEYS' values in ENV_FILE ("" for each that is not there)."""
    found = {item.key: item.value for item in envfile.read(env_file)}
    return {key: found.get(key, "") for key in keys}
