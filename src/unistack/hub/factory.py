"""The factory: builds every component of the hub from Settings, and runs it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from unistack import runtime
from unistack.config import Settings
from unistack.hub.api import HubApi, HubServer, document_builder
from unistack.hub.events import EventLog
from unistack.hub.metrics import HubMetrics
from unistack.hub.reconcile import Reconciler
from unistack.probes import build_probe
from unistack.services import REGISTRY, ServiceSpec, by_name
from unistack.supervisor import SupervisorClient, SupervisorError

log = logging.getLogger("unistack.hub")


class Hub:
    """The reconcile loop plus its HTTP API, stopped by SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, registry: tuple[ServiceSpec, ...] = REGISTRY) -> None:
        self.settings = settings
        self.registry = registry
        self.events = EventLog()
        self.metrics = HubMetrics()
        self.supervisor = SupervisorClient(settings.supervisor_socket)
        probes = {spec.name: build_probe(spec.readiness, spec, settings)
                  for spec in registry if not spec.autostart}
        self.reconciler = Reconciler(settings, self.supervisor, probes, events=self.events,
                                     metrics=self.metrics, registry=registry)
        self.stop_event = threading.Event()
        api = HubApi(
            status=document_builder(self.reconciler.statuses, self.loop_age, os.getpid()),
            loop_age=self.loop_age,
            stale_after=max(5 * settings.hub_loop_interval, 2.0) + settings.probe_timeout,
            events=self.events,
            metrics=self.metrics,
            restart=self.restart,
            token=settings.unistack_operator_token,
        )
        self.server = HubServer(api, settings.hub_port)

    def loop_age(self) -> float:
        return time.monotonic() - self.reconciler.last_round

    def restart(self, name: str) -> str | None:
        """Stop NAME in the background; the reconcile loop starts it again when deps are ready."""
        spec = by_name(self.registry).get(name)
        if spec is None or spec.autostart:
            return f"{name!r} is not a service the hub restarts"
        self.events.emit(name, "restart_requested", "info", "restart requested by an operator")
        threading.Thread(target=self._stop_quietly, args=(name,), daemon=True).start()
        return None

    def _stop_quietly(self, name: str) -> None:
        try:
            self.supervisor.stop(name)
        except SupervisorError as exc:
            log.error("restart of %s failed: %s", name, exc)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping the hub", signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        runtime.render(self.settings)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.server.start()
        log.info("hub serving on %s (pid %d)", self.settings.hub_url, os.getpid())
        self.events.emit("hub", "started", "info", f"hub started, pid {os.getpid()}")
        try:
            self.reconciler.run(self.stop_event)
        finally:
            self.server.stop()
        log.info("hub stopped")
        return 0
