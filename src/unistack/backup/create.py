"""Taking a backup: a fresh Redis snapshot, the models, the market data and config.env
(and .env with --include-secrets, then encrypted) into one archive in BACKUP_DIR.

Order, so that a crash at any point leaves either the last good backups or a new whole
one: data, then the manifest inside the archive, written to NAME.partial and fsynced;
NAME.sha256 beside it; then the rename to NAME (the commit) and the directory's fsync;
then verification. One backup, prune or restore at a time (the backup lock, exit 3).
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from unistack.backup import archive, catalog, journal, redisdata, verify
from unistack.backup.progress import Meter
from unistack.config import Settings
from unistack.lock import control_lock
from unistack.runtime import fsync_path

Report = Callable[[str], None]
_RESERVE = 64 << 20  # bytes left free beyond the archive's bound


class BackupError(Exception):
    """The backup could not be taken; the message says why and what to do."""


class NoSpace(BackupError):
    """BACKUP_DIR has too little free space (before starting, or it filled up)."""


class Taken(NamedTuple):
    backup: catalog.Backup
    manifest: dict[str, Any]
    seconds: float  # snapshot + archive + hashes + manifest, without verification
    verification: verify.Verification | None


@contextmanager
def backup_lock(settings: Settings, command: str, report: Report) -> Iterator[None]:
    """The backup lock, never waited for: a second backup or restore fails fast (Busy).
    Whoever holds it first clears what a holder killed by SIGKILL left behind."""
    with control_lock(settings.unistack_home, command, False, report, name="backup"):
        _clear_leftovers(settings, report)
        yield


def _clear_leftovers(settings: Settings, report: Report) -> None:
    """Staging directories (var/restore/) and snapshot links of dead holders."""
    for path in sorted((settings.var / "restore").glob("*")):
        report(f"removing {path}, left by a verify or restore that did not finish")
        shutil.rmtree(path, ignore_errors=True)
    for path in settings.redis_data_dir.glob(".backup-*.rdb"):
        path.unlink(missing_ok=True)


def take(settings: Settings, report: Report, meter: Meter, *, include_secrets: bool = False,
         tag: str = "", identities: list[Any] | None = None, locked: bool = False
         ) -> Taken:
    """Take one backup and verify it (an encrypted one only with IDENTITIES)."""
    if locked:
        return _take(settings, report, meter, include_secrets=include_secrets, tag=tag,
                     identities=identities)
    with backup_lock(settings, "backup", report):
        return _take(settings, report, meter, include_secrets=include_secrets, tag=tag,
                     identities=identities)


def _take(settings: Settings, report: Report, meter: Meter, *, include_secrets: bool,
          tag: str, identities: list[Any] | None) -> Taken:
    recipients = _recipients(settings) if include_secrets else None
    journal.recover(settings, report)  # never archive a half-restored home
    directory = settings.backups_dir
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is not a directory" if directory.exists() else exc.strerror or str(exc)
        raise BackupError(f"BACKUP_DIR {directory} cannot be used: {why}") from None
    _remove_partials(directory, report)
    begun = time.monotonic()
    link = settings.redis_data_dir / f".backup-{os.getpid()}.rdb"
    check: subprocess.Popen[str] | None = None
    try:
        report("snapshot: BGSAVE on the live Redis ...")
        snap = redisdata.snapshot(settings, link)
        check = redisdata.check_rdb(link)
        entries = _entries(settings, link, include_secrets)
        _check_space(directory, entries)
        name = catalog.archive_name(time.time(), tag, encrypted=bool(recipients))
        written = _write(directory / name, entries, _manifest(settings, snap, check,
                                                             include_secrets), recipients,
                         meter)
    finally:
        link.unlink(missing_ok=True)
        if check is not None and check.poll() is None:  # the archive failed before it ended
            check.kill()
            check.wait()
    seconds = time.monotonic() - begun
    path = directory / name
    keys = written.manifest["redis"]["keys"]
    catalog.write_state(path, {"state": catalog.UNVERIFIED, "keys": keys})
    report(f"archived {name}: {written.size / 1e6:.1f} MB, {keys} keys, in {seconds:.1f} s")
    verification = None
    if not recipients or identities:
        verification = verify.verify(settings, path, meter, report, identities=identities)
    else:
        catalog.write_state(path, {"state": catalog.SEALED, "keys": keys, "detail":
                                   "encrypted: verified with --identity only"})
    found = catalog.entry(path)
    assert found is not None
    return Taken(found, written.manifest, seconds, verification)


def _recipients(settings: Settings) -> list[Any]:
    if not settings.backup_recipient:
        raise BackupError("--include-secrets needs BACKUP_RECIPIENT (an age recipient, "
                          "age1...) in config.env: an archive holding .env is encrypted "
                          "to it; keep its identity off this machine")
    from pyrage import x25519  # noqa: PLC0415 -- only archives with secrets need it

    return [x25519.Recipient.from_str(settings.backup_recipient)]


def _remove_partials(directory: Path, report: Report) -> None:
    """Under the backup lock nobody writes: a .partial is a dead writer's leftover."""
    for path in directory.glob("*.partial"):
        report(f"removing {path.name}, left by a backup that did not finish")
        path.unlink(missing_ok=True)


def _entries(settings: Settings, rdb: Path, include_secrets: bool) -> list[archive.Entry]:
    entries = [archive.Entry("redis/dump.rdb", rdb)]
    for top, root in (("models", settings.models_dir), ("market", settings.market_dir)):
        entries += [archive.Entry(f"{top}/{path.relative_to(root).as_posix()}", path)
                    for path in sorted(root.rglob("*")) if path.is_file()
                    and not path.is_symlink()]
    config = settings.root / "config.env"
    if config.is_file():
        entries.append(archive.Entry("config/config.env", config))
    if include_secrets and settings.env_file.is_file():
        entries.append(archive.Entry("secrets/.env", settings.env_file))
    return entries


def _check_space(directory: Path, entries: list[archive.Entry]) -> None:
    """The archive is at most about its input (zstd never grows data much): want that."""
    need = sum(entry.source.stat().st_size for entry in entries) + _RESERVE
    free = shutil.disk_usage(directory).free
    if free < need:
        raise NoSpace(f"{directory} has {free / 1e6:.0f} MB free; this backup needs up to "
                      f"{need / 1e6:.0f} MB (its data uncompressed, plus 64 MB). Free space, "
                      "prune (`prune`), or set BACKUP_DIR to a larger disk")


def _manifest(settings: Settings, snap: redisdata.Snapshot, check: Any,
              include_secrets: bool) -> archive.Manifest:
    created = time.time()

    def build(files: list[dict[str, Any]]) -> dict[str, Any]:
        keys = redisdata.rdb_result(check, "the snapshot").keys
        rdb = next(f for f in files if f["path"] == "redis/dump.rdb")
        return {
            "created": created,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "host": socket.gethostname(),
            "versions": {"unistack": _version(), "redis": snap.redis_version,
                         "python": platform.python_version()},
            "compression": f"zstd level {archive.ZSTD_LEVEL}",
            "includes_secrets": include_secrets,
            "redis": {"keys": keys, "rdb_sha256": rdb["sha256"], "rdb_size": rdb["size"]},
            "home": str(settings.unistack_home),
        }

    return build


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("unistack")
    except PackageNotFoundError:
        return "unknown"


def _write(path: Path, entries: list[archive.Entry], manifest: archive.Manifest,
           recipients: list[Any] | None, meter: Meter) -> archive.Written:
    partial = path.with_name(path.name + ".partial")
    meter.phase("archive", sum(entry.source.stat().st_size for entry in entries))
    try:
        written = archive.write(partial, entries, manifest, recipients, meter)
        meter.close()
        catalog.write_sha256(path, written.sha256)
        os.replace(partial, path)  # the commit
        fsync_path(path.parent)
    except OSError as exc:
        meter.close()
        partial.unlink(missing_ok=True)
        catalog.sidecar(path, ".sha256").unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"{path.parent} filled up while writing {path.name}; nothing "
                          "was kept of it. Free space or prune, then try again") from None
        raise BackupError(f"writing {path} failed: {exc}") from None
    except BaseException:
        meter.close()
        partial.unlink(missing_ok=True)
        raise
    return written
