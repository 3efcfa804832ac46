"""The backups in BACKUP_DIR and what is known of each, from the files beside it.

A backup is NAME (the archive, `unistack-<UTC stamp>[-tag].tar.zst`, `.age` appended
when encrypted), NAME.sha256 (the whole archive's sha256, `sha256sum -c` format, written
before the archive is renamed into place: an archive without it is not complete) and
NAME.json (what the last verification found). NAME.partial is a backup being written,
or one whose writer died.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unistack.runtime import write_atomic

_NAME = re.compile(r"^unistack-(\d{8}T\d{6})(\d{6})?Z(?:-([a-z0-9-]+))?\.tar\.zst(\.age)?$")
VERIFIED, UNVERIFIED, FAILED, PARTIAL, SEALED = (
    "verified", "unverified", "failed", "partial", "sealed")


def archive_name(ts: float, tag: str = "", encrypted: bool = False) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts)) + f"{int(ts % 1 * 1e6):06d}Z"
    return f"unistack-{stamp}{'-' + tag if tag else ''}.tar.zst{'.age' if encrypted else ''}"


def stamp_of(name: str) -> float | None:
    """The UTC time in an archive's name, or None if the name is not one of ours."""
    found = _NAME.match(name)
    if not found:
        return None
    try:
        whole = calendar.timegm(time.strptime(found.group(1), "%Y%m%dT%H%M%S"))
    except ValueError:  # shaped like ours, but no real date (month 13): not ours
        return None
    return whole + int(found.group(2) or 0) / 1e6


@dataclass
class Backup:
    name: str
    path: Path
    ts: float
    size: int
    state: str
    sha256: str = ""
    verified_at: float | None = None
    keys: int | None = None
    encrypted: bool = False
    tag: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["path"] = str(self.path)
        return record


def sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def read_sha256(path: Path) -> str:
    """The recorded sha256 of the archive at PATH ("" when there is none)."""
    try:
        text = sidecar(path, ".sha256").read_text()
    except OSError:
        return ""
    digest = text.split(" ", 1)[0].strip()
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else ""


def write_sha256(path: Path, digest: str) -> None:
    write_atomic(sidecar(path, ".sha256"), f"{digest}  {path.name}\n", 0o600)


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(sidecar(path, ".json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    write_atomic(sidecar(path, ".json"), json.dumps(state, indent=2) + "\n", 0o600)


def entry(path: Path) -> Backup | None:
    """What is known of the archive at PATH (None: not a backup of ours)."""
    partial = path.name.endswith(".partial")
    name = path.name.removesuffix(".partial")
    ts = stamp_of(name)
    found = _NAME.match(name)
    if ts is None or found is None:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    digest, state = read_sha256(path), read_state(path)
    record = Backup(name, path, ts, size, PARTIAL, digest, encrypted=bool(found.group(4)),
                    tag=found.group(3) or "")
    if partial or not digest:
        record.detail = "incomplete: its writer stopped before the end"
        return record
    record.state = state.get("state") or UNVERIFIED
    record.verified_at, record.keys = state.get("verified_at"), state.get("keys")
    record.detail = str(state.get("detail", ""))
    return record


def scan(directory: Path) -> list[Backup]:
    """Every backup in DIRECTORY, newest first (partial ones included)."""
    try:
        names = os.listdir(directory)
    except OSError:  # missing, or not a directory: the next backup says why
        return []
    found = [entry(directory / name) for name in names
             if name.endswith((".tar.zst", ".tar.zst.age", ".partial"))]
    return sorted((b for b in found if b is not None), key=lambda b: (b.ts, b.name),
                  reverse=True)


def orphans(directory: Path) -> list[Path]:
    """Sidecars whose archive is gone (a prune or a writer that died between files)."""
    try:
        names = set(os.listdir(directory))
    except OSError:
        return []
    return [directory / n for n in sorted(names) if n.endswith((".sha256", ".json"))
            and n.rsplit(".", 1)[0] not in names and stamp_of(n.rsplit(".", 1)[0])]


def newest_verified(backups: list[Backup]) -> Backup | None:
    return next((b for b in backups if b.state == VERIFIED), None)
