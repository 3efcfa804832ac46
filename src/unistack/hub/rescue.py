"""The rescue of a Redis whose data directory was removed while it ran.

Such a Redis holds the only copy of the data, and nothing can make it persist again:
its working directory is a deleted inode (recreating the path does not help), and
`CONFIG SET dir` is a protected config that stays off. So the hub copies the dataset out
the way Redis itself does: a temporary replica on a free loopback port, its `dir` the
recreated data directory, takes a full (diskless) sync and writes its AOF there; then
Redis is shut down without saving and supervisord starts it on those files. Writes are
refused meanwhile (MISCONF after the failed save), so no acknowledged write is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from unistack.config import Settings
from unistack.configkeys import LOOPBACK
from unistack.probes import redis_command
from unistack.runtime import redis_quote, write_atomic

log = logging.getLogger("unistack.hub")

_SYNC_LIMIT = 60.0  # seconds the replica may take to sync and write its AOF
_TIMEOUT = 1.0
_SYNC_DELAY = "5"  # Redis's default repl-diskless-sync-delay (redis.conf leaves it)


def cwd_deleted(pid: int, proc: Path = Path("/proc")) -> bool:
    """PID's working directory was removed (the kernel marks the link "(deleted)")."""
    try:
        return os.readlink(proc / str(pid) / "cwd").endswith(" (deleted)")
    except OSError:
        return False


class RedisRescue:
    def __init__(self, settings: Settings, pid: Callable[[], int],
                 expect_exit: Callable[[], None]) -> None:
        self._settings = settings
        self._pid = pid
        self._expect_exit = expect_exit  # the shutdown below is ours, not a crash

    def needed(self) -> bool:
        pid = self._pid()
        return pid > 0 and cwd_deleted(pid)

    def run(self) -> str:
        """Copy the dataset into the recreated data directory, then restart Redis on it."""
        port = _free_port()
        conf = self._settings.run_dir / "redis-rescue.conf"
        write_atomic(conf, self._replica_conf(port))
        log_file = (self._settings.log_dir / "redis-rescue.log").open("ab")
        self._master("CONFIG", "SET", "repl-diskless-sync-delay", "0")  # sync now, not in 5 s
        replica = subprocess.Popen([self._settings.redis_server_bin, str(conf)],
                                   stdout=log_file, stderr=log_file, start_new_session=True)
        try:
            if not self._synced(port):
                return "rescue failed: the replica did not sync; see var/log/redis-rescue.log"
            self._replica(port, "SHUTDOWN")
            replica.wait(_SYNC_LIMIT)
        finally:
            if replica.poll() is None:
                replica.kill()
            log_file.close()
            conf.unlink(missing_ok=True)
            self._master("CONFIG", "SET", "repl-diskless-sync-delay", _SYNC_DELAY)
        self._expect_exit()
        self._master("SHUTDOWN", "NOSAVE")
        detail = ("its data directory was removed while it ran: the dataset was copied into "
                  "the recreated directory through a temporary replica, and Redis restarted "
                  "on it")
        log.warning("redis rescued: %s", detail)
        return detail

    def _replica_conf(self, port: int) -> str:
        s = self._settings
        return "\n".join([
            "# A temporary replica of the hub's rescue (hub/rescue.py); holds the password.",
            f"bind {LOOPBACK}", f"port {port}", f"dir {redis_quote(s.redis_data_dir)}",
            f"replicaof {LOOPBACK} {s.redis_port}", f"masterauth {redis_quote(s.redis_password)}",
            f"requirepass {redis_quote(s.redis_password)}", "appendonly yes", 'save ""',
            "daemonize no", "",
        ])

    def _synced(self, port: int) -> bool:
        deadline = time.monotonic() + _SYNC_LIMIT
        while time.monotonic() < deadline:
            info = self._replica(port, "INFO", "replication") + \
                self._replica(port, "INFO", "persistence")
            if all(field in info for field in ("master_link_status:up", "loading:0",
                                                "master_sync_in_progress:0",
                                                "aof_rewrite_in_progress:0")):
                return True
            time.sleep(0.05)
        return False

    def _master(self, *args: str) -> str:
        return self._call(self._settings.redis_port, *args)

    def _replica(self, port: int, *args: str) -> str:
        return self._call(port, *args)

    def _call(self, port: int, *args: str) -> str:
        try:
            return redis_command(port, self._settings.redis_password, _TIMEOUT, *args)
        except (OSError, ValueError) as exc:
            return f"no answer ({exc})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
