"""Chaos: supervisord killed with kill -9 under a Redis write load (issue 9, case 3).

Its children run on as orphans. `status` and `health` must agree and say so; `start`
replaces the orphans (stopped in dependency order, then a normal start) and reports
ready only from fresh processes; the guard, if it survives, stops them by itself; and
not one acknowledged Redis write is lost."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from harness.stacks import Stack
from harness.waiting import wait_for
from unistack import processes
from unistack.services import REGISTRY, stop_order

pytestmark = pytest.mark.chaos

SERVICES = [spec.name for spec in REGISTRY]


def password(stack: Stack) -> str:
    for line in (stack.home / ".env").read_text().splitlines():
        if line.startswith("REDIS_PASSWORD="):
            return line.split("=", 1)[1]
    raise AssertionError("no REDIS_PASSWORD in .env")


def client(stack: Stack) -> redis.Redis:
    return redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack),
                       socket_timeout=2, decode_responses=True)


class Writer:
    """INCRs a counter and SETs one key per write; counts only acknowledged writes."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.acknowledged: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        db = client(self._stack)
        i = 0
        while not self._stop.is_set():
            try:
                pipe = db.pipeline(transaction=True)
                pipe.incr("chaos:count")
                pipe.set(f"chaos:{i}", i)
                pipe.execute()
            except redis.RedisError:
                self.errors += 1  # not acknowledged: Redis is being replaced
                self._stop.wait(0.01)
                continue
            self.acknowledged.append(i)
            i += 1

    @contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)

    def lost(self) -> list[int]:
        db = client(self._stack)
        values = db.mget([f"chaos:{i}" for i in self.acknowledged])
        missing = [i for i, v in zip(self.acknowledged, values, strict=True) if v is None]
        assert int(db.get("chaos:count") or 0) >= len(self.acknowledged)
        return missing


def orphan_pids(stack: Stack) -> dict[str, int]:
    return {name: p.pid for name, p in processes.leaders(processes.scan(stack.home)).items()}


def kill_supervisord(stack: Stack, guard_too: bool) -> dict[str, int]:
    """kill -9 supervisord (first stopped, so it cannot respawn a guard killed meanwhile)."""
    before = orphan_pids(stack)
    daemon = before.pop("supervisord")
    guard = before.pop("hubguard")
    os.kill(daemon, signal.SIGSTOP)
    if guard_too:
        os.kill(guard, signal.SIGKILL)
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: processes.supervisord_pid(stack.home) == 0)
    return before


def test_kill_9_supervisord_orphans_reported_then_replaced_without_losing_a_write(
        stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    wait_for(lambda: "redis" in orphan_pids(stack))  # the guard recorded every pid
    with Writer(stack).running() as writer:
        wait_for(lambda: len(writer.acknowledged) > 200)
        orphans = kill_supervisord(stack, guard_too=True)
        assert sorted(orphans) == sorted(SERVICES)
        wait_for(lambda: len(writer.acknowledged) > 400)  # the orphaned Redis still serves

        status, health = stack.cli("status", "--json"), stack.cli("health", "--json")
        assert (status.returncode, health.returncode) == (2, 2), (status, health)
        document = json.loads(status.stdout)
        assert document["overall"] == "down"
        states = {s["name"]: (s["state"], s["pid"], s["ready"]) for s in document["services"]}
        assert states == {name: ("ORPHANED", orphans[name], False) for name in SERVICES}
        assert json.loads(health.stdout)["overall"] == "down"
        assert "running without supervisord" in stack.cli("status").stdout

        began = processes.now_tick()
        started = stack.cli("start")
        assert started.returncode == 0, started.stderr
        assert "running without supervisord" in started.stdout
        order = [line.split()[0] for line in started.stdout.splitlines()
                 if line.strip().endswith("s)") and "stopped (pid" in line]
        assert order == [spec.name for spec in stop_order()], started.stdout
        now = json.loads(stack.cli("status", "--json").stdout)
        fresh = {s["name"]: s["pid"] for s in now["services"]}
        assert now["overall"] == "healthy"
        for name in SERVICES:
            assert f"{name} " in started.stdout.split("starting unistack")[1]
            assert fresh[name] != orphans[name]
            assert processes.start_tick(fresh[name]) >= began
        count = len(writer.acknowledged)
        wait_for(lambda: len(writer.acknowledged) > count + 100)  # writing again
    assert writer.lost() == []
    print(f"supervisord kill -9: {len(writer.acknowledged)} acknowledged writes, "
          f"{writer.errors} refused while Redis was replaced, 0 lost")

    stopped = stack.cli("stop")
    assert stopped.returncode == 0 and "no process left" in stopped.stdout
    assert processes.scan(stack.home) == [] and stack.processes() == []


def test_guard_stops_the_orphans_when_supervisord_dies(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    wait_for(lambda: "redis" in orphan_pids(stack))
    db = client(stack)
    for i in range(2000):
        db.set(f"kept:{i}", i)
    orphans = kill_supervisord(stack, guard_too=False)
    wait_for(lambda: processes.scan(stack.home) == [], timeout=15)
    assert "supervisord is gone" in (stack.home / "var/log/hubguard.log").read_text()

    status, health = stack.cli("status"), stack.cli("health")
    assert (status.returncode, health.returncode) == (2, 2)
    assert "ORPHANED" not in status.stdout and str(orphans["redis"]) not in status.stdout
    stopped = stack.cli("stop")
    assert stopped.returncode == 0 and "no process of it found" in stopped.stdout

    assert stack.cli("start").returncode == 0
    values = client(stack).mget([f"kept:{i}" for i in range(2000)])
    assert [i for i, v in enumerate(values) if v is None] == []
