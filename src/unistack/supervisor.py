"""The only XML-RPC client of supervisord, over its 0700 unix socket, with timeouts."""

from __future__ import annotations

import http.client
import socket
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, NamedTuple, Protocol

# supervisor.xmlrpc.Faults codes used here.
_SHUTDOWN_STATE = 6
_BAD_NAME = 10
_ALREADY_STARTED = 60
_NOT_RUNNING = 70


class SupervisorError(Exception):
    """supervisord is unreachable or refused a call; the message says which and why."""


class ProcessInfo(NamedTuple):
    name: str
    state: str  # STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN
    pid: int
    since: float
    description: str


class Programs(Protocol):
    """What the hub asks of whatever runs the programs: supervisord (SupervisorClient),
    or Kubernetes (hub/pods.py)."""

    def processes(self) -> dict[str, ProcessInfo]: ...

    def is_running(self) -> bool: ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str, settle: float = 10.0) -> None: ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


class SupervisorClient:
    """Calls supervisord. Each call opens its own connection, so threads may share one client."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def _call(self, method: str, *args: Any) -> Any:
        transport = _UnixTransport(str(self._socket_path), self._timeout)
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
        try:
            return getattr(proxy, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == _SHUTDOWN_STATE:  # SIGTERM to supervisord: it stops all
                raise SupervisorError(
                    f"supervisord at {self._socket_path} is shutting down") from fault
            raise
        except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
            raise SupervisorError(
                f"supervisord at {self._socket_path} is unreachable: {exc}"
            ) from exc
        finally:
            transport.close()

    def is_running(self) -> bool:
        try:
            return bool(self._call("supervisor.getState")["statename"] == "RUNNING")
        except SupervisorError:
            return False

    def pid(self) -> int:
        return int(self._call("supervisor.getPID"))

    def processes(self) -> dict[str, ProcessInfo]:
        return {
            info["name"]: ProcessInfo(
                info["name"], info["statename"], int(info["pid"]),
                float(info["start"]), info["description"],
            )
            for info in self._call("supervisor.getAllProcessInfo")
        }

    def start(self, name: str) -> None:
        """Ask supervisord to spawn NAME without waiting for startsecs; running is fine."""
        try:
            self._call("supervisor.startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != _ALREADY_STARTED:
                raise SupervisorError(f"cannot start {name}: {fault.faultString}") from fault

    def stop(self, name: str, settle: float = 10.0) -> None:
        """Stop NAME and wait until supervisord reports it STOPPED (or FATAL).

        A program that just EXITED is about to be respawned (autorestart): stopping it
        then is refused as "not running", so keep asking until it is really down.
        """
        deadline = time.monotonic() + settle
        while True:
            try:
                self._call("supervisor.stopProcess", name, True)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode == _BAD_NAME:
                    return
                if fault.faultCode != _NOT_RUNNING:
                    raise SupervisorError(f"cannot stop {name}: {fault.faultString}") from fault
            state = self._call("supervisor.getProcessInfo", name)["statename"]
            if state in ("STOPPED", "FATAL") or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def shutdown(self) -> None:
        self._call("supervisor.shutdown")
