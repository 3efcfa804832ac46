"""Remedies: a service's own way out of a state the hub must not kill it for.

Redis busy in a script or function gets `SCRIPT KILL`, then `FUNCTION KILL`, before the
hub kills it past BUSY_GRACE (a script that already wrote cannot be killed that way:
Redis answers UNKILLABLE and only then does the hub act). Redis that cannot persist gets
its state directories recreated (owner and mode as at start) and is asked to save
again, so it recovers by itself once the disk takes writes: the hub never kills it,
because it holds the only copy of the data. If its directory was removed, saving again
cannot work (its working directory is gone): hub/rescue.py copies the data out first.
"""

from __future__ import annotations

import logging

from unistack import runtime
from unistack.config import Settings
from unistack.hub.rescue import RedisRescue
from unistack.probes import redis_command

log = logging.getLogger("unistack.hub")

_TIMEOUT = 0.5


class RedisRemedies:
    def __init__(self, settings: Settings, rescue: RedisRescue | None = None) -> None:
        self._settings = settings
        self._rescue = rescue

    def _command(self, *args: str) -> str:
        try:
            return redis_command(self._settings.redis_port, self._settings.redis_password,
                                 _TIMEOUT, *args, host=self._settings.redis_host)
        except (OSError, ValueError) as exc:
            return f"no answer ({type(exc).__name__}: {exc})"

    def busy(self) -> str:
        """Ask Redis to end the script or function that blocks it; what it answered."""
        answer = self._command("SCRIPT", "KILL")
        if answer.startswith("NOTBUSY"):
            answer = self._command("FUNCTION", "KILL")
        log.warning("redis busy: asked it to end its script/function: %s", answer)
        return answer

    def cannot_persist(self) -> str:
        """Recreate missing state directories, then ask Redis to save again."""
        try:
            runtime.prepare_dirs(self._settings)
        except OSError as exc:
            log.warning("cannot recreate the state directories: %s", exc)
        if self._rescue is not None and self._rescue.needed():
            return self._rescue.run()  # its directory is gone: saving again cannot work
        info = self._command("INFO", "persistence")
        asks = [("BGSAVE",)] + ([("BGREWRITEAOF",)] if "aof_last_write_status:err" in info
                                else [])
        answers = [self._command(*ask) for ask in asks]
        log.warning("redis cannot persist: asked it to save again: %s", "; ".join(answers))
        return "; ".join(answers)
