"""Chaos: real processes killed, stopped, crash-looped and starved, on loopback only,
each test bounded in time. The hub must recover every service and lose no write."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from harness.faults import FAULT_TRIALS
from harness.processes import busy_loop, process_age
from harness.slack import SlackStandIn
from harness.stacks import Stack, write_env_file
from harness.waiting import wait_for
from unistack.services import stop_order

pytestmark = pytest.mark.chaos




def hub(stack: Stack, path: str) -> Any:
    url = f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}"
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.load(response)


def services(stack: Stack) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in hub(stack, "/status")["services"]}


def events(stack: Stack, kind: str | None = None, service: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    found = hub(stack, "/events")["events"]
    return [e for e in found if (kind is None or e["kind"] == kind)
            and (service is None or e["service"] == service)]


def password(stack: Stack) -> str:
    for line in (stack.home / ".env").read_text().splitlines():
        if line.startswith("REDIS_PASSWORD="):
            return line.split("=", 1)[1]
    raise AssertionError("no REDIS_PASSWORD in .env")


def start(stack: Stack, **overrides: str) -> None:
    stack.env.update(overrides)
    done = stack.cli("start")
    assert done.returncode == 0, done.stderr


def ready_with_new_pid(stack: Stack, name: str, old_pid: int) -> dict[str, Any] | None:
    service = services(stack)[name]
    return service if service["ready"] and service["pid"] not in (0, old_pid) else None


def settle_past_startsecs(stack: Stack, name: str) -> int:
    """Wait until NAME is ready and past supervisord's startsecs; return its pid."""
    service = wait_for(lambda: services(stack)[name]["ready"] and services(stack)[name])
    wait_for(lambda: process_age(service["pid"]) > 1.2)
    return int(service["pid"])


@pytest.mark.parametrize("name", ["redis", "prometheus", "ml_engine"])
def test_kill_9_repeatedly_is_ready_again_every_time(stack: Stack, name: str) -> None:
    start(stack, **FAULT_TRIALS)
    for _ in range(3):
        pid = settle_past_startsecs(stack, name)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: ready_with_new_pid(stack, name, pid), timeout=10)
        assert time.monotonic() - killed < 3.0
    assert len(events(stack, "crashed", name)) >= 1
    assert events(stack, "looping", name) == []


@pytest.mark.parametrize("name", ["redis", "prometheus", "ml_engine"])
def test_sigstop_is_detected_captured_and_recovered(stack: Stack, name: str) -> None:
    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, name)
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        recovered = wait_for(lambda: ready_with_new_pid(stack, name, pid), timeout=10)
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGCONT)
    assert time.monotonic() - stopped < 4.0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    [hung] = events(stack, "hung", name)
    incident = Path(hung["incident"])
    text = incident.read_text()
    assert "stopped" in text and "wchan" in text and f"pid: {pid}" in text
    assert incident.stat().st_mode & 0o077 == 0
    assert password(stack) not in text
    assert recovered["restarts"] >= 1


def test_a_hung_service_delays_no_other_probe(stack: Stack) -> None:
    """A SIGSTOPped Redis accepts TCP (the kernel's backlog) and never answers."""
    start(stack, **FAULT_TRIALS, REDIS_LIVENESS_THRESHOLD="1000", REDIS_READINESS_THRESHOLD="1")
    pid = settle_past_startsecs(stack, "redis")
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: services(stack)["redis"]["state"] == "UNHEALTHY", timeout=5)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            status = hub(stack, "/status")
            assert {s["name"]: s["ready"] for s in status["services"]}["prometheus"]
            assert status["hub"]["loop_age"] < 1.5
            time.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGCONT)


def crash_program(directory: Path, delay: float) -> Path:
    """A stand-in for redis-server that exits after DELAY seconds until a flag file
    appears, and then runs the real redis-server with the same arguments."""
    script = directory / f"crash-after-{delay:g}.sh"
    flag = directory / "healed"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{flag}" ]; then exec redis-server "$@"; fi\n'
        f"sleep {delay}\n"
        "exit 1\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def looping_stack(stack: Stack) -> Iterator[Stack]:
    stack.env.update(RESTART_BACKOFF_INITIAL="0.3", RESTART_BACKOFF_MAX="1",
                     RESTART_BACKOFF_JITTER="0", LOOP_RESOLVE_AFTER="1", START_TIMEOUT="2")
    yield stack


def hub_starts(stack: Stack, name: str) -> list[float]:
    """Times at which the hub started NAME, from its log."""
    from unistack.logs import parse_timestamp

    lines = (stack.home / "var/log/hub.log").read_text().splitlines()
    return [parse_timestamp(line) or 0.0 for line in lines if f"{name} started by the hub" in line]


@pytest.mark.parametrize("delay", [0, 1.2])
def test_crash_loop_is_one_looping_incident_with_capped_backoff(
    looping_stack: Stack, delay: float
) -> None:
    stack = looping_stack
    program = crash_program(stack.home, delay)
    stack.env["REDIS_SERVER_BIN"] = str(program)
    assert stack.cli("start").returncode == 1  # never ready: start says so and fails
    wait_for(lambda: len(hub_starts(stack, "redis")) >= 5, timeout=40, interval=0.2)
    [looping] = events(stack, "looping", "redis")
    assert looping["severity"] == "critical"
    assert len(events(stack, service="redis")) <= 3  # opened, looping (and maybe failed)
    # Before the loop is declared supervisord respawns the crashing program itself; from
    # then on the hub retries at the cap (1 s). A retry's gap is the crash (DELAY), or
    # supervisord's own retry and its 1 s tick, plus the cap: about 2 s here and up to 4 s
    # on a loaded machine. Uncapped doubling would be past 4.8 s by the fourth retry.
    wait_for(lambda: len([t for t in hub_starts(stack, "redis") if t > looping["ts"]]) >= 4,
             timeout=30, interval=0.2)
    retries = [t for t in hub_starts(stack, "redis") if t > looping["ts"]]
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert gaps and max(gaps) < 1 + delay + 4.5  # retries continue at the cap
    # ... and never faster than the backoff: 0.3 s doubling to the 1 s cap, so no gap is
    # under 0.3 s and the last (the cap reached by the third retry) is at least 1 s.
    assert min(gaps) >= 0.3 - 0.02 and gaps[-1] >= 1.0 - 0.02, gaps
    (stack.home / "healed").touch()
    wait_for(lambda: events(stack, "recovered", "redis"), timeout=20, interval=0.2)
    assert len(events(stack, "looping", "redis")) == 1
    assert len(events(stack, "recovered", "redis")) == 1
    assert services(stack)["redis"]["ready"]


def writer(client: redis.Redis, acknowledged: list[int], stop: threading.Event) -> None:
    """SET distinct keys; remember every one Redis acknowledged; retry through outages."""
    n = 0
    while not stop.is_set():
        try:
            client.set(f"w:{n}", n)
            acknowledged.append(n)
            n += 1
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            time.sleep(0.005)


def test_kill_9_redis_under_write_load_loses_no_acknowledged_write(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, "redis")
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack),
                         socket_timeout=1)
    acknowledged: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(client, acknowledged, stop))
    thread.start()
    try:
        wait_for(lambda: len(acknowledged) > 2000)
        before_kill = len(acknowledged)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: ready_with_new_pid(stack, "redis", pid), timeout=10)
        wait_for(lambda: len(acknowledged) > before_kill + 1000)
    finally:
        stop.set()
        thread.join(10)
    keys = [f"w:{n}" for n in acknowledged]
    present = sum(1 for value in client.mget(keys) if value is not None)
    assert present == len(acknowledged), f"lost {len(acknowledged) - present} acknowledged writes"


def test_sigterm_to_supervisord_stops_in_order_within_budget(stack: Stack) -> None:
    start(stack)
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))
    client.set("survives", "sigterm")
    pids = [p.pid for p in stack.processes()]
    supervisord = int((stack.home / "var/run/supervisord.pid").read_text())
    began = time.monotonic()
    os.kill(supervisord, signal.SIGTERM)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() !=
                             psutil.STATUS_ZOMBIE for p in pids), timeout=12)
    assert time.monotonic() - began < 8.0
    log = (stack.home / "var/log/supervisord.log").read_text()
    order = [log.index(f"stopped: {spec.name}") for spec in stop_order()]
    assert order == sorted(order)  # the hub, then dependents before what they depend on
    redis_log = (stack.home / "var/log/redis.log").read_text()
    shutdown = redis_log[redis_log.rindex("Received SIGTERM"):]
    assert "fsync() on the AOF" in shutdown  # the last step: no full RDB save at stop
    assert "DB saved on disk" not in shutdown
    assert "killing" not in log  # every program stopped by itself, none SIGKILLed
    start(stack)
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))
    assert client.get("survives") == b"sigterm"


def test_kill_9_hub_adopts_restarts_nothing_and_leaves_a_trace(stack: Stack) -> None:
    with SlackStandIn() as outside:  # the dead man's switch's outside service
        write_env_file(stack.home, HEARTBEAT_URL=outside.ping_url)
        start(stack, HEARTBEAT_INTERVAL="0.2")
        wait_for(lambda: len(outside.calls("/ping/")) >= 2, timeout=5)
        before = {name: s["pid"] for name, s in services(stack).items()}
        os.kill(before["hub"], signal.SIGKILL)

        def adopted() -> bool:
            try:
                now = services(stack)
            except OSError:
                return False
            return now["hub"]["pid"] != before["hub"] and all(s["ready"] for s in now.values())

        wait_for(adopted, timeout=15)
        beats = len(outside.calls("/ping/"))
        wait_for(lambda: len(outside.calls("/ping/")) > beats, timeout=5)  # the new hub beats
        after = services(stack)
        for name in ("redis", "prometheus", "ml_engine", "dashboard"):  # none restarted
            assert after[name]["pid"] == before[name], name
        kinds = {(e["service"], e["kind"]) for e in events(stack)}
        assert ("redis", "adopted") in kinds and ("prometheus", "adopted") in kinds
        assert ("redis", "ready") in kinds  # the first hub's events survived in Redis
        assert not any(k in ("crashed", "hung", "looping") for n, k in kinds if n != "hub")
        # The killed hub left a trace: one incident with its last log lines, one restart.
        [crashed] = events(stack, "crashed", "hub")
        assert f"pid {before['hub']}" in crashed["detail"]
        assert "hub serving on" in Path(crashed["incident"]).read_text()
        assert after["hub"]["restarts"] == 1 and after["hub"]["last_incident"]
        wait_for(lambda: events(stack, "recovered", "hub"), timeout=10)
        assert stack.cli("stop").returncode == 0
        beats = len(outside.calls("/ping/"))
        time.sleep(0.6)  # three heartbeat intervals: a stopped stack sends none
        assert len(outside.calls("/ping/")) == beats
        assert start_clean(stack)


def start_clean(stack: Stack) -> bool:
    """A stack stopped cleanly starts with no trace of a killed hub."""
    start(stack)
    return not events(stack, "crashed", "hub")[1:]


def test_cpu_hogs_and_a_large_save_cause_no_restart(stack: Stack) -> None:
    seconds = float(os.environ.get("UNISTACK_SOAK_SECONDS", "60"))
    start(stack)
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))
    value = b"x" * 4096
    for batch in range(50):  # ~200 MB: a BGSAVE that takes real time and memory
        pipe = client.pipeline(transaction=False)
        for n in range(1000):
            pipe.set(f"big:{batch}:{n}", value)
        pipe.execute()
    hogs = [busy_loop(seconds) for _ in range(2)]
    try:
        deadline = time.monotonic() + seconds
        saves = 0
        while time.monotonic() < deadline:
            if client.info("persistence")["rdb_bgsave_in_progress"] == 0:
                client.bgsave()
                saves += 1
            time.sleep(0.5)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert saves >= 2
    status = services(stack)
    assert all(s["restarts"] == 0 and s["ready"] for s in status.values()), status
    bad = [e for e in events(stack) if e["kind"] in ("hung", "crashed", "looping", "unhealthy")]
    assert bad == []


def test_a_frozen_hub_is_replaced_by_its_guard_and_restarts_nothing(stack: Stack) -> None:
    start(stack)
    before = {name: s["pid"] for name, s in services(stack).items()}
    wait_for(lambda: process_age(before["hub"]) > 6)
    os.kill(before["hub"], signal.SIGSTOP)
    frozen = time.monotonic()

    def replaced() -> bool:
        try:
            now = services(stack)
        except OSError:
            return False
        return now["hub"]["pid"] != before["hub"] and all(s["ready"] for s in now.values())

    wait_for(replaced, timeout=15, interval=0.1)
    assert time.monotonic() - frozen < 8.0
    after = {name: s["pid"] for name, s in services(stack).items()}
    assert after["redis"] == before["redis"] and after["prometheus"] == before["prometheus"]
    assert "killing it" in (stack.home / "var/log/hubguard.log").read_text()


def test_kill_9_engine_under_load_answers_every_request_exactly_once(stack: Stack) -> None:
    from tests.chaos.ml_load import RequestLoad
    from unistack.config import load_settings

    start(stack, **FAULT_TRIALS)
    pid = settle_past_startsecs(stack, "ml_engine")
    with RequestLoad(load_settings(environ=stack.env), producers=4, rows=1,
                     timeout=15) as load:
        wait_for(lambda: load.answered > 500, timeout=20)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: ready_with_new_pid(stack, "ml_engine", pid), timeout=15)
        settled = load.answered
        wait_for(lambda: load.answered > settled + 500, timeout=20)
    assert load.failures == []
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))
    assert client.xlen("ml:requests") == 0
    assert client.xpending("ml:requests", "ml-engine")["pending"] == 0
    assert list(client.scan_iter("ml:reply:*")) == []  # no duplicate answer left behind
