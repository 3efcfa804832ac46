"""The faults the recovery and alert benchmarks inject into a service, and how a trial
is placed: signal, label, random phase, settle time."""

from __future__ import annotations

import signal

FAULTS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}
FAULT_LABELS = {"kill": "crash (kill -9)", "stop": "hang (SIGSTOP)"}
PHASE = 1.0  # a random U(0, PHASE) delay puts each signal at a random point of any cycle
SETTLE = 1.5  # seconds a process must have lived: supervisord's startsecs=1, plus margin
NO_LOOPS = {"FLAP_RESTARTS": "1000"}  # every trial a fresh recovery, never LOOPING
