"""gunicorn serving the dashboard app: gthread workers (a live stream holds a thread),
bound to UNISTACK_BIND_ADDRESS (127.0.0.1 unless in a container), no access log and no
control socket, its own log lines in the stack's format (root logger, redacted). Never
the Flask development server.

A stop is quick: a worker told to stop (SIGTERM) ends its live streams at once (they
would hold it until the hub's next keepalive), and an idle kept-alive connection holds
it at most KEEPALIVE (1 s); GRACEFUL_TIMEOUT bounds the rest within supervisord's
stopwaitsecs."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from unistack.config import Settings
from unistack.dashboard.components import components

# Seconds gunicorn waits for a busy worker to stop before it SIGKILLs it; supervisord's
# stopwaitsecs for the dashboard is this plus its 1 s poll plus 1 s (a test checks).
GRACEFUL_TIMEOUT = 1
# Seconds an idle connection is kept open. Without keep-alive every request pays for a
# new connection, which is most of gunicorn's cost here (benchmarks/dashboard.py: 2.4x
# the dev server's requests/s without it, 3.7x with it). A stopping worker lets an idle
# one linger at most this long, inside GRACEFUL_TIMEOUT.
KEEPALIVE = 1


class StackLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's error log through the root logger (set up by unistack.logs): one line
    format and one redaction filter for the whole stack; no access log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
        self.error_log.propagate = True
        self.access_log.propagate = False
        self.access_log.disabled = True


def _stack_dumps(_: Any) -> None:
    """SIGUSR1 (the hub's incident capture) dumps every thread's stack to the log, then
    gunicorn's own SIGUSR1 handling (reopen logs; the master passes it to the workers)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)


def _worker_ready(stopping: threading.Event) -> Callable[[Any], None]:
    """The post_worker_init hook: stack dumps, and SIGTERM sets STOPPING before
    gunicorn's own graceful stop begins."""
    def hook(worker: Any) -> None:
        _stack_dumps(worker)
        graceful = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: FrameType | None) -> None:
            stopping.set()
            if callable(graceful):
                graceful(signum, frame)

        signal.signal(signal.SIGTERM, on_term)

    return hook


def options(settings: Settings, stopping: threading.Event | None = None) -> dict[str, Any]:
    """gunicorn's settings for SETTINGS; STOPPING is set in a worker told to stop."""
    return {
        "bind": [f"{settings.unistack_bind_address}:{settings.dashboard_port}"],
        "worker_class": "gthread",
        "workers": settings.dashboard_workers,
        "threads": settings.dashboard_threads,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 30,
        "keepalive": KEEPALIVE,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "logger_class": StackLogger,
        "proc_name": "unistack-dashboard",
        "control_socket_disable": True,  # its default path is shared by every gunicorn
        "when_ready": _stack_dumps,
        "post_worker_init": _worker_ready(stopping or threading.Event()),
    }


class DashboardServer(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """The gunicorn application serving one prebuilt Flask app."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self._app = app
        self._options = options(settings, components(app).stopping)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def serve(app: Flask, settings: Settings) -> None:
    """Run gunicorn until it is stopped (SIGTERM from supervisord)."""
    logging.getLogger("unistack.dashboard").info(
        "dashboard on http://%s:%s (gunicorn, %d workers x %d threads)",
        settings.unistack_bind_address,
        settings.dashboard_port, settings.dashboard_workers, settings.dashboard_threads)
    DashboardServer(app, settings).run()
