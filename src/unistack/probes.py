"""Probes: one-method checks (`check() -> ProbeResult`) with service semantics.

A probe never raises and never reports an error as healthy: every failure comes back
as `ok=False` with the reason. Each probe is bounded by its own timeout.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from unistack.config import Settings
from unistack.configkeys import LOOPBACK
from unistack.services import ProbeSpec, ServiceSpec


class ProbeResult(NamedTuple):
    ok: bool
    detail: str
    latency: float
    answered: bool = True  # False: no reply at all (refused, timed out, closed)
    # False: the service says a restart cannot fix what keeps it from serving (a failed
    # save, a model failing its checksum): the hub shows it DEGRADED and never kills it.
    restart_helps: bool = True


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

    def read_to_end(self, limit: int) -> None:
        """Read until the peer closes, LIMIT bytes are buffered, or the deadline passes."""
        while len(self._buffer) < limit:
            try:
                self._fill()
            except ConnectionError:
                return

    def rest(self) -> bytes:
        return self._buffer

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


def info_fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


class RedisProbe:
    """Authenticated PING plus INFO persistence over a raw socket (no client-side retries).

    Alive: Redis answers PING (a LOADING reply is alive). Ready: PONG, `loading:0` and
    the last background save and AOF write succeeded, so Redis accepts writes.
    """

    def __init__(self, port: int, password: str, timeout: float, require_ready: bool,
                 host: str = LOOPBACK) -> None:
        self._address = (host, port)
        self._password = password
        self._timeout = timeout
        self._require_ready = require_ready
        self._clock: Callable[[], float] = time.monotonic

    def check(self) -> ProbeResult:
        started = self._clock()
        answered, restart_helps = True, True
        try:
            detail = self._exchange(started + self._timeout)
            ok = detail == "ready" or (not self._require_ready and detail.startswith("alive"))
            restart_helps = SAVE_FAILED not in detail
        except _ReplyError as exc:
            ok, detail = False, _describe(exc)
        except (OSError, ValueError) as exc:
            ok, detail, answered = False, _describe(exc), False
        return ProbeResult(ok, detail, self._clock() - started, answered, restart_helps)

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
                # A save error makes Redis refuse even PING (MISCONF): it is alive and
                # holds the only copy of the data, so INFO below says what is wrong.
                if not str(exc).startswith(("LOADING", "MISCONF")):
                    raise
            return _persistence_verdict(info_fields(reader.reply()))


SAVE_FAILED = "cannot persist"  # the verdict's words for a failed save: not a restart's to fix


def _persistence_verdict(info: dict[str, str]) -> str:
    if info.get("loading", "0") != "0":
        return "alive: loading the dataset"
    failed = [f"{key}:{info[key]}" for key in ("rdb_last_bgsave_status", "aof_last_write_status")
              if info.get(key, "ok") != "ok"]
    if failed:
        return (f"alive: {SAVE_FAILED} to disk ({', '.join(failed)}), so it refuses writes; "
                "check the data directory's free space and permissions")
    return "ready"


def redis_command(port: int, password: str, timeout: float, *args: str,
                  host: str = LOOPBACK) -> str:
    """One command on a fresh connection (AUTH first); the reply, or the error reply's
    text. Raises OSError when Redis does not answer within TIMEOUT."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        request = _resp_command(*args)
        if password:
            request = _resp_command("AUTH", password) + request
        sock.sendall(request)
        reader = _DeadlineReader(sock, time.monotonic() + timeout)
        try:
            if password:
                reader.reply()
            return reader.reply()
        except _ReplyError as exc:
            return str(exc)


class HttpProbe:
    """GET a path (on 127.0.0.1 unless HOST says otherwise); ok only on HTTP 200 within
    the timeout."""

    def __init__(self, port: int, path: str, timeout: float, host: str = LOOPBACK) -> None:
        self._address = (host, port)
        self._path = path
        self._timeout = timeout
        self._clock: Callable[[], float] = time.monotonic

    def check(self) -> ProbeResult:
        started = self._clock()
        try:
            answer = self._status_code(started + self._timeout)
        except (OSError, ValueError) as exc:
            return ProbeResult(False, f"GET {self._path}: {_describe(exc)}",
                               self._clock() - started, answered=False)
        status, body = answer
        ok = status == 200
        said = body.get("detail")
        detail = "ready" if ok else f"GET {self._path} answered HTTP {status}" + (
            f": {said}" if isinstance(said, str) and said else "")
        return ProbeResult(ok, detail, self._clock() - started,
                           restart_helps=body.get("restart_helps") is not False)

    def _status_code(self, deadline: float) -> tuple[int, dict[str, object]]:
        """The status and, when the service sent one, its small JSON body (it may say
        why it is not ready and whether a restart would help)."""
        with socket.create_connection(self._address, timeout=self._timeout) as sock:
            sock.sendall(f"GET {self._path} HTTP/1.0\r\nHost: {self._address[0]}\r\n"
                         "Connection: close\r\n\r\n".encode())
            reader = _DeadlineReader(sock, deadline)
            status_line = reader.line().decode(errors="replace")
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
            return int(parts[1]), _json_body(reader) if parts[1] != "200" else {}


_BODY_MAX = 4096


def _json_body(reader: _DeadlineReader) -> dict[str, object]:
    """The JSON object after the headers (at most _BODY_MAX bytes), or {} if there is none."""
    try:
        while reader.line():
            pass  # headers
        reader.read_to_end(_BODY_MAX)
        body = json.loads(reader.rest())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def build_probe(spec: ProbeSpec, service: ServiceSpec, settings: Settings, timeout: float) -> Probe:
    port, host = service.port(settings), settings.host(service.port_key)
    if spec.kind in ("redis-alive", "redis-ready"):
        return RedisProbe(port, settings.redis_password, timeout, spec.kind == "redis-ready",
                          host)
    if spec.kind == "http":
        return HttpProbe(port, spec.path, timeout, host)
    raise ValueError(f"unknown probe kind {spec.kind!r} for service {service.name}")
