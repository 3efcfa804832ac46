"""The factory: builds every component of the hub from Settings, and runs it."""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from unistack import runtime
from unistack.alerts.service import Alerts
from unistack.config import Settings
from unistack.event import Event, Kind, Severity
from unistack.hub.api import HubApi, HubServer, StatusSources, document_builder
from unistack.hub.backups import BackupScheduler
from unistack.hub.events import EventLog
from unistack.hub.eventstore import EventStore
from unistack.hub.exits import ExitWatcher
from unistack.hub.facts import Facts
from unistack.hub.heartbeat import Heartbeat
from unistack.hub.incidents import IncidentRecorder, Retention
from unistack.hub.keyreports import KeyReports
from unistack.hub.maintenance import Maintenance
from unistack.hub.metrics import HubMetrics
from unistack.hub.monitor import Monitor, Patience
from unistack.hub.pods import Pods
from unistack.hub.reconcile import Exited, Message, Reconciler, Wake, build_services
from unistack.hub.remedies import RedisRemedies
from unistack.hub.rescue import RedisRescue
from unistack.hub.resources import ResourceWatcher
from unistack.hub.tenure import Tenure
from unistack.probes import build_probe
from unistack.services import REGISTRY, ServiceSpec, by_name
from unistack.supervisor import Programs, SupervisorClient, SupervisorError

log = logging.getLogger("unistack.hub")

_STALE_EXIT_CODE = 70  # the loop stopped turning: exit so supervisord restarts the hub


class Watchdog:
    """Exits the hub when its reconcile loop is stale, so supervisord starts a fresh one
    (a thread stuck inside the loop cannot be unstuck from outside)."""

    def __init__(self, age: Callable[[], float], limit: float,
                 exit: Callable[[int], None] = os._exit) -> None:
        self._age = age
        self._limit = limit
        self._exit = exit

    def check(self) -> None:
        age = self._age()
        if age > self._limit:
            log.critical("reconcile loop stale for %.1f s (HUB_STALE_AFTER=%g); exiting so "
                         "supervisord restarts the hub", age, self._limit)
            self._exit(_STALE_EXIT_CODE)


def _log_event(event: Event) -> None:
    level = logging.INFO if event["severity"] == Severity.INFO else logging.WARNING
    log.log(level, "event %s %s: %s", event["service"], event["kind"], event["detail"])


class Hub:
    """The reconcile loop, its monitors, exit watcher, watchdog and HTTP API."""

    def __init__(self, settings: Settings, registry: tuple[ServiceSpec, ...] = REGISTRY) -> None:
        self.settings = settings
        self.registry = registry
        self.events = EventLog()
        self.metrics = HubMetrics()
        self.events.subscribe(lambda event: self.metrics.event(event["service"], event["kind"]))
        self.events.subscribe(_log_event)
        self.store = EventStore(settings, self.events)
        self.pods = settings.in_pods
        self.supervisor: Programs = Pods(registry) if self.pods else \
            SupervisorClient(settings.supervisor_socket)
        inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.incidents = IncidentRecorder(
            settings.log_dir / "incidents", settings.log_dir, settings.incident_log_lines,
            settings.redact, Retention(settings.incident_max_age, settings.incident_max_files))
        self.services = build_services(settings, registry,
                                       lambda spec, pid: self._monitor(spec, pid, inbox))
        self.reconciler = Reconciler(
            settings, self.supervisor, self.services, events=self.events, metrics=self.metrics,
            incidents=self.incidents,
            inbox=inbox)
        self.exits = ExitWatcher(lambda service, pid: inbox.put(Exited(service, pid)))
        self.resources = ResourceWatcher(
            settings, self._pids, self.events,
            [settings.data_dir, settings.log_dir, settings.run_dir], metrics=self.metrics)
        self.alerts = Alerts(settings, prometheus_ready=lambda: self._ready("prometheus"))
        self.facts = Facts(settings, registry, self._ready)
        self.events.subscribe(self.alerts.on_event)
        self.reconciler.watch = self.exits.watch
        self.tenure = Tenure(settings.run_dir / "hub.json", settings.flap_window)
        self.heartbeat = Heartbeat(settings.heartbeat_url, settings.heartbeat_interval,
                                   self._unsound) if settings.heartbeat_url else None
        self.stop_event = threading.Event()
        names = tuple(spec.name for spec in registry)
        # Scheduled backups read Redis's files on this host: in Kubernetes mode they run
        # in the Redis pod instead (docs/deployment.md).
        self.backups = BackupScheduler(
            replace(settings, backup_interval=0.0) if self.pods else settings, self.events)
        self.maintenance = Maintenance(settings, self.reconciler, events=self.events,
                                       alerts=self.alerts, services=names)
        self.keys = KeyReports(settings, self.events)
        api = HubApi(
            status=document_builder(StatusSources(
                self.reconciler.statuses, self.loop_age, os.getpid(), self._warnings,
                self.facts.of, lambda: self.resources.system, lambda: self.facts.gpu,
                self.backups.status, self.maintenance.status, self.keys.status)),
            loop_age=self.loop_age,
            stale_after=settings.hub_stale_after,
            events=self.events,
            metrics=self.metrics,
            restart=self.restart,
            token=settings.unistack_operator_token,
            alerts=self.alerts,
            services=names,
            incident=self.incidents.read,
            backups=self.backups,
            maintenance=self.maintenance,
            keys=self.keys,
        )
        self.server = HubServer(api, settings.unistack_bind_address, settings.hub_port)

    def _monitor(
        self, spec: ServiceSpec, pid: Callable[[], int], inbox: queue.SimpleQueue[Message]
    ) -> Monitor | None:
        if spec.autostart:
            return None
        live = self.settings.probe_timing(spec.name, "liveness")
        ready = self.settings.probe_timing(spec.name, "readiness")
        probes = (build_probe(spec.liveness, spec, self.settings, live.timeout),
                  build_probe(spec.readiness, spec, self.settings, ready.timeout))
        # The rescue (a replica that saves what a stuck Redis holds) needs Redis's files
        # on this host: not in Kubernetes mode.
        rescue = None if self.pods else RedisRescue(
            self.settings, pid=lambda: self._pids().get("redis", 0),
            expect_exit=lambda: self.reconciler.expect_exit("redis"))
        redis = RedisRemedies(self.settings, rescue) if spec.name == "redis" else None
        patience = Patience(
            busy_grace=self.settings.busy_grace,
            remedy=redis.busy if redis else None,
            repair=redis.cannot_persist if redis else None,
            waiting=lambda: self.reconciler.waiting_for(spec.name))
        return Monitor(spec.name, probes, (live, ready), inbox.put, pid, patience=patience)

    def _ready(self, name: str) -> bool:
        return any(s.ready for s in self.reconciler.statuses() if s.name == name)

    def _pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.reconciler.statuses() if s.pid > 0}

    def _warnings(self) -> list[str]:
        """What `status` must say beside the services: a full disk and what it holds up."""
        warnings = list(self.resources.disk_warnings)
        unwritten = self.incidents.unwritten()
        if unwritten:
            warnings.append(f"{len(unwritten)} incident file(s) not written (disk full), held "
                            f"in memory: {unwritten[-1]}")
        if self.alerts.held_since:
            warnings.append("alert outbox not writable (disk full): Slack messages held in "
                            "memory, sent once the disk takes writes")
        return warnings

    def _unsound(self) -> str | None:
        """Why the heartbeat must not be sent now (None: the control plane is sound)."""
        if self.loop_age() > self.settings.hub_stale_after:
            return f"the hub's loop is stale ({self.loop_age():.1f} s)"
        if not self.supervisor.is_running():
            return "supervisord is not running"
        return None

    def loop_age(self) -> float:
        return time.monotonic() - self.reconciler.last_round

    def restart(self, name: str) -> str | None:
        """Stop NAME in the background; the reconcile loop starts it again when deps are
        ready. One the hub holds down after failed starts is started now."""
        spec = by_name(self.registry).get(name)
        if spec is None or spec.autostart:
            return f"{name!r} is not a service the hub restarts"
        if self.pods:
            return (f"{name} runs in its own pod: Kubernetes restarts it (`kubectl rollout "
                    f"restart` of its workload)")
        if self.reconciler.start_now(name):  # it failed to start: try again now
            return None
        self.reconciler.expect_exit(name)
        threading.Thread(target=self._stop_quietly, args=(name,), daemon=True).start()
        return None

    def _stop_quietly(self, name: str) -> None:
        try:
            self.supervisor.stop(name)
        except SupervisorError as exc:
            log.error("restart of %s failed: %s", name, exc)
            self.reconciler.exit_not_expected(name)  # it runs on: probe it again

    def _watchdog(self) -> None:
        watchdog = Watchdog(self.loop_age, self.settings.hub_stale_after)
        while not self.stop_event.wait(min(1.0, self.settings.hub_stale_after / 2)):
            watchdog.check()
            self.maintenance.check()
            if self.incidents.unwritten():
                self.incidents.flush()  # the disk was full: write them once it takes writes

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping the hub", signal.Signals(signum).name)
        self.stop_event.set()
        self.reconciler.inbox.put(Wake("stop"))

    def _render(self) -> None:
        """Write the runtime files; on a full or read-only disk keep the ones there, since
        the services already run on them (a hub that exits here would crash-loop)."""
        try:
            runtime.render(self.settings)
        except OSError as exc:
            if not runtime.rendered(self.settings):
                raise
            log.error("runtime files not rewritten (%s); the existing ones stay in use",
                      exc.strerror or exc)

    def run(self) -> int:
        self._render()
        self.incidents.prune()
        predecessor = self.tenure.begin(os.getpid())
        if predecessor is not None:
            self.reconciler.hub_replaced(predecessor)
        self.maintenance.resume()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for service in self.services.values():
            if service.monitor:
                service.monitor.start()
        self.exits.start()
        self.store.start()
        self.resources.start()
        self.facts.start()
        self.alerts.start()
        self.backups.start()
        self.server.start()
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        if self.heartbeat is not None:
            self.heartbeat.start()
        log.info("hub serving on %s (pid %d)", self.settings.hub_url, os.getpid())
        self.events.emit("hub", Kind.STARTED, Severity.INFO, f"hub started, pid {os.getpid()}")
        try:
            self.reconciler.run(self.stop_event)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.exits.stop()
            self.resources.stop()
            self.facts.stop()
            self.backups.stop()
            self.server.stop()
            self.alerts.stop()
            self.store.stop()
        self.tenure.end()  # only a clean stop gets here: an exception or a kill does not
        log.info("hub stopped")
        return 0
