"""Probes: one-method checks (`check() -> ProbeResult`) with service semantics.

A probe never raises and never reports an error as healthy: every failure comes back
as `ok=False` with the reason. Each probe is bounded by its own timeout.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from unistack.config import LOOPBACK, Settings
from unistack.services import ProbeSpec, ServiceSpec


class ProbeResult(NamedTuple):
    ok: bool
    detail: str
    latency: float
    answered: bool = True  # False: no reply at all (refused, timed out, closed)


class Probe(Protocol):
    def check(self) -> ProbeResult: ...


class _ReplyError(Exception):
    """Redis answered with an error reply (-ERR, -LOADING, -WRONGPASS)."""


def _resp_command(*args: str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _DeadlineReader:
    """Reads lines and replies from a socket; every read is bounded by one deadline,
    so a peer that trickles bytes cannot stretch a probe past its timeout."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(remaining)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self._buffer += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """One RESP2 reply: simple string, integer or bulk string; errors raise."""
        line = self.line()
        kind, body = line[:1], line[1:].decode(errors="replace")
        if kind == b"-":
            raise _ReplyError(body)
        if kind in (b"+", b":"):
            return body
        if kind == b"$":
            size = int(body)
            if size < 0:
                return ""
            while len(self._buffer) < size + 2:
                self._fill()
            data, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
            return data.decode(errors="replace")
        raise ConnectionError(f"unexpected reply {line[:32]!r}")


def _info_fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


class RedisProbe:
    """Authenticated PING plus INFO persistence over a raw socket (no client-side retries).

    Alive: Redis answers PING (a LOADING reply is alive). Ready: PONG, `loading:0` and
    the last background save and AOF write succeeded, so Redis accepts writes.
    """

    def __init__(self, port: int, password: str, timeout: float, require_ready: bool) -> None:
        self._address = (LOOPBACK, port)
        self._password = password
        self._timeout = timeout
        self._require_ready = require_ready
        self._clock: Callable[[], float] = time.monotonic

    def check(self) -> ProbeResult:
        started = self._clock()
        answered = True
        try:
            detail = self._exchange(started + self._timeout)
            ok = detail == "ready" or (not self._require_ready and detail.startswith("alive"))
        except _ReplyError as exc:
            ok, detail = False, _describe(exc)
        except (OSError, ValueError) as exc:
            ok, detail, answered = False, _describe(exc), False
        return ProbeResult(ok, detail, self._clock() - started, answered)

    def _exchange(self, deadline: float) -> str:
        with socket.create_connection(self._address, timeout=self._timeout) as sock:
            request = _resp_command("PING") + _resp_command("INFO", "persistence")
            if self._password:
                request = _resp_command("AUTH", self._password) + request
            sock.sendall(request)
            reader = _DeadlineReader(sock, deadline)
            if self._password:
                reader.reply()
            try:
                reader.reply()
            except _ReplyError as exc:
                if str(exc).startswith("LOADING"):
                    reader.reply()
                    return "alive: loading the dataset"
                raise
            return _persistence_verdict(_info_fields(reader.reply()))


def _persistence_verdict(info: dict[str, str]) -> str:
    if info.get("loading", "0") != "0":
        return "alive: loading the dataset"
    if info.get("rdb_last_bgsave_status", "ok") != "ok":
        return "alive: last background save failed, Redis refuses writes"
    if info.get("aof_last_write_status", "ok") != "ok":
        return "alive: last AOF write failed, Redis refuses writes"
    return "ready"


class HttpProbe:
    """GET a path on 127.0.0.1; ok only on HTTP 200 within the timeout."""

    def __init__(self, port: int, path: str, timeout: float) -> None:
        self._address = (LOOPBACK, port)
        self._path = path
        self._timeout = timeout
        self._clock: Callable[[], float] = time.monotonic

    def check(self) -> ProbeResult:
        started = self._clock()
        try:
            status = self._status_code(started + self._timeout)
        except (OSError, ValueError) as exc:
            return ProbeResult(False, f"GET {self._path}: {_describe(exc)}",
                               self._clock() - started, answered=False)
        ok = status == 200
        detail = "ready" if ok else f"GET {self._path} answered HTTP {status}"
        return ProbeResult(ok, detail, self._clock() - started)

    def _status_code(self, deadline: float) -> int:
        with socket.create_connection(self._address, timeout=self._timeout) as sock:
            sock.sendall(f"GET {self._path} HTTP/1.0\r\nHost: {LOOPBACK}\r\n"
                         "Connection: close\r\n\r\n".encode())
            status_line = _DeadlineReader(sock, deadline).line().decode(errors="replace")
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
        return int(parts[1])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def build_probe(spec: ProbeSpec, service: ServiceSpec, settings: Settings, timeout: float) -> Probe:
    port = service.port(settings)
    if spec.kind in ("redis-alive", "redis-ready"):
        return RedisProbe(port, settings.redis_password, timeout, spec.kind == "redis-ready")
    if spec.kind == "http":
        return HttpProbe(port, spec.path, timeout)
    raise ValueError(f"unknown probe kind {spec.kind!r} for service {service.name}")
