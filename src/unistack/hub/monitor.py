"""Monitors: one thread per service running its liveness and readiness probes on their
own schedules, so a probe that hangs delays only its own service.

A monitor turns probe results into verdicts with thresholds and posts them to the hub:
`ready`, `not_ready` (readiness failed THRESHOLD times in a row) and `hung` (liveness
failed THRESHOLD times in a row while the process is not busy). After a first failure it
confirms at once instead of waiting a whole interval, so detection is fast; a process
that is running and burning CPU is busy, not hung, and gets a longer allowance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import psutil

from unistack.config import ProbeTiming
from unistack.probes import Probe, ProbeResult

_CONFIRM_DELAY = 0.05  # seconds between a failure and its confirmation probe
_SETTLING_INTERVAL = 0.02  # readiness cadence while a service is starting
_BUSY_ALLOWANCE = 3  # a busy process may fail liveness this many times the threshold


class Verdict(NamedTuple):
    service: str
    kind: str  # ready, not_ready, hung
    detail: str
    latency: float
    onset: float = 0.0  # hung: epoch seconds the first unanswered probe was sent


class ProcessSample(NamedTuple):
    state: str  # /proc state letter: R running, S sleeping, D disk, T stopped, Z zombie
    cpu: float  # user + system seconds so far


def sample_process(pid: int) -> ProcessSample | None:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return ProcessSample(process.status(), times.user + times.system)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def is_busy(before: ProcessSample | None, after: ProcessSample | None) -> bool:
    """Running and using CPU between two samples: slow, not hung."""
    if before is None or after is None:
        return False
    return after.state == psutil.STATUS_RUNNING and after.cpu > before.cpu


class Monitor:
    """Probes one service in its own thread and posts verdicts when they change."""

    def __init__(
        self,
        service: str,
        probes: tuple[Probe, Probe],
        timings: tuple[ProbeTiming, ProbeTiming],
        post: Callable[[Verdict], None],
        pid: Callable[[], int],
    ) -> None:
        self.service = service
        self._liveness, self._readiness = probes
        self._live_timing, self._ready_timing = timings
        self._post = post
        self._pid = pid
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused = True
        self._settling = True
        self._last_ready: bool | None = None
        self._clock: Callable[[], float] = time.time
        self._onset = 0.0  # when the current run of liveness failures began
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
        sample = None
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
                if not result.answered and not self._settling:
                    # No answer at all is the first liveness failure; confirm at once.
                    self._onset = probed_at
                    live_failures, sample = self._judge(1, result, None)
                    self._sleep(_CONFIRM_DELAY)
                    continue
            live = self._liveness.check()
            if live.ok:
                live_failures = 0
                self._sleep(self._ready_timing.interval)
                continue
            if not live_failures:
                self._onset = probed_at
            live_failures, sample = self._judge(live_failures + 1, live, sample)
            self._sleep(_CONFIRM_DELAY)

    def _judge(
        self, failures: int, live: ProbeResult, previous: ProcessSample | None
    ) -> tuple[int, ProcessSample | None]:
        sample = sample_process(self._pid())
        threshold = self._live_timing.threshold
        if is_busy(previous, sample):
            threshold *= _BUSY_ALLOWANCE
        if self._settling or failures < threshold:
            return failures, sample
        state = sample.state if sample else "gone"
        self._paused = True
        self._post(Verdict(self.service, "hung",
                           f"liveness failed {failures} times in a row ({live.detail}); "
                           f"process state {state}", live.latency, self._onset))
        return 0, None

    def _report(self, ready: bool, result: ProbeResult) -> None:
        if ready:
            self._settling = False
        if ready == self._last_ready:
            return
        self._last_ready = ready
        self._post(Verdict(self.service, "ready" if ready else "not_ready", result.detail,
                           result.latency))

    def _settling_or(self, interval: float) -> float:
        return _SETTLING_INTERVAL if self._settling else interval

    def _sleep(self, seconds: float) -> None:
        if self._wake.wait(self._settling_or(seconds)):
            self._wake.clear()
