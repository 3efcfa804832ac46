"""The faults the recovery and alert benchmarks inject into a service, and how a trial
is placed: signal, label, random phase, settle time."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

FAULTS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}
FAULT_LABELS = {"kill": "crash (kill -9)", "stop": "hang (SIGSTOP)"}
PHASE = 1.0  # a random U(0, PHASE) delay puts each signal at a random point of any cycle
SETTLE = 1.5  # seconds a process must have lived: supervisord's startsecs=1, plus margin
# The settings of a stack that faults are injected into: every trial a fresh recovery,
# never LOOPING; no scheduled backup (on a fresh stack the first runs 60 s after the hub
# starts, and its work, event and Slack message would land among the trials).
FAULT_TRIALS = {"FLAP_RESTARTS": "1000", "BACKUP_INTERVAL": "0"}


def inject(pid: int, fault: str, clock: Callable[[], float] = time.perf_counter,
           ) -> tuple[float, float]:
    """After a random U(0, PHASE) delay, send FAULT's signal to PID; the wall time
    (time.time()) and CLOCK() read just before the signal, from which a trial is timed."""
    time.sleep(random.uniform(0, PHASE))  # noqa: S311 (a phase, not a secret)
    wall, began = time.time(), clock()
    os.kill(pid, FAULTS[fault])
    return wall, began
