"""Verifying a backup the way a restore would use it, not only that its bytes are intact:
the whole archive's sha256 against NAME.sha256, the stream decompressed to its end
(zstd's frame checksum), every member checked and every file's sha256 against the
manifest, redis-check-rdb, and a trial restore: a scratch redis-server on a free
loopback port loads the RDB, and its key count must equal the manifest's.

The result is written to NAME.json (`backups` shows it); a failed verification never
touches live data: everything happens in a fresh staging directory under var/restore/.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from unistack.backup import archive, catalog, redisdata
from unistack.backup.progress import Meter
from unistack.config import Settings
from unistack.configkeys import LOOPBACK

Report = Callable[[str], None]


class VerifyError(Exception):
    """The archive failed verification: corrupt, truncated, unsafe or not restorable."""


class Verification(NamedTuple):
    manifest: dict[str, Any]
    keys: int  # keys in the RDB per the trial load (loaded plus expired on loading)
    loaded: int
    seconds: float
    load_seconds: float  # the trial load alone: redis-server to loading:0


def staging_dir(settings: Settings, purpose: str) -> Path:
    """A fresh directory on the same file system as var/data (a restore renames from it)."""
    root = settings.var / "restore"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root / f"{purpose}-{os.getpid()}-{time.time_ns()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def verify(settings: Settings, path: Path, meter: Meter, report: Report, *,
           identities: list[Any] | None = None, staging: Path | None = None,
           aof: bool = False) -> Verification:
    """Verify the archive at PATH and record the verdict beside it. With STAGING, the
    checked files stay there (for a restore) and, with AOF, the trial Redis also writes
    the AOF directory the live Redis will start from."""
    keep = staging is not None
    staging = staging or staging_dir(settings, "verify")
    begun = time.monotonic()
    try:
        manifest = _unpack(path, identities, meter, staging)
        result = _trial(settings, staging, manifest, report, aof)
    except (archive.ArchiveError, redisdata.RedisDataError, VerifyError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if _archive_at_fault(path, exc):
            catalog.write_state(path, {"state": catalog.FAILED, "verified_at": time.time(),
                                       "detail": str(exc)})
        raise VerifyError(f"{path.name} failed verification: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not keep:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - begun
    catalog.write_state(path, {
        "state": catalog.VERIFIED, "verified_at": time.time(), "keys": result.keys,
        "seconds": round(seconds, 3),
        "detail": f"{result.keys} keys restored in a trial load, every file matches"})
    report(f"verified {path.name}: {result.keys} keys, in {seconds:.1f} s "
           f"(trial load {result.load_seconds:.1f} s)")
    return result._replace(seconds=seconds)


def _archive_at_fault(path: Path, exc: Exception) -> bool:
    """A missing or wrong identity says nothing against an intact archive (its sha256
    still matches): it stays as it was, never `failed`, which prune deletes."""
    if isinstance(exc, archive.NeedsIdentity):
        return False
    if isinstance(exc, archive.DecryptFailed):
        return archive.file_sha256(path) != catalog.read_sha256(path)
    return True


def _unpack(path: Path, identities: list[Any] | None, meter: Meter, staging: Path
            ) -> dict[str, Any]:
    recorded = catalog.read_sha256(path)
    if not recorded:
        raise VerifyError(f"{path.name}.sha256 is missing or unreadable: the archive's "
                          "whole sha256 cannot be checked (copy it along with the archive)")
    meter.phase("verify", path.stat().st_size)
    try:
        digest, manifest = archive.unpack(path, staging, identities, meter)
    finally:
        meter.close()
    if digest != recorded:
        raise VerifyError(f"its sha256 is {digest[:16]}…, but {path.name}.sha256 records "
                          f"{recorded[:16]}…: the file changed after it was written")
    return manifest


def _trial(settings: Settings, staging: Path, manifest: dict[str, Any], report: Report,
           aof: bool) -> Verification:
    """redis-check-rdb and the trial load side by side (two processes, two cores)."""
    rdb = staging / "redis" / "dump.rdb"
    expected = int(manifest.get("redis", {}).get("keys", -1))
    report("trial restore: loading the RDB into a scratch redis-server ...")
    check = redisdata.check_rdb(rdb)
    with redisdata.ScratchRedis(settings, rdb.parent, free_port()) as scratch:
        try:
            loaded = scratch.load()
        finally:
            checked = redisdata.rdb_result(check, "the archived RDB")
        if not expected == checked.keys == loaded.keys:
            raise VerifyError(f"the RDB holds {loaded.keys} keys by a trial load and "
                              f"{checked.keys} by redis-check-rdb; the manifest says "
                              f"{expected}")
        names = scratch.aof_names() if aof else {}
        scratch.stop()
    if names:
        redisdata.aof_from_rdb(rdb.parent, names)
    return Verification(manifest, loaded.keys, loaded.loaded, 0.0, loaded.seconds)
