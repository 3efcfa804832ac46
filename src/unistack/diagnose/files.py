"""Checks of what is on disk and of the host: the configuration, `.env`, every state
directory, stale pid and socket files, free disk, model checksums, backup age,
localhost, vm.overcommit_memory. Read-only: nothing here writes, creates or chmods."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

from unistack import processes, runtime
from unistack.backup import catalog
from unistack.config import Settings
from unistack.diagnose.findings import Finding, fail, ok, warn
from unistack.ml.registry import ModelRegistry


def configuration(settings: Settings) -> list[Finding]:
    """What lenient loading worked around: each is a value the stack cannot start with."""
    found = [fail("config.invalid", "a configuration value is invalid", error,
                  remedy="correct it (every key: docs/configuration.md)")
             for error in settings.errors]
    found += [warn("config.unknown-variable", "an environment variable looks like a key",
                   warning) for warning in settings.warnings]
    return found or [ok("config.valid", "the configuration loads")]


def env_file(settings: Settings) -> Finding:
    path = settings.env_file
    try:
        info = path.stat()
    except FileNotFoundError:
        return warn("env.missing", ".env does not exist yet", f"{path}: absent",
                    remedy="scripts/manage_production.sh start (generates the secrets)")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 or info.st_uid != os.geteuid():
        return fail("env.permissions", ".env is readable by others or owned by another user",
                    f"{path}: mode {mode:04o}, uid {info.st_uid} (expected 0600, uid "
                    f"{os.geteuid()})", fix="fix.env-permissions",
                    remedy=f"chown {os.geteuid()} {path} && chmod 600 {path}")
    return ok("env.permissions", ".env is 0600 and ours", f"{path}: mode {mode:04o}")


def state_dirs(settings: Settings) -> list[Finding]:
    found, missing = [], []
    for path, mode in runtime.state_dirs(settings).items():
        name = str(path.relative_to(settings.unistack_home))
        try:
            info = path.stat()
        except FileNotFoundError:
            missing.append(f"{path}: absent")
            continue
        actual = stat.S_IMODE(info.st_mode)
        if actual != mode or info.st_uid != os.geteuid():
            found.append(fail(f"fs.mode:{name}", f"{name} has the wrong mode or owner",
                              f"{path}: mode {actual:04o} uid {info.st_uid} (expected "
                              f"{mode:04o} uid {os.geteuid()})", fix="fix.permissions",
                              remedy=f"chown {os.geteuid()} {path} && chmod {mode:o} {path}",
                              critical=False))
    if missing:
        found.append(warn("fs.missing", f"{len(missing)} state directories are missing",
                          "\n".join(missing), fix="fix.directories",
                          remedy="scripts/manage_production.sh start (creates them)"))
    return found or [ok("fs.state-dirs", "every state directory has its mode and owner")]


def stale_files(settings: Settings, supervisord_running: bool) -> list[Finding]:
    """A pid file naming a dead process, a socket nothing answers on."""
    found = []
    pidfile = settings.run_dir / "supervisord.pid"
    pid = _read_pid(pidfile)
    if pid and not processes.start_tick(pid):  # gone, or a zombie nobody reaped
        found.append(warn("files.stale-pid", "supervisord's pid file names a dead process",
                          f"{pidfile}: pid {pid}, no such process", fix="fix.stale-files",
                          remedy=f"rm {pidfile}"))
    sock = settings.supervisor_socket
    if sock.exists() and not supervisord_running:
        found.append(warn("files.stale-socket", "supervisord's socket is left without it",
                          f"{sock}: exists, nothing answers on it", fix="fix.stale-files",
                          remedy=f"rm {sock}"))
    return found


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def disk(settings: Settings) -> list[Finding]:
    """Free space of each filesystem a state directory is on (a volume mounted at any of
    them counts on its own)."""
    found, seen = [], set()
    for path in (settings.unistack_home, *runtime.state_dirs(settings), settings.backups_dir):
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = os.statvfs(existing)
        free = 100.0 * usage.f_bavail / max(usage.f_blocks, 1)
        evidence = f"{existing}: {free:.1f} % free ({usage.f_bavail * usage.f_frsize >> 20} MiB)"
        if free < settings.disk_free_warn_percent:
            found.append(fail(f"disk.free:{existing}", "the disk is nearly full", evidence,
                              remedy="free space (old backups: scripts/manage_production.sh "
                              "prune; logs) or grow the volume"))
        else:
            found.append(ok(f"disk.free:{existing}", "free disk", evidence))
    return found


def models(settings: Settings) -> list[Finding]:
    registry = ModelRegistry(settings.models_dir)
    found = []
    for name in registry.names():
        for version in registry.versions(name):
            verdict = registry.check(version)
            if verdict != "ok":
                found.append(fail(f"model.checksum:{name}/{version.version}",
                                  f"model {name} v{version.version} cannot be served", verdict,
                                  remedy="scripts/manage_production.sh ml train, or restore "
                                  "var/models from a backup", critical=False))
    if not registry.names():
        found.append(warn("model.none", "no model is registered", f"{settings.models_dir}: "
                          "empty", remedy="scripts/manage_production.sh ml train"))
    return found or [ok("model.checksums", "every model version matches its sha256")]


def backups(settings: Settings, now: float | None = None) -> Finding:
    newest = catalog.newest_verified(catalog.scan(settings.backups_dir))
    if newest is None:
        return warn("backup.none", "no verified backup", f"{settings.backups_dir}: none",
                    remedy="scripts/manage_production.sh backup")
    age = (now or time.time()) - newest.ts
    limit = 2 * settings.backup_interval if settings.backup_interval else float("inf")
    evidence = f"{newest.name}: {age / 3600:.1f} h old"
    if age > limit:
        return warn("backup.stale", "the newest verified backup is old", evidence,
                    remedy="scripts/manage_production.sh backup")
    return ok("backup.recent", "a recent verified backup exists", evidence)


def host(proc: Path = Path("/proc")) -> list[Finding]:
    found = []
    try:
        address = socket.gethostbyname("localhost")
    except OSError as exc:
        address = f"unresolved ({exc})"
    if address != "127.0.0.1":
        found.append(warn("host.localhost", "localhost does not resolve to 127.0.0.1",
                          f"localhost -> {address}", fix="fix.hosts",
                          remedy="add `127.0.0.1 localhost` to /etc/hosts"))
    try:
        overcommit = (proc / "sys/vm/overcommit_memory").read_text().strip()
    except OSError:
        overcommit = "unknown"
    if overcommit not in ("1", "unknown"):
        found.append(warn("host.overcommit", "vm.overcommit_memory is not 1",
                          f"vm.overcommit_memory = {overcommit}: Redis's BGSAVE fork may fail "
                          "under memory pressure",
                          remedy="sysctl vm.overcommit_memory=1 (as root; Redis's advice)"))
    return found or [ok("host.settings", "localhost and vm.overcommit_memory as Redis wants")]
