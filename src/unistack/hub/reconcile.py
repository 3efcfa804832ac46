"""The hub's reconcile loop: observe, compare with the desired state (every service
running and ready), act — safe to run again at any moment.

Observations arrive on one queue: verdicts from each service's Monitor thread, exits
from the ExitWatcher (pidfd), and a periodic resync with supervisord. Decisions come
from each service's pure ServicePolicy; this module only applies them (`_apply`).
A restarted hub adopts running programs: it probes them and restarts nothing healthy.

In Kubernetes mode (`pods`) the services run in pods of their own: the hub probes,
explains and alerts with the same policies, and leaves every start, stop and kill to
Kubernetes (hub/pods.py stands where supervisord does).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from unistack import policy, runtime
from unistack.config import Settings
from unistack.event import Kind, Severity
from unistack.hub.events import EventLog
from unistack.hub.incidents import IncidentRecorder
from unistack.hub.metrics import HubMetrics
from unistack.hub.monitor import Monitor, Seen, Verdict
from unistack.hub.status import ServiceStatus, Startup
from unistack.hub.tenure import Predecessor
from unistack.services import ServiceSpec, start_order
from unistack.supervisor import ProcessInfo, Programs, SupervisorError

log = logging.getLogger("unistack.hub")

_RESYNC_SOON = 0.01  # seconds: look at supervisord again right after an exit or a kill
_RUNNING = ("STARTING", "RUNNING")
# supervisord.conf's startsecs: an exit sooner is supervisord's to retry (BACKOFF, then
# FATAL, which the hub takes over); an exit later is respawned at once, so it is a crash.
# A process's age is measured from supervisord's `start`, which getProcessInfo gives in
# whole seconds (int(laststart)): up to 1 s early, so an age is overestimated by less than
# a second. The bound errs one way only: an exit 0-1 s after the spawn may be reported as
# a crash that supervisord then retries itself (one event too many), and no exit after
# startsecs is ever taken for supervisord's (no crash missed). tests/unit/test_reconcile.py
# pins both sides of the 1 s line.
_STARTSECS = 1.0


class Exited(NamedTuple):
    service: str
    pid: int


class Wake(NamedTuple):
    """Nothing happened to a service; the loop should look at its stop flag now."""

    reason: str


Message = Verdict | Exited | Wake


@dataclass
class TrackedService:
    """One service as the reconcile loop tracks it: its policy, its monitor, its current
    process. Built by build_services, owned by the Reconciler (the factory only hands the
    dict over)."""

    spec: ServiceSpec
    policy: policy.ServicePolicy
    monitor: Monitor | None
    pid: int = 0
    program: str = "UNKNOWN"
    spawned_at: float = 0.0  # wall-clock start of the current pid, from supervisord
    detail: str = "not observed yet"
    last_incident: str = ""
    captured: str = ""  # incident file of the action list being applied
    onset: float = 0.0  # when the failure being applied began (a hang: its first probe)
    killed: set[int] = field(default_factory=set)
    stopping: threading.Thread | None = None  # a stop for backoff still in progress
    held: str = ""  # why an operator's command holds it in maintenance ("" when not)
    exit_seen: int = 0  # the last pid whose exit the loop has handled


class Reconciler:
    """Owns the hub's view of every service and applies its policy's decisions."""

    def __init__(
        self,
        settings: Settings,
        supervisor: Programs,
        services: dict[str, TrackedService],
        *,
        events: EventLog,
        metrics: HubMetrics,
        incidents: IncidentRecorder,
        inbox: queue.SimpleQueue[Message],
    ) -> None:
        self._settings = settings
        self._supervisor = supervisor
        self._pods = settings.in_pods
        self._services = services
        self._events = events
        self._metrics = metrics
        self._incidents = incidents
        self.inbox = inbox
        self._clock: Callable[[], float] = time.monotonic
        self._wall_offset = time.time() - time.monotonic()
        self._lock = threading.Lock()
        self._next_sync = 0.0
        self._first_sync = True
        self.last_round = time.monotonic()
        self._shown: list[tuple[Any, ...]] = []  # the statuses the live stream last got
        self.watch: Callable[[str, int], None] = lambda service, pid: None
        self.startup = Startup(self._clock(), settings.start_timeout, self._emit_stack)

    def _emit_stack(self, kind: Kind, severity: Severity, detail: str) -> None:
        self._events.emit("stack", kind, severity, detail)

    # --- reading ------------------------------------------------------------------

    def statuses(self) -> list[ServiceStatus]:
        with self._lock:
            return [self._status(s) for s in self._services.values()]

    def _status(self, service: TrackedService) -> ServiceStatus:
        p = service.policy
        incident = p.incident or ""
        return ServiceStatus(
            service.spec.name, service.spec.group, service.spec.critical, p.state,
            p.state == policy.READY, service.pid, p.since + self._wall_offset if p.since else 0.0,
            service.detail, service.spec.url(self._settings), len(p.restarts), incident,
            service.last_incident)

    # --- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.round(self._wait())
        for service in self._services.values():
            if service.monitor:
                service.monitor.stop()

    def _wait(self) -> float:
        now = self._clock()
        due = [self._next_sync] + [s.policy.next_start for s in self._services.values()
                                   if s.policy.next_start is not None]
        return max(0.0, min(min(due) - now, self._settings.hub_loop_interval))

    def round(self, timeout: float = 0.0) -> None:
        """Handle what arrived (waiting up to TIMEOUT for it), resync if due, tick."""
        try:
            message = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
        except queue.Empty:
            message = None
        with self._lock:
            while message is not None:
                self._handle(message)
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    message = None
            now = self._clock()
            if now >= self._next_sync:
                self._sync(now)
            for service in self._services.values():
                if service.held:
                    continue  # in maintenance: nothing it does is acted on
                if self.waiting_for(service.spec.name):
                    service.policy.held(now)
                self._apply(service, service.policy.tick(now))
            statuses = [self._status(service) for service in self._services.values()]
            self._tell_if_changed(statuses)
            for status in statuses:
                self._metrics.observe(status)
            # Held services are stopped on purpose: not a startup that failed.
            self.startup.check(now, [s for s in statuses if s.state != policy.MAINTENANCE])
        self.last_round = time.monotonic()
        self._metrics.round_done()

    def _tell_if_changed(self, statuses: list[ServiceStatus]) -> None:
        """A status that changed, with or without an event, goes to the live stream."""
        shown = [(s.state, s.ready, s.pid, s.detail, s.restarts, s.incident) for s in statuses]
        if shown != self._shown:
            self._shown = shown
            self._events.status_changed()

    def _handle(self, message: Message) -> None:
        if isinstance(message, Wake):
            return
        service = self._services[message.service]
        now = self._clock()
        if service.held:
            self._resync_soon(now)  # an exit or a verdict while held: not a failure
            return
        if isinstance(message, Exited):
            self._exited(service, message.pid, now)
            return
        service.detail = message.detail
        if message.kind == Seen.READY:
            restarted = service.policy.state in (policy.RESTARTING, policy.LOOPING)
            self._apply(service, service.policy.ready(now))
            if restarted:
                self._restart_dependents(service.spec.name)
        elif message.kind == Seen.NOT_READY:
            self._apply(service, service.policy.not_ready(now, message.detail))
        elif message.kind == Seen.DEGRADED:
            self._apply(service, service.policy.degraded(now, message.detail))
        elif message.kind == Seen.BUSY:
            service.onset = message.onset
            self._apply(service, service.policy.busy(now, message.detail))
            service.onset = 0.0
        elif message.kind == Seen.HUNG:
            service.onset = message.onset
            self._apply(service, service.policy.hung(now, message.detail))
            service.onset = 0.0
        elif message.kind == Seen.GONE:  # in its own pod, refusing connections: down
            service.onset = message.onset
            self._apply(service, service.policy.exited(now, message.detail))
            service.onset = 0.0

    def _exited(self, service: TrackedService, pid: int, now: float) -> None:
        if pid == service.pid:
            service.exit_seen = pid
        if pid in service.killed:
            service.killed.discard(pid)  # our own kill: already counted as a restart
        elif service.policy.next_start is not None:
            pass  # the hub is holding it down until its backoff ends: expected
        elif pid == service.pid and time.time() - service.spawned_at >= _STARTSECS:
            lived = time.time() - service.spawned_at
            log.warning("%s: process %d exited unexpectedly after %.1f s; supervisord "
                        "respawns it", service.spec.name, pid, lived)
            self._apply(service, service.policy.exited(
                now, f"process {pid} exited unexpectedly after {lived:.1f} s"))
        if pid == service.pid and service.monitor:
            service.monitor.pause()
        self._resync_soon(now)

    def waiting_for(self, name: str) -> str | None:
        """The first dependency of NAME that is not ready, or ready again but with its
        incident still open (not yet stable: a Redis busy in bursts answers between them,
        and a dependent blocked behind the last burst must not be judged hung then):
        NAME is waiting, not hung. Monitor threads call this without the lock: it only
        reads each policy's state."""
        for dependency in self._services[name].spec.depends_on:
            depended = self._services[dependency].policy
            if depended.state != policy.READY or depended.incident is not None:
                return dependency
        return None

    def hub_replaced(self, predecessor: Predecessor) -> None:
        """The hub before this one ended without a clean stop: one incident (a file with
        the end of its log, an event), its restarts counted, resolved once this hub holds."""
        hub = next(s for s in self._services.values() if s.spec.autostart)
        now, wall = self._clock(), time.time()
        detail = (f"the previous hub (pid {predecessor.pid}) ended without a clean stop "
                  "(killed, crashed or stale); supervisord started this one")
        with self._lock:
            hub.policy.restarts.extend(now - (wall - t) for t in predecessor.restarts)
            hub.policy.incident, hub.policy.incident_since = Kind.CRASHED, now
            path = self._incidents.capture(hub.spec.name, 0, detail, python=False)
            hub.last_incident = hub.captured = str(path)
            self._emit(hub, policy.Action(policy.EVENT, Kind.CRASHED, Severity.WARNING, detail))
            hub.captured = ""

    def expect_exit(self, name: str) -> None:
        """The current process of NAME is being stopped on purpose: not a crash, and its
        probes failing while it stops are not a hang (its monitor resumes on the next
        process); it is not ready meanwhile, so its dependents wait for it."""
        with self._lock:
            service = self._services[name]
            service.killed.add(service.pid)
            if service.monitor:
                service.monitor.pause()
            self._apply(service, service.policy.stopping(self._clock()))

    def start_now(self, name: str) -> bool:
        """An operator's restart of NAME while the hub holds it down until its backoff
        ends (it failed to start): start it on the next round instead. False when NAME is
        not held down (it runs, or starts anyway)."""
        with self._lock:
            service = self._services[name]
            if service.policy.next_start is None:
                return False
            service.policy.next_start = self._clock()
        self.inbox.put(Wake(f"restart of {name} asked"))
        return True

    def exit_not_expected(self, name: str) -> None:
        """A stop announced by `expect_exit` did not happen: the process runs on."""
        with self._lock:
            service = self._services[name]
            service.killed.discard(service.pid)
            if service.monitor:
                service.monitor.resume()

    def hold(self, names: list[str], reason: str) -> None:
        """Maintenance: an operator's command stops NAMES and replaces their files; the
        hub neither restarts them nor reports them failing until `release`."""
        with self._lock:
            for name in names:
                service = self._services[name]
                service.held, service.detail = reason, f"maintenance: {reason}"
                if service.monitor:
                    service.monitor.pause()
                self._apply(service, service.policy.maintenance(self._clock()))

    def release(self, names: list[str]) -> None:
        """End maintenance of NAMES: the loop starts them, dependencies first."""
        with self._lock:
            now = self._clock()
            for name in names:
                service = self._services[name]
                if service.held:
                    service.held, service.pid = "", 0
                    service.detail = "maintenance over; starting"
                    self._apply(service, service.policy.maintenance_over(now))
            self._resync_soon(now)
        self.inbox.put(Wake("maintenance over"))

    def held(self) -> dict[str, str]:
        with self._lock:
            return {s.spec.name: s.held for s in self._services.values() if s.held}

    # --- supervisord --------------------------------------------------------------

    def _resync_soon(self, now: float) -> None:
        self._next_sync = min(self._next_sync, now + _RESYNC_SOON)

    def _sync(self, now: float) -> None:
        self._next_sync = float("inf")  # actions below may ask for an early resync
        try:
            processes = self._supervisor.processes()
        except SupervisorError as exc:
            log.warning("cannot observe supervisord: %s", exc)
            processes = {}
        settling = False
        for service in self._services.values():
            info = processes.get(service.spec.name)
            if info is not None and service.monitor is not None and not service.held:
                self._observe(service, info, now)
            settling |= service.policy.state != policy.READY
        self._first_sync = False
        interval = self._settings.hub_loop_interval
        self._next_sync = min(self._next_sync,
                              now + (min(0.1, interval) if settling else interval))

    def _observe(self, service: TrackedService, info: ProcessInfo, now: float) -> None:
        p = service.policy
        service.program = info.state
        if self._pods:
            if p.state == policy.STOPPED:  # Kubernetes runs it: probe it from now on
                self._track_new_process(service, info, now)
            return
        holding = p.next_start is not None  # held down by the hub until its backoff ends
        if info.state in _RUNNING and info.pid and info.pid != service.pid:
            if service.pid and service.exit_seen != service.pid:
                # supervisord respawned it before its exit reached the loop: that exit
                # first (its own message, when it comes, is about an untracked pid)
                self._exited(service, service.pid, now)
            service.pid, service.spawned_at = info.pid, info.since
            self.watch(service.spec.name, info.pid)
            if not holding:
                self._track_new_process(service, info, now)
        if info.state == "FATAL":
            service.detail = f"supervisord gave up: {info.description}"
            self._apply(service, p.fatal(now, service.detail))
        elif info.state == "STOPPED" and not holding:
            self._start_when_ready(service, now)

    def _track_new_process(self, service: TrackedService, info: ProcessInfo, now: float) -> None:
        p = service.policy
        if self._first_sync and p.state == policy.STOPPED:
            self._apply(service, p.adopted(now, info.since - self._wall_offset))
        else:
            self._apply(service, p.started(now))
        assert service.monitor is not None
        service.monitor.resume()

    def _start_when_ready(self, service: TrackedService, now: float) -> None:
        waiting = [d for d in service.spec.depends_on
                   if self._services[d].policy.state != policy.READY]
        if waiting:
            service.detail = f"waiting for {', '.join(waiting)} to be ready"
            return
        self._prepare_dirs()
        try:
            self._supervisor.start(service.spec.name)
        except SupervisorError as exc:
            service.detail = str(exc)
            log.error("%s could not be started: %s", service.spec.name, exc)
            return
        log.info("%s started by the hub", service.spec.name)
        self.startup.started()
        self._resync_soon(now)

    # --- acting -------------------------------------------------------------------

    def _apply(self, service: TrackedService, actions: list[policy.Action]) -> None:
        name = service.spec.name
        service.captured = ""
        for action in actions:
            if action.kind == policy.CAPTURE:
                path = self._incidents.capture(name, service.pid, action.detail,
                                               service.spec.python)
                service.last_incident = service.captured = str(path)
                log.warning("%s %s: %s; incident %s", name, action.event, action.detail, path)
            elif self._pods and action.kind in (policy.KILL, policy.STOP, policy.START):
                self._leave_to_kubernetes(service, action)
            elif action.kind == policy.KILL:
                self._kill(service)
            elif action.kind == policy.STOP:
                self._stop_for_backoff(service)
            elif action.kind == policy.START:
                self._start_after_stop(service)
            elif action.kind == policy.EVENT:
                service.detail = action.detail
                self._emit(service, action)

    def _leave_to_kubernetes(self, service: TrackedService, action: policy.Action) -> None:
        """Kubernetes restarts pods (their liveness probes): the hub only keeps watching."""
        log.info("%s: %s left to Kubernetes (%s)", service.spec.name, action.kind,
                 action.detail or "backoff")
        if service.monitor:
            service.monitor.resume()

    def _start_after_stop(self, service: TrackedService) -> None:
        """A backoff start must not race the stop that began the backoff."""
        now = self._clock()
        if service.stopping is not None and service.stopping.is_alive():
            service.policy.next_start = now + _RESYNC_SOON * 5
            return
        self._start_when_ready(service, now)

    def _restart_dependents(self, name: str) -> None:
        """Dependents whose edge says so restart once NAME is ready again after a restart."""
        for dependent in self._services.values():
            if name in dependent.spec.restart_with and dependent.pid > 0:
                self._events.emit(dependent.spec.name, Kind.RESTARTED_WITH, Severity.INFO,
                                  f"restarted because {name} restarted", cause=name)
                self._kill(dependent)

    def _kill(self, service: TrackedService) -> None:
        """SIGKILL the whole process group; supervisord sees the exit and respawns it."""
        pid = service.pid
        if pid <= 0:
            return
        service.killed.add(pid)
        if service.monitor:
            service.monitor.pause()
        self._prepare_dirs()  # supervisord respawns it at once: its directories must exist
        try:
            os.killpg(pid, signal.SIGKILL)  # supervisord makes each program a group leader
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, signal.SIGKILL)
        self._resync_soon(self._clock())

    def _prepare_dirs(self) -> None:
        """Recreate missing state directories (owner and mode as at start) before a
        (re)start, so an `rm -rf var/data/redis` cannot keep a service from starting."""
        try:
            runtime.prepare_dirs(self._settings)
        except OSError as exc:
            log.error("cannot recreate the state directories: %s", exc)

    def _stop_for_backoff(self, service: TrackedService) -> None:
        """Stop the program in supervisord so it stays down until the hub's backoff ends."""
        if service.monitor:
            service.monitor.pause()
        name, pid = service.spec.name, service.pid

        def stop() -> None:
            try:
                self._supervisor.stop(name)
            except SupervisorError as exc:
                log.error("cannot stop %s for backoff: %s", name, exc)

        service.stopping = threading.Thread(target=stop, name=f"stop-{name}", daemon=True)
        service.stopping.start()
        # A hung process may never act on SIGTERM: kill it so the stop completes now.
        if pid > 0 and service.program in _RUNNING:
            self._kill(service)

    def _emit(self, service: TrackedService, action: policy.Action) -> None:
        assert action.event is not None, action
        extra: dict[str, Any] = {}
        severity, detail = action.severity, action.detail
        cause = self._root_cause(service.spec)
        if cause and action.event not in (Kind.READY, Kind.RECOVERED):
            extra["cause"] = cause
            severity = Severity.INFO
            detail += f" (caused by {cause}: {self._services[cause].policy.incident})"
        if service.captured:
            extra["incident"] = service.captured
        if service.onset:
            extra["onset"] = service.onset  # the alert router's window starts there
        self._events.emit(service.spec.name, action.event, severity, detail, **extra)

    def _root_cause(self, spec: ServiceSpec) -> str | None:
        """The first dependency (transitively) with an open incident."""
        for name in spec.depends_on:
            dependency = self._services[name]
            if dependency.policy.incident:
                return name
            deeper = self._root_cause(dependency.spec)
            if deeper:
                return deeper
        return None


def _pid_of(service: TrackedService) -> Callable[[], int]:
    return lambda: service.pid


def policy_config(settings: Settings) -> policy.PolicyConfig:
    """The restart policy's timings, as config.env and .env set them."""
    return policy.PolicyConfig(
        backoff_initial=settings.restart_backoff_initial,
        backoff_max=settings.restart_backoff_max,
        jitter=settings.restart_backoff_jitter,
        stable_period=settings.restart_stable_period,
        flap_restarts=settings.flap_restarts,
        flap_window=settings.flap_window,
        resolve_after=settings.incident_resolve_after,
        loop_resolve_after=settings.loop_resolve_after,
        ready_timeout=settings.service_ready_timeout,
    )


def build_services(
    settings: Settings,
    registry: tuple[ServiceSpec, ...],
    make_monitor: Callable[[ServiceSpec, Callable[[], int]], Monitor | None],
) -> dict[str, TrackedService]:
    """A tracked service per registry entry, in start order, each with its policy."""
    config = policy_config(settings)
    services: dict[str, TrackedService] = {}
    for spec in start_order(registry):
        tracked = TrackedService(spec, policy.ServicePolicy(spec.name, config, spec.critical), None)
        tracked.monitor = make_monitor(spec, _pid_of(tracked))
        if spec.autostart:  # the hub itself: ready while this loop runs
            tracked.policy.ready(time.monotonic())
            tracked.pid, tracked.detail = os.getpid(), "ready"
        services[spec.name] = tracked
    return services
