"""Kubernetes mode (UNISTACK_MODE=kubernetes): the services run in pods of their own and
Kubernetes starts, restarts and stops them. `Pods` answers the reconcile loop's questions
in supervisord's place: every service is running (Kubernetes keeps it so) with no
process on this host (pid 0), and starting or stopping one is not the hub's to do."""

from __future__ import annotations

import time

from unistack.services import ServiceSpec
from unistack.supervisor import ProcessInfo, SupervisorError


class Pods:
    def __init__(self, registry: tuple[ServiceSpec, ...]) -> None:
        self._names = tuple(spec.name for spec in registry if not spec.autostart)
        self._since = time.time()

    def processes(self) -> dict[str, ProcessInfo]:
        return {name: ProcessInfo(name, "RUNNING", 0, self._since, "in its own pod")
                for name in self._names}

    def is_running(self) -> bool:
        return True

    def start(self, name: str) -> None:
        raise SupervisorError(f"{name} runs in its own pod: Kubernetes starts it")

    def stop(self, name: str, settle: float = 10.0) -> None:
        raise SupervisorError(f"{name} runs in its own pod: restart it with `kubectl rollout "
                              f"restart` of its workload (Kubernetes mode)")
