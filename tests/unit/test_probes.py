"""probes: Redis and HTTP semantics against tiny loopback transport fakes, each call bounded."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from unistack.config import load_settings
from unistack.probes import HttpProbe, ProbeResult, RedisProbe, build_probe
from unistack.services import REGISTRY, ProbeSpec

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-redis-password-for-tests"
TIMEOUT = 0.4
# How much longer than its own timeout a probe may take (scheduling, connect, close).
SLACK = 0.3
READY_INFO = ("# Persistence\r\nloading:0\r\n"
              "rdb_last_bgsave_status:ok\r\naof_last_write_status:ok\r\n")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        # The probe may hang up first (e.g. after -WRONGPASS), as any client may.
        with contextlib.suppress(ConnectionError):
            self.server.respond(self)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, respond: Callable[[_Handler], None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.released = threading.Event()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[_Handler], None]], _Server]]:
    """Start a fake server on a free loopback port answering with RESPOND."""
    servers: list[_Server] = []

    def start(respond: Callable[[_Handler], None]) -> _Server:
        server = _Server(respond)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.released.set()
        server.shutdown()
        server.server_close()


def hang(handler: _Handler) -> None:
    """Accept, never answer, until the test is over."""
    handler.server.released.wait(10)


# --- a fake Redis ----------------------------------------------------------------------


def bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True)
class FakeRedis:
    """Answers AUTH against PASSWORD, PING with PING_REPLY and INFO with INFO."""

    ping_reply: bytes = b"+PONG\r\n"
    info: str = READY_INFO

    def __call__(self, handler: _Handler) -> None:
        while (command := read_command(handler)) is not None:
            handler.wfile.write(self.reply(command))
            handler.wfile.flush()

    def reply(self, command: list[str]) -> bytes:
        name = command[0].upper()
        if name == "AUTH":
            ok = command[1:] == [PASSWORD]
            return b"+OK\r\n" if ok else b"-WRONGPASS invalid username-password pair\r\n"
        if name == "PING":
            return self.ping_reply
        if name == "INFO":
            return bulk(self.info)
        return b"-ERR unknown command\r\n"


def read_command(handler: _Handler) -> list[str] | None:
    header = handler.rfile.readline()
    if not header.startswith(b"*"):
        return None
    args = []
    for _ in range(int(header[1:])):
        size = int(handler.rfile.readline()[1:])
        args.append(handler.rfile.read(size + 2)[:-2].decode())
    return args


def redis_check(port: int, require_ready: bool = True, password: str = PASSWORD) -> ProbeResult:
    return RedisProbe(port, password, TIMEOUT, require_ready).check()


def timed(check: Callable[[], ProbeResult]) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = check()
    return result, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_redis_ready(serve: Callable[..., _Server]) -> None:
    server = serve(FakeRedis())
    for require_ready in (True, False):
        result = redis_check(server.port, require_ready)
        assert result == ProbeResult(True, "ready", result.latency, answered=True)
        assert 0 <= result.latency < TIMEOUT


def test_redis_loading_is_alive_but_not_ready(serve: Callable[..., _Server]) -> None:
    server = serve(FakeRedis(info=READY_INFO.replace("loading:0", "loading:1")))
    ready = redis_check(server.port, require_ready=True)
    assert not ready.ok
    assert ready.answered
    assert "loading" in ready.detail
    assert redis_check(server.port, require_ready=False).ok


def test_redis_loading_reply_to_ping_is_alive_but_not_ready(
    serve: Callable[..., _Server]
) -> None:
    loading = b"-LOADING Redis is loading the dataset in memory\r\n"
    server = serve(FakeRedis(ping_reply=loading, info=READY_INFO.replace("loading:0", "loading:1")))
    ready = redis_check(server.port, require_ready=True)
    assert not ready.ok
    assert "loading" in ready.detail
    alive = redis_check(server.port, require_ready=False)
    assert alive.ok
    assert alive.detail.startswith("alive")


def test_redis_wrong_password_is_not_ok(serve: Callable[..., _Server]) -> None:
    server = serve(FakeRedis())
    for require_ready in (True, False):
        result = redis_check(server.port, require_ready, password="not-the-password")
        assert not result.ok
        assert result.answered  # an error reply is an answer: Redis is alive
        assert "WRONGPASS" in result.detail
        assert "not-the-password" not in result.detail


def test_redis_misconf_to_ping_is_alive_never_a_reason_to_kill(
    serve: Callable[..., _Server]
) -> None:
    """After a failed save Redis refuses even PING: it is alive and holds the data."""
    info = READY_INFO.replace("rdb_last_bgsave_status:ok", "rdb_last_bgsave_status:err")
    server = serve(FakeRedis(ping_reply=b"-MISCONF Redis is configured to save RDB snapshots, "
                             b"but it's currently unable to persist to disk\r\n", info=info))
    assert redis_check(server.port, require_ready=False).ok
    ready = redis_check(server.port, require_ready=True)
    assert not ready.ok and ready.answered and not ready.restart_helps
    assert "rdb_last_bgsave_status:err" in ready.detail


def test_redis_other_error_reply_to_ping_is_not_ok_even_for_liveness(
    serve: Callable[..., _Server]
) -> None:
    server = serve(FakeRedis(ping_reply=b"-BUSY Redis is busy running a script\r\n"))
    result = redis_check(server.port, require_ready=False)
    assert not result.ok
    assert result.answered
    assert "BUSY" in result.detail


@pytest.mark.parametrize(
    ("field", "reason"),
    [("rdb_last_bgsave_status", "rdb_last_bgsave_status:err"),
     ("aof_last_write_status", "aof_last_write_status:err")],
)
def test_redis_failed_persistence_is_not_ready(
    serve: Callable[..., _Server], field: str, reason: str
) -> None:
    server = serve(FakeRedis(info=READY_INFO.replace(f"{field}:ok", f"{field}:err")))
    result = redis_check(server.port, require_ready=True)
    assert not result.ok
    assert reason in result.detail and "refuses writes" in result.detail
    assert not result.restart_helps
    assert redis_check(server.port, require_ready=False).ok


def test_redis_that_never_answers_times_out_in_bound(serve: Callable[..., _Server]) -> None:
    server = serve(hang)
    result, elapsed = timed(lambda: redis_check(server.port))
    assert not result.ok
    assert not result.answered
    assert result.detail == "timed out"
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


def test_redis_closing_the_connection_is_not_ok(serve: Callable[..., _Server]) -> None:
    server = serve(lambda handler: None)
    result = redis_check(server.port)
    assert not result.ok
    assert not result.answered
    assert result.detail


def test_redis_connection_refused() -> None:
    result, elapsed = timed(lambda: redis_check(free_port()))
    assert not result.ok
    assert not result.answered
    assert result.detail == "connection refused"
    assert elapsed < TIMEOUT


# --- HTTP ------------------------------------------------------------------------------


def http_status(code: int, reason: str) -> Callable[[_Handler], None]:
    def respond(handler: _Handler) -> None:
        while handler.rfile.readline() not in (b"\r\n", b""):
            pass
        body = reason.encode()
        handler.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                            % (code, body, len(body), body))

    return respond


def http_check(port: int, path: str = "/-/ready") -> ProbeResult:
    return HttpProbe(port, path, TIMEOUT).check()


def test_http_200_is_ok(serve: Callable[..., _Server]) -> None:
    result = http_check(serve(http_status(200, "OK")).port)
    assert result.ok
    assert result.answered
    assert result.detail == "ready"


@pytest.mark.parametrize(("code", "reason"), [(503, "Service Unavailable"), (302, "Found")])
def test_http_other_status_is_not_ok(
    serve: Callable[..., _Server], code: int, reason: str
) -> None:
    result = http_check(serve(http_status(code, reason)).port, "/-/ready")
    assert not result.ok
    assert result.answered  # alive, only not ready
    assert str(code) in result.detail
    assert "/-/ready" in result.detail


def http_json(code: int, body: bytes) -> Callable[[_Handler], None]:
    def respond(handler: _Handler) -> None:
        while handler.rfile.readline() not in (b"\r\n", b""):
            pass
        handler.wfile.write(b"HTTP/1.0 %d X\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (code, len(body), body))

    return respond


def test_http_not_ready_body_says_why_and_whether_a_restart_helps(
    serve: Callable[..., _Server]
) -> None:
    body = (b'{"ready": false, "detail": "model default v1 failed its checksum", '
            b'"restart_helps": false}')
    result = http_check(serve(http_json(503, body)).port, "/ready")
    assert not result.ok and result.answered and not result.restart_helps
    assert result.detail == "GET /ready answered HTTP 503: model default v1 failed its checksum"


@pytest.mark.parametrize("body", [b'{"ready": false, "restart_helps": true}', b"not json",
                                  b"[1, 2]", b'{"detail": 3}', b"x" * 10000])
def test_http_body_that_says_nothing_usable_leaves_restart_helping(
    serve: Callable[..., _Server], body: bytes
) -> None:
    result = http_check(serve(http_json(503, body)).port, "/ready")
    assert not result.ok and result.restart_helps
    assert result.detail == "GET /ready answered HTTP 503"


def test_http_that_never_answers_times_out_in_bound(serve: Callable[..., _Server]) -> None:
    server = serve(hang)
    result, elapsed = timed(lambda: http_check(server.port))
    assert not result.ok
    assert not result.answered
    assert "timed out" in result.detail
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


def test_http_connection_refused() -> None:
    result = http_check(free_port())
    assert not result.ok
    assert not result.answered
    assert "connection refused" in result.detail


def drip(handler: _Handler) -> None:
    """A status line that arrives one byte per 0.6 x TIMEOUT: no single read times out."""
    while handler.rfile.readline() not in (b"\r\n", b""):
        pass
    for byte in b"HTTP/1.1 200 OK\r\n":
        if handler.server.released.wait(TIMEOUT * 0.6):
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def test_http_slow_answer_is_bounded_by_the_timeout(serve: Callable[..., _Server]) -> None:
    server = serve(drip)
    result, elapsed = timed(lambda: http_check(server.port))
    server.released.set()
    assert elapsed < TIMEOUT + SLACK
    assert not result.ok
    assert not result.answered
    assert "timed out" in result.detail


# --- build_probe -----------------------------------------------------------------------


def test_build_probe_builds_each_registry_probe(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    for service in REGISTRY:
        for spec in (service.liveness, service.readiness):
            probe = build_probe(spec, service, settings, TIMEOUT)
            expected = RedisProbe if spec.kind.startswith("redis") else HttpProbe
            assert isinstance(probe, expected)


def test_build_probe_refuses_an_unknown_kind(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    service = replace(REGISTRY[0], readiness=ProbeSpec("carrier-pigeon"))
    with pytest.raises(ValueError, match="carrier-pigeon"):
        build_probe(service.readiness, service, settings, TIMEOUT)


@pytest.mark.parametrize("timeout", [0.15, 0.6])
def test_build_probe_uses_the_timeout_it_is_given(
    serve: Callable[..., _Server], tmp_path: Path, timeout: float
) -> None:
    server = serve(hang)
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path),
                                      "PROMETHEUS_PORT": str(server.port)}, root=ROOT)
    prometheus = next(s for s in REGISTRY if s.name == "prometheus")
    probe = build_probe(prometheus.readiness, prometheus, settings, timeout)
    result, elapsed = timed(probe.check)
    assert not result.ok
    assert not result.answered
    assert timeout <= elapsed < timeout + SLACK
