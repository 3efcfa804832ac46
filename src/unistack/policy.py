"""Restart policy: pure decisions over one service's history. No I/O, no clock reads.

The hub feeds each `ServicePolicy` what it observed, with a timestamp, and applies the
actions it returns. This module owns the service states and every transition between
them, exponential backoff with jitter, the flap guard, and incidents (one event when an
incident opens, one when it escalates to LOOPING, one when it resolves).
Like supervisor's states.py it depends on nothing but the standard library (and the
leaf module that names event kinds).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from unistack.event import Kind, Severity


class State(StrEnum):
    """A service's state as the hub sees it: the `state` of the status document."""

    STOPPED = "STOPPED"  # not running, not wanted yet (dependencies not ready) or stopped
    STARTING = "STARTING"  # spawned, not ready yet
    READY = "READY"  # passes its readiness probe
    UNHEALTHY = "UNHEALTHY"  # alive (liveness passes) but failing readiness
    # alive but not serving, and never killed for it: busy (gaining CPU while its probes
    # fail; killed only past BUSY_GRACE, as hung), or a fault a restart cannot fix (a
    # failed save, a model failing its checksum)
    DEGRADED = "DEGRADED"
    RESTARTING = "RESTARTING"  # crashed or killed as hung; supervisord is respawning it
    LOOPING = "LOOPING"  # restarted too often: the hub restarts it with backoff
    FAILED = "FAILED"  # supervisord gave up (FATAL); the hub restarts it with backoff
    # stopped on purpose by an operator's command (a restore): no restarts, no incidents
    MAINTENANCE = "MAINTENANCE"


(STOPPED, STARTING, READY, UNHEALTHY, DEGRADED, RESTARTING, LOOPING, FAILED,
 MAINTENANCE) = STATES = tuple(State)
# Incidents a later, worse failure of the same service escalates (one more event).
_ESCALATES = {Kind.BUSY: (Kind.HUNG, Kind.CRASHED, Kind.FAILED),
              Kind.DEGRADED: (Kind.HUNG, Kind.CRASHED, Kind.FAILED)}

class Act(StrEnum):
    """What the hub does about a service (an Action's kind)."""

    START = "start"  # ask supervisord to spawn the program
    KILL = "kill"  # SIGKILL the process group; supervisord respawns it
    STOP = "stop"  # stop the program in supervisord, so only the hub restarts it
    CAPTURE = "capture"  # write an incident file before acting
    EVENT = "event"  # tell the event log


START, KILL, STOP, CAPTURE, EVENT = tuple(Act)


class Action(NamedTuple):
    kind: Act
    event: Kind | None = None  # for EVENT (and CAPTURE, KILL): what happened
    severity: Severity = Severity.INFO
    detail: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    """Built from Settings only (hub.reconcile.policy_config): no defaults of its own."""

    backoff_initial: float
    backoff_max: float
    jitter: float
    stable_period: float  # ready this long: forget past restarts, reset backoff
    flap_restarts: int  # this many restarts ...
    flap_window: float  # ... within this window is a loop
    # ready this long resolves an incident of a process that kept running (unhealthy,
    # busy, degraded); a new process's first ready resolves a crash, hang or failed start
    resolve_after: float
    loop_resolve_after: float  # ready this long resolves a LOOPING incident
    ready_timeout: float  # a spawned service not ready by then is restarted


class ServicePolicy:
    """The state of one service and what to do next. Every method returns actions."""

    def __init__(
        self, name: str, config: PolicyConfig, critical: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._config = config
        self._critical = critical
        self._rng = rng
        self.state: State = STOPPED
        self.since = 0.0
        self.restarts: deque[float] = deque()
        self.next_start: float | None = None  # a start the hub scheduled (backoff)
        self.incident: Kind | None = None  # kind of the open incident
        self.incident_since = 0.0
        self._looping_announced = False
        self._started_at = 0.0
        self._ready_since: float | None = None
        self._loop_failures = 0
        self._last_detail = ""
        self._adopting = False
        self._replaced = False  # a new process started since the last failure

    # --- observations -------------------------------------------------------------

    def started(self, now: float) -> list[Action]:
        """The program was spawned (by the hub, or respawned by supervisord)."""
        self._started_at = now
        self._ready_since = None
        self._replaced = True
        if self.state in (STOPPED, FAILED):
            self._move(STARTING, now)  # STOPPED/FAILED -> STARTING
        return []

    def stopping(self, now: float) -> list[Action]:
        """The hub stops it on request (an operator's restart, a rescue): not ready, so its
        dependents wait instead of being judged hung, and no failure of its own."""
        self._started_at = now
        self._ready_since = None
        self._move(RESTARTING, now)  # any -> RESTARTING: stopped on request, back soon
        return []

    def maintenance(self, now: float) -> list[Action]:
        """An operator's command holds it (stopped, its files replaced): nothing it does
        meanwhile is a failure, and no start is due."""
        self.next_start = None
        self._ready_since = None
        self._move(MAINTENANCE, now)  # any -> MAINTENANCE
        return []

    def maintenance_over(self, now: float) -> list[Action]:
        """The hold ended: start it again like a first start (its ready timeout from now)."""
        self._started_at = now
        self._move(STOPPED, now)  # MAINTENANCE -> STOPPED: the hub starts it
        return []

    def adopted(self, now: float, running_since: float) -> list[Action]:
        """A new hub found the program already running: probe it, restart nothing."""
        # Probe it before judging it: its ready timeout starts now, not when it was spawned.
        self._started_at = max(now, running_since)
        self._adopting = True
        self._move(STARTING, now)  # STOPPED -> STARTING, until its probe answers
        return []

    def ready(self, now: float) -> list[Action]:
        if self._ready_since is None:
            self._ready_since = now
        if self.state == READY:
            return []
        first_start = self.state == STARTING and self.incident is None
        self._move(READY, now)  # STARTING/RESTARTING/UNHEALTHY/DEGRADED/LOOPING -> READY
        if self.incident is not None and self._replaced and not self._looping_announced:
            # A new process answering its readiness probe is confirmation enough: the
            # good news goes out now, not resolve_after later. Flaps are the router's.
            return self._recover(0.0)
        if first_start and self._adopting:
            self._adopting = False
            return [Action(EVENT, Kind.ADOPTED, Severity.INFO,
                           "running before this hub started; ready")]
        if first_start:
            return [Action(EVENT, Kind.READY, Severity.INFO, "ready")]
        return []

    def not_ready(self, now: float, detail: str) -> list[Action]:
        """The readiness probe failed past its threshold while the process lives."""
        self._ready_since = None
        if self.state == READY:
            self._replaced = False
            self._move(UNHEALTHY, now)  # READY -> UNHEALTHY: alive, not serving
            return self._open(Kind.UNHEALTHY, Severity.WARNING, f"not ready: {detail}", now)
        self._last_detail = detail
        return []

    def busy(self, now: float, detail: str) -> list[Action]:
        """Its probes fail while it runs and gains CPU: making progress, not hung."""
        if self.state in (RESTARTING, STOPPED, LOOPING, FAILED):
            return []
        self._ready_since = None
        self._replaced = False
        self._move(DEGRADED, now)  # READY/UNHEALTHY/STARTING -> DEGRADED: busy
        return self._open(Kind.BUSY, Severity.WARNING, detail, now)

    def degraded(self, now: float, detail: str) -> list[Action]:
        """Alive and not ready for a reason the service says a restart cannot fix."""
        if self.state in (RESTARTING, STOPPED, LOOPING, FAILED):
            return []
        self._ready_since = None
        self._replaced = False
        self._move(DEGRADED, now)  # READY/UNHEALTHY/STARTING -> DEGRADED: not fixable here
        return self._open(Kind.DEGRADED, self._severity, detail, now)

    def held(self, now: float) -> list[Action]:
        """A dependency is not ready: waiting is not hanging, so its ready timeout starts
        only once its dependencies are ready."""
        if self.state in (STARTING, RESTARTING, LOOPING):
            self._started_at = max(self._started_at, now)
        return []

    def hung(self, now: float, detail: str) -> list[Action]:
        """The liveness probe failed past its threshold while the process lives."""
        if self.state in (RESTARTING, STOPPED):
            return []
        return self._restart(Kind.HUNG, detail, now, capture=True)

    def exited(self, now: float, detail: str) -> list[Action]:
        """The process died without being asked to (crash, OOM kill, kill -9)."""
        if self.state == STOPPED:
            return []
        return self._restart(Kind.CRASHED, detail, now, capture=False)

    def fatal(self, now: float, detail: str) -> list[Action]:
        """supervisord gave up spawning it (FATAL): the hub takes over with backoff."""
        if self.next_start is not None:
            return []
        self._ready_since = None
        self._replaced = False
        self._record_restart(now)
        actions = self._open(Kind.FAILED, self._severity, detail, now)
        self._move(FAILED, now)  # any -> FAILED: supervisord stopped trying
        if self._flapping():
            actions += self._announce_loop(detail)
        return actions + self._schedule(now)

    def stopped(self, now: float) -> list[Action]:
        """An operator (or `stop`) stopped it: forget the incident, plan nothing."""
        self._move(STOPPED, now)  # any -> STOPPED
        self.next_start = None
        self._ready_since = None
        return []

    def tick(self, now: float) -> list[Action]:
        """Time passed: due starts, incident resolution, backoff reset."""
        if self.next_start is not None and now >= self.next_start:
            self.next_start = None
            self._started_at = now
            return [Action(START, detail="backoff elapsed")]
        waiting = (self.state in (STARTING, RESTARTING, LOOPING) and self._ready_since is None
                   and self.next_start is None)
        if waiting and now - self._started_at > self._config.ready_timeout:
            why = f"not ready {self._config.ready_timeout:g} s after start"
            detail = f"{why}: {self._last_detail}" if self._last_detail else why
            return self._restart(Kind.HUNG, detail, now, capture=True)
        stable_for = now - self._ready_since if self._ready_since is not None else -1.0
        actions: list[Action] = []
        if self.incident and self.state == READY and stable_for >= self._resolve_period():
            actions += self._recover(stable_for)
        if stable_for >= self._config.stable_period:
            self.restarts.clear()  # stable: forget old restarts, backoff starts over
            self._loop_failures = 0
        return actions

    # --- decisions ----------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Delay before hub-scheduled restart ATTEMPT (1, 2, ...): doubling, jittered, capped."""
        base = self._config.backoff_initial * 2.0 ** min(attempt - 1, 64)
        spread = 1 + self._config.jitter * (2 * self._rng() - 1)
        return float(min(self._config.backoff_max, base * spread))

    def _recover(self, stable_for: float) -> list[Action]:
        stable = f"; stable {stable_for:.1f} s" if stable_for else "; a new process is ready"
        actions = [Action(EVENT, Kind.RECOVERED, Severity.INFO,
                          f"ready again after {self.incident}{stable}")]
        self.incident = None
        self._looping_announced = False
        return actions

    def _restart(self, kind: Kind, detail: str, now: float, capture: bool) -> list[Action]:
        self._ready_since = None
        self._replaced = False
        self._started_at = now  # a new process is on its way: its ready timeout starts now
        self._record_restart(now)
        severity = self._severity
        actions = [Action(CAPTURE, kind, severity, detail)] if capture else []
        actions += self._open(kind, severity, detail, now)
        if self._flapping():
            self._move(LOOPING, now)  # any -> LOOPING: too many restarts in the window
            return actions + self._announce_loop(detail) + [Action(STOP)] + self._schedule(now)
        self._move(RESTARTING, now)  # READY/UNHEALTHY/DEGRADED/STARTING -> RESTARTING
        return actions + ([Action(KILL, kind, severity, detail)] if kind == Kind.HUNG else [])

    def _schedule(self, now: float) -> list[Action]:
        self._loop_failures += 1
        self.next_start = now + self.backoff(self._loop_failures)
        return []

    def _announce_loop(self, detail: str) -> list[Action]:
        if self._looping_announced:
            return []
        self._looping_announced = True
        window = self._config.flap_window
        return [Action(EVENT, Kind.LOOPING, self._severity,
                       f"{len(self.restarts)} restarts within {window:g} s; restarting with "
                       f"backoff (cap {self._config.backoff_max:g} s); last: {detail}")]

    def _open(self, kind: Kind, severity: Severity, detail: str, now: float) -> list[Action]:
        if self.incident is not None and kind not in _ESCALATES.get(self.incident, ()):
            return []  # one event per incident, not one per failure
        self.incident, self.incident_since = kind, now
        return [Action(EVENT, kind, severity, detail)]

    @property
    def _severity(self) -> Severity:
        return Severity.CRITICAL if self._critical else Severity.WARNING

    def _record_restart(self, now: float) -> None:
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > self._config.flap_window:
            self.restarts.popleft()

    def _flapping(self) -> bool:
        return self._looping_announced or len(self.restarts) >= self._config.flap_restarts

    def _resolve_period(self) -> float:
        if self._looping_announced:
            return self._config.loop_resolve_after
        return self._config.resolve_after

    def _move(self, state: State, now: float) -> None:
        if state != self.state:
            self.state, self.since = state, now


class Threshold:
    """A level with hysteresis: raised when VALUE crosses LIMIT, cleared only once it is
    back past LIMIT by MARGIN, so a value hovering at the line raises one event, not many.
    `above=False` watches for values falling below the limit (free disk)."""

    def __init__(self, limit: float, margin: float, above: bool = True) -> None:
        self.limit = limit
        self.margin = margin
        self.above = above
        self.raised = False

    def update(self, value: float) -> str | None:
        """"raised" or "cleared" when the level changes, else None."""
        sign = 1 if self.above else -1
        over = sign * (value - self.limit)
        if not self.raised and over >= 0:
            self.raised = True  # OK -> RAISED: crossed the limit
            return "raised"
        if self.raised and over < -self.margin:
            self.raised = False  # RAISED -> OK: back past the limit by the margin
            return "cleared"
        return None
