"""The dead man's switch: while the hub runs, it calls HEARTBEAT_URL every
HEARTBEAT_INTERVAL, and an outside service (healthchecks.io, Cronitor, Better Uptime,
Dead Man's Snitch, ...) pages when the calls stop. That is how the death of the hub, of
supervisord or of the whole host is noticed: nothing inside the stack can report those.

It is the pattern of Alertmanager's always-firing Watchdog alert. A call is made only
while the hub's own loop is fresh and supervisord answers, so a hub that is stuck, or
left running as an orphan after supervisord died, stops the calls too.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

log = logging.getLogger("unistack.hub")

Post = Callable[[str, bytes, float], int]


def post(url: str, body: bytes, timeout: float) -> int:
    """POST BODY to URL; the HTTP status (an error status is returned, not raised)."""
    # HEARTBEAT_URL is validated as http(s) by config: no file: or custom schemes.
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Heartbeat:
    """Calls URL every INTERVAL while ALIVE() holds; a failed call is logged and the next
    one comes at the next interval (the outside service tolerates a missed beat)."""

    def __init__(self, url: str, interval: float, alive: Callable[[], str | None],
                 send: Post = post) -> None:
        self._url = url
        self._interval = interval
        self._alive = alive  # None when the stack's control plane is sound, else why not
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._failing = False
        self._withheld: str | None = None
        self.beats = 0  # calls the outside service accepted

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self._interval):
                return

    def beat(self) -> bool:
        """One call, if the hub is sound; True when the outside service accepted it."""
        why_not = self._alive()
        if why_not:
            if why_not != self._withheld:
                log.warning("heartbeat withheld: %s", why_not)  # once per reason
            self._withheld = why_not
            return False
        self._withheld = None
        timeout = min(10.0, self._interval)
        try:
            status = self._send(self._url, b"unistack hub alive", timeout)
        except (OSError, ValueError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if not 200 <= status < 300:
            return self._failed(f"HTTP {status}")
        if self._failing:
            log.info("heartbeat accepted again")
        self._failing = False
        self.beats += 1
        return True

    def _failed(self, why: str) -> bool:
        # The URL is a secret: the log formatter redacts it, and it is not named here.
        log.warning("heartbeat call failed (%s); the next one in %g s", why, self._interval)
        self._failing = True
        return False
