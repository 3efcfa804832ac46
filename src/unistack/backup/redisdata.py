"""Redis's side of a backup: a fresh snapshot of the live server, the RDB checked by
redis-check-rdb, and a scratch redis-server that loads an RDB (the trial restore) and
can turn it into an AOF directory for the live server to start from.

Fresh means this backup's own BGSAVE finished (INFO persistence: no save in progress,
`rdb_saves` grown, last status ok), not merely a LASTSAVE that moved (1 s resolution).
The snapshot is hard-linked before anything reads it, so a later save renaming a new
dump.rdb into place cannot change the bytes archived and counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from unistack.config import Settings
from unistack.configkeys import LOOPBACK
from unistack.runtime import redis_quote


class RedisDataError(Exception):
    """The snapshot, the check or the trial load failed; the message says why."""


class Snapshot(NamedTuple):
    path: Path  # a hard link to the RDB this backup made; the caller removes it
    redis_version: str


def client(port: int, password: str, timeout: float = 5.0) -> redis.Redis:
    """No retries hidden inside a call: a loading Redis answers at once."""
    return redis.Redis(host=LOOPBACK, port=port, password=password or None,
                       socket_timeout=timeout, socket_connect_timeout=2.0,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RedisDataError(f"{what}: not done within {timeout:g} s")
        time.sleep(0.02)


def snapshot(settings: Settings, link: Path, timeout: float = 3600.0) -> Snapshot:
    """BGSAVE on the live Redis, wait until this save is done, hard-link its RDB to LINK."""
    try:
        live = client(settings.redis_port, settings.redis_password)
        version = str(live.info("server")["redis_version"])
        before = _saves(live)
        _bgsave(live, before, timeout)
        rdb = Path(str(live.config_get("dir")["dir"])) / str(
            live.config_get("dbfilename")["dbfilename"])
    except redis.RedisError as exc:
        raise RedisDataError(f"Redis on port {settings.redis_port} did not take a snapshot: "
                             f"{exc}; is the stack running? (`status`)") from None
    link.unlink(missing_ok=True)
    os.link(rdb, link)
    return Snapshot(link, version)


def _saves(live: redis.Redis) -> int:
    return int(live.info("persistence")["rdb_saves"])


def _bgsave(live: redis.Redis, before: int, timeout: float) -> None:
    """Start a BGSAVE (after one already running ends) and wait for it to succeed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            live.bgsave(schedule=True)
            break
        except redis.ResponseError as exc:
            if "in progress" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # someone else's save: ours must start after it
            before = _saves(live)

    def done() -> bool:
        info = live.info("persistence")
        if info["rdb_bgsave_in_progress"] or info["aof_rewrite_scheduled"] \
                or int(info["rdb_saves"]) <= before:
            return False
        if info["rdb_last_bgsave_status"] != "ok":
            raise RedisDataError("Redis's BGSAVE failed (rdb_last_bgsave_status:err); see "
                                 "`manage_production.sh logs redis` (a full disk?)")
        return True

    _poll(done, max(1.0, deadline - time.monotonic()), "BGSAVE")


class RdbCheck(NamedTuple):
    keys: int


def check_rdb(path: Path, program: str = "redis-check-rdb") -> subprocess.Popen[str]:
    """Start redis-check-rdb on PATH; `rdb_result` reads its verdict."""
    return subprocess.Popen([program, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")


def rdb_result(check: subprocess.Popen[str], name: str) -> RdbCheck:
    output, _ = check.communicate()
    found = re.search(r"\[info\] (\d+) keys read", output)
    if check.returncode != 0 or found is None:
        error = [line.strip("[]- ") for line in output.splitlines()
                 if re.search(r"error|CRC|Unexpected|Short read|Invalid", line, re.I)
                 and "RDB ERROR DETECTED" not in line]
        why = next((line for line in output.splitlines()[::-1] if line.strip()), "no output")
        raise RedisDataError(f"redis-check-rdb rejects {name} (exit {check.returncode}): "
                             f"{'; '.join(error[:3]) or why}")
    return RdbCheck(int(found.group(1)))


def aof_from_rdb(directory: Path, names: dict[str, str]) -> None:
    """The AOF the live Redis starts from, beside the verified RDB in DIRECTORY: Redis 7's
    multi-part AOF whose base is an RDB, the files `CONFIG SET appendonly yes` (the
    documented switch from RDB to AOF) writes by a rewrite, seconds per GB; here a hard
    link and the two-line manifest, in an instant."""
    aof = directory / names["appenddirname"]
    aof.mkdir(mode=0o700)
    stem = names["appendfilename"]
    os.link(directory / names["dbfilename"], aof / f"{stem}.1.base.rdb")
    (aof / f"{stem}.1.incr.aof").touch(mode=0o600)
    (aof / f"{stem}.manifest").write_text(
        f"file {stem}.1.base.rdb seq 1 type b\nfile {stem}.1.incr.aof seq 1 type i\n")


class Loaded(NamedTuple):
    keys: int  # keys in the RDB: loaded plus expired on the way
    loaded: int
    seconds: float


class ScratchRedis:
    """A redis-server of our own on DIRECTORY (its dump.rdb) and a free loopback port,
    with the stack's redis.conf but AOF and snapshots off and a password of its own."""

    def __init__(self, settings: Settings, directory: Path, port: int) -> None:
        self._settings = settings
        self._directory = directory
        self._port = port
        self._password = secrets.token_hex(24)
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        lines = [f"include {redis_quote(self._settings.root / 'redis.conf')}",
                 f"bind {LOOPBACK}", f"port {self._port}",
                 f"dir {redis_quote(self._directory)}", "appendonly no", 'save ""',
                 "maxmemory 0", f"requirepass {redis_quote(self._password)}"]
        return "\n".join(lines) + "\n"

    def load(self, timeout: float = 3600.0) -> Loaded:
        """Start it (the config on stdin: the password never in `ps`) and wait until the
        RDB is loaded; its key count comes from Redis's own load statistics."""
        begun = time.monotonic()
        self._process = subprocess.Popen(
            [self._settings.redis_server_bin, "-"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._directory)
        assert self._process.stdin is not None
        self._process.stdin.write(self._config().encode())
        self._process.stdin.close()
        _poll(self._loaded, timeout, "the trial load")
        info = self.client().info("persistence")
        loaded, expired = int(info["rdb_last_load_keys_loaded"]), \
            int(info["rdb_last_load_keys_expired"])
        return Loaded(loaded + expired, loaded, time.monotonic() - begun)

    def client(self) -> redis.Redis:
        return client(self._port, self._password, timeout=60.0)

    def _loaded(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RedisDataError(f"the scratch redis-server exited ({self._process.returncode})"
                                 " while loading the RDB: the RDB is corrupt or unreadable")
        try:
            return bool(self.client().info("persistence")["loading"] == 0)
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False

    def aof_names(self) -> dict[str, str]:
        """The names its AOF would have (appenddirname, appendfilename, dbfilename); Redis 7
        or later, whose multi-part AOF `aof_from_rdb` writes."""
        live = self.client()
        version = str(live.info("server")["redis_version"])
        if int(version.split(".", maxsplit=1)[0]) < 7:
            raise RedisDataError(f"redis-server {version}: Redis 7 or later is required "
                                 "(its multi-part AOF)")
        return {key: str(live.config_get(key)[key])
                for key in ("appenddirname", "appendfilename", "dbfilename")}

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):  # shutdown closes the connection
            self.client().shutdown(nosave=True)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> ScratchRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
