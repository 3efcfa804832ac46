"""Redis faults an operator makes: a long script, a big FLUSHALL, its data directory
removed or read-only. Redis is alive and holds the only copy of the data, so the hub
must never kill it for these; it shows it DEGRADED with the reason and loses nothing."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.chaos.test_chaos import (
    FAULT_TRIALS,
    events,
    password,
    services,
    settle_past_startsecs,
    start,
    writer,
)

pytestmark = pytest.mark.chaos

SPIN = """
local stop = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
while tonumber(redis.call('TIME')[1]) < stop do end
redis.call('SET', KEYS[1], 'script done')
return 1
"""


def client(stack: Stack, timeout: float = 10) -> redis.Redis:
    return redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack),
                       socket_timeout=timeout)


@contextlib.contextmanager
def write_load(stack: Stack) -> Iterator[list[int]]:
    """Acknowledged INCR-numbered writes from a thread, for the duration of the block."""
    acknowledged: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(client(stack, 1), acknowledged, stop))
    thread.start()
    try:
        wait_for(lambda: len(acknowledged) > 500)
        yield acknowledged
    finally:
        stop.set()
        thread.join(10)


def lost(stack: Stack, acknowledged: list[int]) -> int:
    keys = [f"w:{n}" for n in acknowledged]
    return len(keys) - sum(1 for v in client(stack).mget(keys) if v is not None)


def test_a_long_script_makes_redis_busy_not_hung(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, "redis")
    states: list[str] = []
    with write_load(stack) as acknowledged:
        script = threading.Thread(target=lambda: client(stack).eval(SPIN, 1, "spun", "3"))
        script.start()
        while script.is_alive():
            states.append(services(stack)["redis"]["state"])
            time.sleep(0.1)
        wait_for(lambda: services(stack)["redis"]["ready"], timeout=10)
    assert services(stack)["redis"]["pid"] == pid  # never killed
    assert client(stack).get("spun") == b"script done"
    assert "DEGRADED" in states
    [busy] = events(stack, "busy", "redis")
    assert busy["severity"] == "warning" and "% CPU for" in busy["detail"]
    assert not events(stack, "hung", "redis")
    assert lost(stack, acknowledged) == 0


POPULATE = "for i = ARGV[1], ARGV[2] do redis.call('SET', 'bulk:' .. i, i) end return 1"


def test_a_large_flushall_is_busy_not_hung(stack: Stack) -> None:
    """FLUSHALL of 3 million keys holds Redis's main thread for about a second here:
    longer than the hub's hang detection, so only CPU evidence keeps Redis alive."""
    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, "redis")
    big = client(stack, timeout=60)
    for first in range(1, 3_000_001, 250_000):
        big.eval(POPULATE, 0, first, first + 249_999)
    began = time.monotonic()
    big.flushall()
    took = time.monotonic() - began
    big.set("after-flush", "1")
    time.sleep(1.5)  # a hung verdict would have killed it by now
    assert services(stack)["redis"]["pid"] == pid, f"FLUSHALL took {took:.2f} s"
    assert big.get("after-flush") == b"1"
    assert not events(stack, "hung", "redis")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(stack: Stack, count: int) -> None:
    pipe = client(stack).pipeline(transaction=False)
    for n in range(count):
        pipe.set(f"k:{n}", n)
    pipe.execute()


def present(stack: Stack, count: int) -> int:
    values = client(stack).mget([f"k:{n}" for n in range(count)])
    return sum(1 for v in values if v is not None)


def fill_disk(path: Path) -> Path:
    """Write a file into PATH until its filesystem is full; the file."""
    filler = path / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 2**20)
            handle.flush()
    return filler


def test_an_unwritable_data_directory_is_degraded_never_killed_and_recovers(
    stack: Stack
) -> None:
    """A full filesystem under var/data/redis (a read-only remount is refused while Redis
    holds its AOF open for writing: the same save error, made for real)."""
    with tmpfs(stack.home / "var" / "data" / "redis") as data:
        start(stack, **FAULT_TRIALS)
        pid = settle_past_startsecs(stack, "redis")
        fill(stack, 10000)
        filler = fill_disk(data)
        with contextlib.suppress(redis.ResponseError):
            client(stack).bgsave()
        redis_status = wait_for(lambda: (s := services(stack)["redis"])["state"] == "DEGRADED"
                                and s, timeout=10)
        assert "rdb_last_bgsave_status:err" in redis_status["detail"]
        assert stack.cli("status").returncode == 2  # critical and not ready: down
        time.sleep(2)  # the hub would have killed it within a second before
        assert services(stack)["redis"]["pid"] == pid
        filler.unlink()
        wait_for(lambda: services(stack)["redis"]["ready"], timeout=15)  # it saved again
        assert services(stack)["redis"]["pid"] == pid
        assert present(stack, 10000) == 10000
        assert client(stack).set("after", "1")
        [degraded] = events(stack, "degraded", "redis")
        assert degraded["severity"] == "critical"
        wait_for(lambda: events(stack, "recovered", "redis"), timeout=10)
        assert stack.cli("stop").returncode == 0


def test_a_removed_data_directory_is_rescued_and_nothing_is_lost(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, "redis")
    fill(stack, 10000)
    data = stack.home / "var" / "data" / "redis"
    shutil.rmtree(data)
    with contextlib.suppress(redis.ResponseError):
        client(stack).bgsave()  # fails: its working directory is gone
    wait_for(lambda: events(stack, "degraded", "redis"), timeout=10)
    [degraded] = events(stack, "degraded", "redis")
    assert "rdb_last_bgsave_status:err" in degraded["detail"]
    # the hub copies the data out through a replica and restarts Redis on it
    wait_for(lambda: (s := services(stack)["redis"])["ready"] and s["pid"] != pid, timeout=30)
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "appendonlydir").is_dir()
    assert present(stack, 10000) == 10000
    assert client(stack).set("after", "1")
    kinds = [e["kind"] for e in events(stack, service="redis")]
    assert "crashed" not in kinds and "hung" not in kinds
    assert stack.cli("restart", "redis").returncode == 0  # it persists again
    assert present(stack, 10000) == 10000
