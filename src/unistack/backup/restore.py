"""Restoring a backup without ever leaving the stack half-restored.

1. Verify the archive into a fresh staging directory (every member checked before it is
   written; a corrupt or malicious archive is refused whole and live data is untouched).
   Beside the RDB the trial Redis loaded goes the AOF the live Redis will start from
   (the RDB as the base of a multi-part AOF): with AOF on, a dump.rdb dropped beside an
   old AOF restores nothing.
2. If the stack runs: a pre-restore safety backup; the hub holds Redis and its
   dependents in maintenance (no restarts, no alerts; said once on Slack); they stop.
3. The journal records the swaps; each live directory (Redis data, models, market data)
   moves aside and the restored one moves in (renames on one file system).
4. The hub starts Redis and its dependents again; Redis must load the manifest's keys.
   Any failure puts the old directories back (the journal), and starts them again.

Restore holds the backup lock and the control lock (exit 3 when either is busy).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import redis

from unistack.backup import catalog, create, journal, redisdata, verify
from unistack.backup.progress import Meter
from unistack.config import Settings
from unistack.hub.client import HubClient, HubUnreachable
from unistack.lock import control_lock
from unistack.runtime import write_atomic
from unistack.services import REGISTRY
from unistack.supervisor import SupervisorClient, SupervisorError

Report = Callable[[str], None]
# Redis and everything that depends on it (the ML engine): what a restore stops.
STOPPED = tuple(spec.name for spec in REGISTRY
                if spec.name == "redis" or "redis" in spec.depends_on)


class RestoreError(Exception):
    """The restore failed; the message says what was rolled back and where things are."""


class Restored(NamedTuple):
    archive: Path
    keys: int
    seconds: float  # from the command to every service ready, without the safety backup
    safety: catalog.Backup | None
    safety_seconds: float
    online: bool
    notes: list[str]


def restore(settings: Settings, path: Path, report: Report, meter: Meter, *,
            identities: list[Any] | None = None, with_config: bool = False) -> Restored:
    """Restore the backup at PATH into this home (running or not)."""
    home = settings.unistack_home
    with create.backup_lock(settings, "restore", report), \
            control_lock(home, "restore", False, report):
        journal.recover(settings, report)
        return _restore(settings, path.resolve(), report, meter, identities=identities,
                        with_config=with_config)


def _restore(settings: Settings, path: Path, report: Report, meter: Meter, *,
             identities: list[Any] | None, with_config: bool) -> Restored:
    begun = time.monotonic()
    online = SupervisorClient(settings.supervisor_socket, timeout=2.0).is_running()
    staging = verify.staging_dir(settings, "restore")
    checked = verify.verify(settings, path, meter, report, identities=identities,
                            staging=staging, aof=True)
    try:
        safety, safety_seconds = None, 0.0
        if online:
            report("pre-restore safety backup of the running stack ...")
            mark = time.monotonic()
            safety = create.take(settings, report, meter, tag="pre-restore",
                                 locked=True).backup
            safety_seconds = time.monotonic() - mark
        notes = _place(settings, staging, checked, report, online=online, name=path.name)
        notes += _config(settings, staging, with_config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - begun - safety_seconds
    return Restored(path, checked.keys, seconds, safety, safety_seconds, online, notes)


def _swaps(settings: Settings, staging: Path) -> list[journal.Swap]:
    stamp = f"{os.getpid()}-{time.time_ns()}"
    pairs = ((settings.redis_data_dir, staging / "redis"),
             (settings.models_dir, staging / "models"),
             (settings.market_dir, staging / "market"))
    swaps = []
    for live, new in pairs:
        new.mkdir(mode=0o700, exist_ok=True)  # an archive without models restores none
        live.mkdir(mode=0o700, parents=True, exist_ok=True)
        swaps.append(journal.Swap(live, live.with_name(f".{live.name}.pre-restore-{stamp}"),
                                  new))
    (staging / "redis" / "dump.rdb").chmod(0o600)
    return swaps


def _place(settings: Settings, staging: Path, checked: verify.Verification, report: Report,
           *, online: bool, name: str) -> list[str]:
    swaps = _swaps(settings, staging)
    hub = _Hub(settings, report) if online else None
    if hub:
        try:
            hub.hold(f"restore of {name}")
        except RestoreError:
            hub.release_quietly()  # nothing was moved: start them again as they were
            raise
    try:
        journal.begin(settings, swaps, name)
        journal.apply(swaps)
        journal.placed(settings)
        if hub:
            hub.release()
            _wait_ready(settings, checked, report)
    except BaseException as exc:
        rolled = _roll_back(settings, hub, report)
        if isinstance(exc, Exception):
            state = ("rolled back: the data is as it was before the restore" if rolled else
                     "NOT rolled back (see above): the restored data stays in place")
            raise RestoreError(f"restore of {name} failed ({exc}); {state}") from exc
        raise
    journal.done(settings)
    if online:
        return []
    return ["the stack is not running: `manage_production.sh start` serves the restored "
            f"data ({checked.keys} keys)"]


def _roll_back(settings: Settings, hub: _Hub | None, report: Report) -> bool:
    """Put the old directories back, with their services stopped. If they cannot be
    stopped, nothing is moved under a running Redis: the journal stays, and the next
    `start`, `backup` or `restore` finishes it."""
    if hub:
        try:
            hub.hold("rolling back a failed restore")
        except RestoreError as exc:
            report(f"cannot stop the services to roll back ({exc}); the journal stays")
            hub.release_quietly()
            return False
    journal.recover(settings, report, force=True)
    if hub:
        hub.release_quietly()
    return True


def _wait_ready(settings: Settings, checked: verify.Verification, report: Report) -> None:
    """Redis (and its dependents) ready again, holding the restored keys."""
    report("starting redis and its dependents on the restored data ...")
    # START_TIMEOUT, as for `start`, plus the load the trial took (Redis loads it again).
    deadline = time.monotonic() + settings.start_timeout + checked.load_seconds * 3
    while time.monotonic() < deadline:
        states = _states(settings)
        if all(states.get(name) for name in STOPPED):
            break
        time.sleep(0.1)
    else:
        late = [name for name, ready in _states(settings).items()
                if name in STOPPED and not ready]
        raise RestoreError(f"{', '.join(late) or 'the hub'} not ready on the restored data "
                           f"within START_TIMEOUT ({settings.start_timeout:g} s)")
    keys = int(redisdata.client(settings.redis_port, settings.redis_password).dbsize())
    if keys > checked.keys or keys < checked.loaded - _expiring(settings):
        raise RestoreError(f"the live Redis holds {keys} keys after the restore; the archive "
                           f"holds {checked.keys}")
    report(f"redis serves the restored data: {keys} keys")


def _expiring(settings: Settings) -> int:
    """Keys with a TTL: each may have expired since the trial load."""
    info = redisdata.client(settings.redis_port, settings.redis_password).info("keyspace")
    return sum(int(db.get("expires", 0)) for db in info.values() if isinstance(db, dict))


def _states(settings: Settings) -> dict[str, bool]:
    try:
        code, document = HubClient(settings).get("/status")
    except HubUnreachable:
        return {}
    if code != 200:
        return {}
    return {s["name"]: bool(s["ready"]) for s in document.get("services", [])}


def _config(settings: Settings, staging: Path, with_config: bool) -> list[str]:
    """config.env is the checkout's: replaced only on request. .env (from an archive made
    with --include-secrets) is placed only where this home has none (a new machine)."""
    notes = []
    archived = staging / "config" / "config.env"
    current = settings.root / "config.env"
    if archived.is_file() and archived.read_bytes() != _read(current):
        if with_config:
            write_atomic(current, archived.read_text(), 0o644)
            notes.append(f"{current} replaced by the archived one: restart the stack to use it")
        else:
            notes.append(f"the archived config.env differs from {current}; kept this one "
                         "(--with-config replaces it)")
    secrets = staging / "secrets" / ".env"
    if secrets.is_file() and not settings.env_file.exists():
        write_atomic(settings.env_file, secrets.read_text(), 0o600)
        notes.append(f"{settings.env_file} restored from the archive (mode 0600)")
    elif secrets.is_file():
        notes.append(f"kept this home's {settings.env_file}; the archived secrets were not "
                     "applied")
    return notes


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


class _Hub:
    """Holds Redis and its dependents in the hub's maintenance mode while they are
    stopped and swapped; releasing it lets the hub start them again."""

    def __init__(self, settings: Settings, report: Report) -> None:
        self._settings = settings
        self._client = HubClient(settings, timeout=30.0)
        self._supervisor = SupervisorClient(settings.supervisor_socket, timeout=60.0)
        self._report = report

    def hold(self, reason: str) -> None:
        self._call("/maintenance", {"services": list(STOPPED), "reason": reason,
                                    "pid": os.getpid()})
        self._no_final_save()
        for name in reversed(STOPPED):
            try:
                self._supervisor.stop(name)
            except SupervisorError as exc:
                raise RestoreError(f"could not stop {name}: {exc}") from None
            self._report(f"  {name:<12} stopped")

    def _no_final_save(self) -> None:
        """Redis saves an RDB when SIGTERM stops it (save points are set): seconds for 1 GB,
        past supervisord's stopwaitsecs, for data a restore moves aside anyway (its AOF is
        still flushed). The setting dies with this process."""
        with contextlib.suppress(redis.RedisError):  # not running: nothing to save
            redisdata.client(self._settings.redis_port, self._settings.redis_password
                             ).config_set("save", "")

    def release(self) -> None:
        self._call("/maintenance/end", {"services": list(STOPPED)})

    def release_quietly(self) -> None:
        """Release on a failure path: a second error must not hide the first."""
        try:
            self.release()
        except RestoreError as exc:
            self._report(f"could not end the maintenance hold ({exc}); the hub ends it "
                         "when this command exits")

    def _call(self, path: str, body: dict[str, Any]) -> None:
        try:
            code, answer = self._client.post(path, body)
        except HubUnreachable as exc:
            raise RestoreError(f"{exc}: the hub must hold the services it restores") from None
        if code >= 300:
            raise RestoreError(f"the hub refused {path}: {answer.get('error', code)}")
