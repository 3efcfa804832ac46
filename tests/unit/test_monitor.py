"""hub.monitor: verdicts from scripted probes, and busy-vs-hung on real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from harness.waiting import wait_for
from unistack.config import ProbeTiming
from unistack.hub.monitor import (
    Monitor,
    Patience,
    ProcessSample,
    Seen,
    Verdict,
    cpu_share,
    is_busy,
    sample_process,
)
from unistack.probes import ProbeResult

OK = ProbeResult(True, "ready", 0.001)
REFUSED = ProbeResult(False, "connection refused", 0.001, answered=False)
UNAVAILABLE = ProbeResult(False, "GET /-/ready answered HTTP 503", 0.001)
FAST = ProbeTiming(interval=0.01, timeout=0.1, threshold=2)




def holds(condition: Callable[[], object], seconds: float) -> bool:
    """CONDITION stays true for SECONDS (for what must not happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.005)
    return bool(condition())


class ScriptedProbe:
    """Returns SCRIPT's results in turn, then its last one forever; counts and times calls."""

    def __init__(self, *script: ProbeResult) -> None:
        self._script = list(script)
        self._lock = threading.Lock()
        self.times: list[float] = []
        self.wall: list[float] = []  # the same calls in epoch seconds

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.times)

    def check(self) -> ProbeResult:
        with self._lock:
            self.times.append(time.monotonic())
            self.wall.append(time.time())
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]


class Posts:
    """The hub's inbox: every verdict, with the probe call counts when it was posted."""

    def __init__(self, *probes: ScriptedProbe) -> None:
        self.verdicts: list[Verdict] = []
        self.counts: list[tuple[int, ...]] = []
        self._probes = probes

    def __call__(self, verdict: Verdict) -> None:
        self.counts.append(tuple(p.calls for p in self._probes))
        self.verdicts.append(verdict)

    def kinds(self) -> list[str]:
        return [v.kind for v in list(self.verdicts)]




@pytest.fixture
def sleeper(spawn: Callable[..., subprocess.Popen[bytes]]) -> int:
    """The pid of an idle child: alive, sleeping, using no CPU."""
    return spawn("sleep", "60").pid


@pytest.fixture
def monitors() -> Iterator[Callable[..., Monitor]]:
    started: list[Monitor] = []

    def start(
        liveness: ScriptedProbe, readiness: ScriptedProbe, post: Posts, pid: int, *,
        live: ProbeTiming = FAST, ready: ProbeTiming = FAST,
    ) -> Monitor:
        monitor = Monitor("redis", (liveness, readiness), (live, ready), post, lambda: pid)
        monitor.start()
        monitor.resume()
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        monitor.stop()


def test_a_new_monitor_is_paused_until_resumed(sleeper: int) -> None:
    liveness, readiness = ScriptedProbe(OK), ScriptedProbe(OK)
    post = Posts()
    monitor = Monitor("redis", (liveness, readiness), (FAST, FAST), post, lambda: sleeper)
    monitor.start()
    try:
        assert holds(lambda: readiness.calls == 0, 0.1)
        monitor.resume()
        wait_for(lambda: post.kinds() == ["ready"])
    finally:
        monitor.stop()


def test_ready_is_posted_once_while_it_stays_ready(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    liveness, readiness = ScriptedProbe(OK), ScriptedProbe(OK)
    post = Posts()
    monitors(liveness, readiness, post, sleeper)
    wait_for(lambda: readiness.calls >= 10)
    assert post.kinds() == ["ready"]
    assert post.verdicts[0] == Verdict("redis", Seen.READY, "ready", OK.latency)
    assert liveness.calls == 0  # a passing readiness probe proves liveness too


def test_not_ready_after_the_readiness_threshold_once(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    liveness, readiness = ScriptedProbe(OK), ScriptedProbe(OK, UNAVAILABLE)
    post = Posts(readiness)
    monitors(liveness, readiness, post, sleeper,
             ready=ProbeTiming(interval=0.01, timeout=0.1, threshold=3))
    wait_for(lambda: "not_ready" in post.kinds())
    wait_for(lambda: readiness.calls >= 15)
    assert post.kinds() == ["ready", "not_ready"]
    assert post.counts[1] == (1 + 3,)  # one success, then exactly THRESHOLD failures
    assert post.verdicts[1].detail == UNAVAILABLE.detail
    assert "hung" not in post.kinds()  # it answers: alive, only not ready


def test_no_answer_is_the_first_liveness_failure_confirmed_at_once(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    interval = 0.5
    liveness = ScriptedProbe(OK)
    readiness = ScriptedProbe(OK, REFUSED, OK)
    post = Posts()
    monitors(liveness, readiness, post, sleeper,
             ready=ProbeTiming(interval=interval, timeout=0.1, threshold=2))
    wait_for(lambda: liveness.calls >= 1)
    failed_at, confirmed_at = readiness.times[1], liveness.times[0]
    assert 0 < confirmed_at - failed_at < 0.1 + 0.1  # a confirmation, not a whole interval
    assert confirmed_at - failed_at < interval / 2
    assert post.kinds() == ["ready"]  # the confirmation passed: nothing to report


def test_hung_after_the_liveness_threshold_then_paused_until_resume(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    liveness, readiness = ScriptedProbe(REFUSED), ScriptedProbe(OK, REFUSED)
    post = Posts(liveness, readiness)
    monitor = monitors(liveness, readiness, post, sleeper,
                       ready=ProbeTiming(interval=0.01, timeout=0.1, threshold=5))
    wait_for(lambda: "hung" in post.kinds())
    hung = post.verdicts[post.kinds().index("hung")]
    # the unanswered readiness probe was failure 1, one liveness probe confirmed it
    assert post.counts[-1] == (1, 2)
    assert hung.service == "redis"
    assert "liveness failed 2 times in a row" in hung.detail
    assert "connection refused" in hung.detail
    assert "process state sleeping" in hung.detail
    # its onset: when the first unanswered (readiness) probe was sent, before the verdict
    assert readiness.wall[1] - 0.01 <= hung.onset <= readiness.wall[1]
    calls = (liveness.calls, readiness.calls)
    assert holds(lambda: (liveness.calls, readiness.calls) == calls, 0.2)
    assert post.kinds() == ["ready", "hung"]
    monitor.resume()
    wait_for(lambda: readiness.calls > calls[1] and liveness.calls > calls[0])


def test_liveness_failures_while_settling_are_never_hung(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    liveness, readiness = ScriptedProbe(REFUSED), ScriptedProbe(REFUSED)
    post = Posts()
    monitors(liveness, readiness, post, sleeper)
    wait_for(lambda: liveness.calls >= 10)
    assert "hung" not in post.kinds()
    assert "ready" not in post.kinds()


def test_a_service_that_was_ready_once_is_judged_after_resume_only_when_ready_again(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    liveness, readiness = ScriptedProbe(REFUSED), ScriptedProbe(OK, REFUSED)
    post = Posts()
    monitor = monitors(liveness, readiness, post, sleeper)
    wait_for(lambda: "hung" in post.kinds())
    monitor.resume()  # restarted: settling again
    seen = liveness.calls
    wait_for(lambda: liveness.calls >= seen + 10)
    assert post.kinds().count("hung") == 1


def test_stop_ends_the_thread(sleeper: int) -> None:
    before = set(threading.enumerate())
    liveness, readiness = ScriptedProbe(OK), ScriptedProbe(OK)
    monitor = Monitor("redis", (liveness, readiness), (FAST, FAST), Posts(), lambda: sleeper)
    monitor.start()
    (thread,) = [t for t in threading.enumerate() if t not in before]
    assert thread.name == "monitor-redis"
    monitor.resume()
    wait_for(lambda: readiness.calls > 0)
    monitor.stop()
    thread.join(2)
    assert not thread.is_alive()


# --- busy or hung: real processes ----------------------------------------------------


def test_a_sigstopped_child_is_stopped_and_not_busy(
    spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    child = spawn("sleep", "60")
    child.send_signal(signal.SIGSTOP)
    wait_for(lambda: (s := sample_process(child.pid)) and s.state == psutil.STATUS_STOPPED)
    first = sample_process(child.pid)
    assert first is not None
    assert first.state == "stopped"
    assert not is_busy(first, sample_process(child.pid))


def test_a_busy_looping_child_is_running_with_growing_cpu(
    spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    child = spawn(sys.executable, "-c", "while True: pass")
    first = sample_process(child.pid)
    assert first is not None
    samples: list[ProcessSample] = []

    def busy_now() -> bool:
        sample = sample_process(child.pid)
        assert sample is not None
        samples.append(sample)
        return is_busy(first, sample)

    wait_for(busy_now, timeout=5)
    assert samples[-1].state == psutil.STATUS_RUNNING
    assert samples[-1].cpu > first.cpu


def test_a_sleeping_child_is_not_busy(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    child = spawn("sleep", "60")
    wait_for(lambda: (s := sample_process(child.pid)) and s.state == psutil.STATUS_SLEEPING)
    first = sample_process(child.pid)
    time.sleep(0.05)  # an interval to measure over, not synchronisation
    second = sample_process(child.pid)
    assert first is not None
    assert second is not None
    assert second.state == "sleeping"
    assert not is_busy(first, second)


def test_a_dead_pid_has_no_sample_and_is_not_busy(
    spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    child = spawn("true")
    child.wait(5)
    assert sample_process(child.pid) is None
    running = ProcessSample(psutil.STATUS_RUNNING, 1.0)
    assert not is_busy(None, running)
    assert not is_busy(running, None)
    assert is_busy(running, ProcessSample(psutil.STATUS_RUNNING, 1.5))
    # CPU gained is progress even if the main thread sleeps at the sample (threads)
    assert is_busy(running, ProcessSample(psutil.STATUS_SLEEPING, 1.5))
    assert not is_busy(running, ProcessSample(psutil.STATUS_STOPPED, 1.5))
    assert not is_busy(running, ProcessSample(psutil.STATUS_DISK_SLEEP, 1.5))
    assert not is_busy(running, ProcessSample(psutil.STATUS_RUNNING, 1.0))


def test_cpu_share_is_progress_only_above_a_trickle() -> None:
    before = ProcessSample(psutil.STATUS_SLEEPING, 1.0, at=10.0)
    assert cpu_share(before, ProcessSample(psutil.STATUS_RUNNING, 1.5, at=11.0)) == 0.5
    # a cron tick or two over a second is an idle process, not progress
    assert cpu_share(before, ProcessSample(psutil.STATUS_SLEEPING, 1.01, at=11.0)) is None


@pytest.fixture
def spinner(spawn: Callable[..., subprocess.Popen[bytes]]) -> int:
    """The pid of a child burning one core: running and gaining CPU."""
    return spawn(sys.executable, "-c", "while True: pass").pid


def test_a_busy_service_is_degraded_not_hung_until_its_grace_ends(spinner: int) -> None:
    liveness, readiness = ScriptedProbe(REFUSED), ScriptedProbe(OK, REFUSED)
    post = Posts()
    remedies: list[float] = []

    def remedy() -> str:
        remedies.append(time.monotonic())
        return "NOTBUSY No scripts in execution right now."

    monitor = Monitor("redis", (liveness, readiness), (FAST, FAST), post, lambda: spinner,
                      patience=Patience(busy_grace=0.6, remedy=remedy))
    monitor.start()
    monitor.resume()
    try:
        wait_for(lambda: "busy" in post.kinds(), timeout=5)
        busy = post.verdicts[post.kinds().index("busy")]
        assert busy.detail.startswith("busy: ") and "% CPU for" in busy.detail
        assert "hung" not in post.kinds()
        wait_for(lambda: "hung" in post.kinds(), timeout=5)
    finally:
        monitor.stop()
    hung = post.verdicts[post.kinds().index("hung")]
    assert len(remedies) == 1 and "past BUSY_GRACE=0.6 s" in hung.detail
    assert "NOTBUSY" in hung.detail
    assert hung.onset and remedies[0] < max(liveness.times)


def test_a_service_waiting_for_its_dependency_is_never_hung(sleeper: int) -> None:
    liveness, readiness = ScriptedProbe(REFUSED), ScriptedProbe(OK, REFUSED)
    post = Posts()
    monitor = Monitor("ml_engine", (liveness, readiness), (FAST, FAST), post, lambda: sleeper,
                      patience=Patience(waiting=lambda: "redis"))
    monitor.start()
    monitor.resume()
    try:
        wait_for(lambda: liveness.calls >= 20)
    finally:
        monitor.stop()
    assert "hung" not in post.kinds()


def test_not_ready_that_a_restart_cannot_fix_is_degraded(
    monitors: Callable[..., Monitor], sleeper: int
) -> None:
    corrupt = ProbeResult(False, "GET /ready answered HTTP 503: model default v1 failed its "
                          "checksum", 0.001, restart_helps=False)
    liveness, readiness = ScriptedProbe(OK), ScriptedProbe(OK, corrupt)
    post = Posts()
    monitors(liveness, readiness, post, sleeper)
    wait_for(lambda: "degraded" in post.kinds())
    assert post.kinds() == ["ready", "degraded"]
    assert "checksum" in post.verdicts[1].detail


TIMED_OUT = ProbeResult(False, "timed out", 0.1, answered=False)


@pytest.mark.parametrize(("failure", "kind"), [(REFUSED, "gone"), (TIMED_OUT, "hung")])
def test_a_service_in_another_pod_is_gone_or_hung_and_probed_on(
    monitors: Callable[..., Monitor], failure: ProbeResult, kind: str
) -> None:
    liveness, readiness = ScriptedProbe(failure), ScriptedProbe(OK, OK, failure)
    post = Posts(liveness, readiness)
    monitors(liveness, readiness, post, 0)  # pid 0: no process on this host
    wait_for(lambda: kind in post.kinds())
    verdict = post.verdicts[post.kinds().index(kind)]
    assert "Kubernetes restarts it" in verdict.detail and failure.detail in verdict.detail
    assert "process state" not in verdict.detail  # nothing local to read
    assert post.kinds().count(kind) == 1  # once per outage, however long it lasts
    calls = readiness.calls + liveness.calls
    wait_for(lambda: readiness.calls + liveness.calls > calls + 5)  # never paused
    ScriptedProbe.__init__(liveness, OK)  # Kubernetes restarted it: it answers again
    ScriptedProbe.__init__(readiness, OK)
    wait_for(lambda: post.kinds()[-1] == "ready")
    assert post.kinds().count(kind) == 1
