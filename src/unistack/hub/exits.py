"""ExitWatcher: tells the hub the moment a watched process exits, through pidfds
(Linux 5.3+), so a crash costs no polling and no delay. Without pidfd support the
hub still sees exits at its next supervisord resync."""

from __future__ import annotations

import logging
import os
import queue
import selectors
import threading
from collections.abc import Callable

log = logging.getLogger("unistack.hub")


class ExitWatcher:
    def __init__(self, post: Callable[[str, int], None]) -> None:
        self._post = post
        self._selector = selectors.DefaultSelector()
        self._requests: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_write, b"x")

    def watch(self, service: str, pid: int) -> None:
        """Post (SERVICE, PID) once PID exits (at once if it is already gone)."""
        self._requests.put((service, pid))
        os.write(self._wake_write, b"x")

    def _register(self) -> None:
        while not self._requests.empty():
            service, pid = self._requests.get()
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._post(service, pid)
                continue
            except OSError as exc:  # no pidfd support: the resync still sees the exit
                log.debug("cannot watch pid %d of %s: %s", pid, service, exc)
                continue
            self._selector.register(fd, selectors.EVENT_READ, (service, pid))

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                if key.data is None:
                    os.read(self._wake_read, 4096)
                    self._register()
                    continue
                self._selector.unregister(key.fd)
                os.close(key.fd)
                self._post(*key.data)
        for key in list(self._selector.get_map().values()):
            os.close(key.fd)
        self._selector.close()
        os.close(self._wake_write)
