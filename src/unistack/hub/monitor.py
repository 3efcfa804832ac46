"""Monitors: one thread per service running its liveness and readiness probes on their
own schedules, so a probe that hangs delays only its own service.

A monitor turns probe results into verdicts with thresholds and posts them to the hub:
`ready`; `not_ready` (readiness failed THRESHOLD times in a row); `degraded` (the same,
where the service says a restart cannot fix it); `hung` (liveness failed THRESHOLD times
in a row with evidence of no progress: the process is stopped or in uninterruptible
sleep, or gained no CPU time across the failed probes); and `busy` (liveness fails but
the process gains CPU: making progress, so DEGRADED, never killed before BUSY_GRACE, and
for Redis only after its own remedy, SCRIPT KILL / FUNCTION KILL). A service whose
dependency is not ready is waiting, never judged hung. After a first failure a monitor
confirms at once instead of waiting a whole interval, so detection stays fast.

A service in another pod (Kubernetes mode: no process on this host, pid 0) offers no
evidence of progress: refusing connections past the threshold is `gone` (it is down;
Kubernetes restarts it), not answering in time is `hung`. Either way the monitor keeps
probing, to see it come back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import psutil

from unistack.config import ProbeTiming
from unistack.probes import Probe, ProbeResult

_CONFIRM_DELAY = 0.05  # seconds between a failure and its confirmation probe
_SETTLING_INTERVAL = 0.02  # readiness cadence while a service is starting
_PROGRESS_SHARE = 0.05  # CPU (share of one core) across failed probes that is progress
_NO_PROGRESS = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_DISK_SLEEP)
_BUSY_REPORT_EVERY = 1.0  # seconds between two busy verdicts (each updates the detail)
_REMEDY_WAIT = 1.0  # seconds a busy service gets after its own remedy before a kill
_REPAIR_EVERY = 5.0  # seconds between two repairs of a service that cannot serve


class Seen(StrEnum):
    """What a monitor concluded of its service (a Verdict's kind)."""

    READY = "ready"  # passes readiness
    NOT_READY = "not_ready"  # alive, failing readiness; a restart may help
    DEGRADED = "degraded"  # alive, cannot serve for a reason a restart would not fix
    BUSY = "busy"  # misses probes while gaining CPU: not hung
    HUNG = "hung"  # no answer and no progress
    GONE = "gone"  # in its own pod, refusing connections: down


class Verdict(NamedTuple):
    service: str
    kind: Seen
    detail: str
    latency: float
    onset: float = 0.0  # hung: epoch seconds the first unanswered probe was sent


class ProcessSample(NamedTuple):
    state: str  # psutil status: running, sleeping, disk-sleep, stopped, zombie, ...
    cpu: float  # user + system seconds so far
    at: float = 0.0  # monotonic seconds of the sample


def sample_process(pid: int) -> ProcessSample | None:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return ProcessSample(process.status(), times.user + times.system, time.monotonic())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def cpu_share(before: ProcessSample | None, after: ProcessSample | None) -> float | None:
    """The share of one core the process used between two samples when that is evidence
    of progress; None when it is not: gone, stopped, in uninterruptible sleep, or idle."""
    if before is None or after is None or after.state in _NO_PROGRESS:
        return None
    share = (after.cpu - before.cpu) / max(after.at - before.at, 1e-3)
    return share if share >= _PROGRESS_SHARE else None


def is_busy(before: ProcessSample | None, after: ProcessSample | None) -> bool:
    """Making progress between two samples: slow or busy, not hung."""
    return cpu_share(before, after) is not None


@dataclass(frozen=True)
class Patience:
    """How a monitor treats a service that is not answering but may not be hung."""

    busy_grace: float = 10.0  # seconds a busy service may miss its probes before a kill
    remedy: Callable[[], str] | None = None  # the service's own way out (Redis SCRIPT KILL)
    repair: Callable[[], str] | None = None  # tried while it cannot serve (Redis: save again)
    waiting: Callable[[], str | None] = lambda: None  # the dependency it waits for, if any


class Monitor:
    """Probes one service in its own thread and posts verdicts when they change."""

    def __init__(
        self,
        service: str,
        probes: tuple[Probe, Probe],
        timings: tuple[ProbeTiming, ProbeTiming],
        post: Callable[[Verdict], None],
        pid: Callable[[], int],
        *,
        patience: Patience = Patience(),
    ) -> None:
        self.service = service
        self._liveness, self._readiness = probes
        self._live_timing, self._ready_timing = timings
        self._post = post
        self._pid = pid
        self._patience = patience
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused = True
        self._settling = True
        self._last_ready: bool | None = None
        self._clock: Callable[[], float] = time.time
        self._onset = 0.0  # when the current run of liveness failures began (epoch)
        self._run_start: ProcessSample | None = None  # the process at that first failure
        self._busy_told = 0.0  # monotonic time of the last busy verdict (0: none yet)
        self._remedied = 0.0  # monotonic time the service's own remedy was tried
        self._remedy_said = ""
        self._repaired = -_REPAIR_EVERY  # monotonic time of the last repair
        self._thread = threading.Thread(target=self._run, name=f"monitor-{service}", daemon=True)

    # --- control from the hub -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def resume(self) -> None:
        """Probe again, fast, until the service is ready (after a spawn or restart)."""
        self._paused, self._settling, self._last_ready = False, True, None
        self._wake.set()

    def pause(self) -> None:
        """Stop probing (the process is gone or being restarted)."""
        self._paused = True

    # --- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        live_failures = ready_failures = 0
        while not self._stop.is_set():
            if self._paused:
                self._wake.wait()
                self._wake.clear()
                live_failures = ready_failures = 0
                continue
            probed_at = self._clock()
            if not live_failures:
                # Healthy path: one readiness probe; passing it proves liveness too.
                result = self._readiness.check()
                if result.ok:
                    ready_failures = 0
                    self._report(True, result)
                    self._sleep(self._ready_timing.interval)
                    continue
                ready_failures += 1
                if ready_failures >= self._ready_timing.threshold:
                    self._report(False, result)
                    self._repair(result)
                if not result.answered and not self._settling:
                    # No answer at all is the first liveness failure; confirm at once.
                    self._onset = probed_at
                    live_failures = self._judge(1, result)
                    self._sleep(_CONFIRM_DELAY)
                    continue
            live = self._liveness.check()
            if live.ok:
                live_failures = 0
                self._sleep(self._ready_timing.interval)
                continue
            if not live_failures:
                self._onset = probed_at
            live_failures = self._judge(live_failures + 1, live)
            self._sleep(_CONFIRM_DELAY)

    def _judge(self, failures: int, live: ProbeResult) -> int:
        """Liveness failure number FAILURES: hung, busy or not yet; the new count."""
        sample = sample_process(self._pid())
        if failures == 1:
            self._run_start, self._busy_told, self._remedied = sample, 0.0, 0.0
        if self._settling or failures < self._live_timing.threshold:
            return failures
        if self._patience.waiting():
            return failures  # its dependency is not ready: waiting, not hung
        if not self._pid():
            return self._elsewhere(failures, live)
        share = cpu_share(self._run_start, sample)
        if share is None:
            state = sample.state if sample else "gone"
            return self._hung(f"liveness failed {failures} times in a row ({live.detail}); "
                              f"process state {state}", live)
        return self._busy(failures, share, live)

    def _busy(self, failures: int, share: float, live: ProbeResult) -> int:
        """A process that gains CPU is making progress: DEGRADED, killed only past grace."""
        now = time.monotonic()
        began = self._run_start.at if self._run_start else now
        took = now - began
        detail = f"busy: {share:.0%} CPU for {took:.1f} s ({live.detail})"
        if now - self._busy_told >= _BUSY_REPORT_EVERY:
            self._busy_told = now
            self._last_ready = False  # so that its recovery is posted as ready
            self._post(Verdict(self.service, Seen.BUSY, detail, live.latency, self._onset))
        grace = self._patience.busy_grace
        if took < grace:
            return failures
        remedy = self._patience.remedy
        if remedy is not None and not self._remedied:
            self._remedied = now
            self._remedy_said = remedy()
            return failures
        if self._remedied and now - self._remedied < _REMEDY_WAIT:
            return failures
        tried = f"; its own remedy said: {self._remedy_said}" if self._remedied else ""
        return self._hung(f"{detail}, past BUSY_GRACE={grace:g} s{tried}", live)

    def _elsewhere(self, failures: int, live: ProbeResult) -> int:
        """No process on this host to read: down when refused, hung when silent; probe
        on (settling again) until it answers."""
        kind = Seen.GONE if "refused" in live.detail else Seen.HUNG
        self._settling, self._last_ready = True, None
        self._post(Verdict(self.service, kind, f"liveness failed {failures} times in a row "
                           f"({live.detail}); it runs in its own pod: Kubernetes restarts it",
                           live.latency, self._onset))
        return 0

    def _hung(self, detail: str, live: ProbeResult) -> int:
        self._paused = True
        self._post(Verdict(self.service, Seen.HUNG, detail, live.latency, self._onset))
        return 0

    def _report(self, ready: bool, result: ProbeResult) -> None:
        if ready:
            self._settling = False
        if ready == self._last_ready:
            return
        self._last_ready = ready
        kind = Seen.READY if ready else Seen.NOT_READY if result.restart_helps else \
            Seen.DEGRADED
        self._post(Verdict(self.service, kind, result.detail, result.latency))

    def _repair(self, result: ProbeResult) -> None:
        """While it cannot serve for a reason a restart would not fix, try its repair."""
        repair, now = self._patience.repair, time.monotonic()
        if repair is None or result.restart_helps or now - self._repaired < _REPAIR_EVERY:
            return
        self._repaired = now
        repair()

    def _settling_or(self, interval: float) -> float:
        return _SETTLING_INTERVAL if self._settling else interval

    def _sleep(self, seconds: float) -> None:
        if self._wake.wait(self._settling_or(seconds)):
            self._wake.clear()
