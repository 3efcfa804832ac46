"""The whole stack through the operator's CLI: real supervisord, redis-server, prometheus
and hub on free loopback ports in a temp UNISTACK_HOME."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from harness.stacks import Stack, make_home, stack_environment
from harness.waiting import wait_for
from tests.conftest import ROOT
from unistack.configkeys import PORT_KEYS
from unistack.services import REGISTRY

pytestmark = pytest.mark.integration




def read_env_file(home: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (home / ".env").read_text().splitlines() if line)
    return dict(pairs)


def status(stack: Stack) -> dict:  # type: ignore[type-arg]
    done = stack.cli("status", "--json")
    return json.loads(done.stdout)


def http_get(url: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_start_status_stop_leaves_nothing_running(stack: Stack) -> None:
    started = stack.cli("start")
    assert started.returncode == 0, started.stderr
    for key, scheme in (("REDIS_PORT", "redis"), ("PROMETHEUS_PORT", "http"), ("HUB_PORT", "http")):
        assert f"{scheme}://127.0.0.1:{stack.port(key)}" in started.stdout

    document = status(stack)
    assert document["overall"] == "healthy"
    by_name = {s["name"]: s for s in document["services"]}
    assert set(by_name) == {spec.name for spec in REGISTRY}
    for service in by_name.values():
        assert service["ready"] is True and service["state"] == "READY"
        assert psutil.pid_exists(service["pid"])
    assert stack.cli("status").returncode == 0

    again = stack.cli("start")
    assert again.returncode == 0 and "already running" in again.stdout

    stopped = stack.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stack.processes() == []
    for service in by_name.values():
        assert not psutil.pid_exists(service["pid"])
    down = stack.cli("status", "--json")
    assert down.returncode == 2 and json.loads(down.stdout)["overall"] == "down"


def listening_addresses(pids: set[int]) -> list[tuple[str, int, int]]:
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.append((conn.laddr.ip, conn.laddr.port, conn.pid))
    return found


def test_secrets_stay_secret_and_listeners_stay_on_loopback(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    env_file = stack.home / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    secrets = read_env_file(stack.home)
    password = secrets["REDIS_PASSWORD"]
    assert len(password) >= 43 and len(secrets["UNISTACK_OPERATOR_TOKEN"]) >= 43

    socket_path = stack.home / "var/run/supervisor.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700

    pids = {p.pid for p in stack.processes()}
    addresses = listening_addresses(pids)
    ports = {port for _, port, _ in addresses}
    assert {stack.port(k) for k in PORT_KEYS} <= ports
    assert all(ip == "127.0.0.1" for ip, _, _ in addresses), addresses

    # Nothing on this machine shows the password in its command line or environment.
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            shown = " ".join(proc.info["cmdline"] or []) + json.dumps(proc.info["environ"] or {})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid():
            assert password not in shown, f"password visible in pid {proc.pid}"

    # Make traffic and a restart so logs have content, then search every file.
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password)
    assert client.set("k", "v")
    assert stack.cli("restart", "redis").returncode == 0
    stack.cli("stop")
    for path in stack.home.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if password.encode() in path.read_bytes():
            assert mode & 0o077 == 0, f"{path} holds the password with mode {mode:04o}"
            assert "log" not in path.relative_to(stack.home).parts, f"password in log {path}"


def test_two_stacks_run_side_by_side_and_stop_independently() -> None:
    homes = [make_home(), make_home()]
    stacks = [Stack(home, stack_environment(home)) for home in homes]
    try:
        for one in stacks:
            done = one.cli("start")
            assert done.returncode == 0, done.stderr
        assert all(status(one)["overall"] == "healthy" for one in stacks)
        first, second = stacks
        assert first.cli("stop").returncode == 0
        assert first.processes() == []
        assert status(second)["overall"] == "healthy"
        assert second.processes()
        assert second.cli("stop").returncode == 0
        assert second.processes() == []
    finally:
        for one in stacks:
            one.cleanup()


def snapshot(home: Path) -> dict[str, float]:
    """Every file's mtime but the control lock's (a lenient `stop` takes the lock)."""
    return {str(p): p.stat().st_mtime for p in home.rglob("*") if p.name != "control.lock"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REDIS_PORT", "abc"),
        ("HUB_PORT", "70000"),
        ("PROMETHEUS_PORT", "same-as-redis"),
        ("HUB_LOOP_INTERVAL", "0"),
        ("REDIS_LIVENESS_TIMEOUT", "-1"),
        ("UNISTACK_MODE", "swarm"),
    ],
)
def test_bad_configuration_exits_2_and_changes_nothing(stack: Stack, key: str, value: str) -> None:
    # A stack that ran once has var/ and .env: a bad value must not touch them.
    assert stack.cli("start").returncode == 0
    assert stack.cli("stop").returncode == 0
    before = snapshot(stack.home)
    if value == "same-as-redis":
        value = stack.env["REDIS_PORT"]
    stack.env[key] = value
    # start refuses; status and stop still run on the defaults, naming the bad value
    for command, code in (("start", 2), ("status", 2), ("stop", 0)):
        done = stack.cli(command)
        assert done.returncode == code, (command, done.stdout, done.stderr)
        assert key in done.stderr and value in done.stderr
    assert stack.processes() == []
    assert snapshot(stack.home) == before


def test_bad_configuration_on_a_fresh_home_creates_nothing(stack: Stack) -> None:
    stack.env["HUB_PORT"] = "70000"
    done = stack.cli("start")
    assert done.returncode == 2
    assert "HUB_PORT" in done.stderr and "70000" in done.stderr and "1-65535" in done.stderr
    assert list(stack.home.iterdir()) == []


def test_loose_env_file_is_refused(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    assert stack.cli("stop").returncode == 0
    os.chmod(stack.home / ".env", 0o644)
    done = stack.cli("start")
    assert done.returncode == 2
    assert "chmod 600" in done.stderr
    assert stack.processes() == []


def test_manage_production_sh_start_status_stop(stack: Stack) -> None:
    script = str(ROOT / "scripts/manage_production.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], env=stack.env, capture_output=True, text=True,
                              timeout=120, check=False)

    started = run("start")
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{stack.port('HUB_PORT')}" in started.stdout
    done = run("status", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["overall"] == "healthy"
    assert run("--help").returncode == 0
    assert "--json" in run("status", "--help").stdout
    assert run("stop").returncode == 0
    assert stack.processes() == []


def test_redis_data_survives_stop_and_start(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    password = read_env_file(stack.home)["REDIS_PASSWORD"]
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password)
    client.set("survives", "yes")
    client.xadd("stream", {"n": "1"})
    assert stack.cli("stop").returncode == 0
    assert stack.cli("start").returncode == 0
    client = redis.Redis(port=stack.port("REDIS_PORT"), password=password)
    assert client.get("survives") == b"yes"
    assert client.xlen("stream") == 1
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=stack.port("REDIS_PORT"), password="wrong").ping()


def test_restart_one_service_and_hub_api(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    hub = f"http://127.0.0.1:{stack.port('HUB_PORT')}"
    old = {s["name"]: s["pid"] for s in status(stack)["services"]}

    done = stack.cli("restart", "redis")
    assert done.returncode == 0, done.stderr
    new = {s["name"]: s["pid"] for s in status(stack)["services"]}
    assert new["redis"] != old["redis"]
    assert new["prometheus"] == old["prometheus"]

    request = urllib.request.Request(f"{hub}/services/redis/restart", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=3)
    assert refused.value.code == 401

    assert http_get(f"{hub}/health")[0] == 200
    assert http_get(f"{hub}/ready")[0] == 200
    code, body = http_get(f"{hub}/metrics")
    assert code == 200 and b'unistack_service_ready{service="redis"} 1.0' in body
    code, body = http_get(f"{hub}/events")
    kinds = [(e["service"], e["kind"]) for e in json.loads(body)["events"]]
    assert ("redis", "audit") in kinds  # the restart, with who asked
    assert http_get(f"{hub}/nothing")[0] == 404
    assert stack.cli("restart", "nosuch").returncode == 2


def test_prometheus_scrapes_the_hub_from_registry_targets(stack: Stack) -> None:
    stack.env["PROMETHEUS_SCRAPE_INTERVAL"] = "1s"
    assert stack.cli("start").returncode == 0
    query = (f"http://127.0.0.1:{stack.port('PROMETHEUS_PORT')}/api/v1/query?"
             "query=up%7Bservice%3D%22hub%22%7D")

    def hub_up() -> bool:
        result = json.loads(http_get(query)[1])["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"

    wait_for(hub_up, timeout=20)
    # The admin API and the lifecycle endpoints are off: asked as they are used (POST), not
    # by a GET that any Prometheus refuses with 405.
    base = f"http://127.0.0.1:{stack.port('PROMETHEUS_PORT')}"
    code, body = http_get(f"{base}/api/v1/admin/tsdb/snapshot", "POST")
    assert json.loads(body)["error"] == "admin APIs disabled" and code >= 500, body
    code, body = http_get(f"{base}/-/quit", "POST")
    assert code == 403 and b"Lifecycle API is not enabled" in body, body


def test_hub_stops_cleanly_on_sigterm_and_adopts_running_services(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    before = {s["name"]: s["pid"] for s in status(stack)["services"]}
    os.kill(before["hub"], signal.SIGTERM)

    def new_hub_ready() -> bool:
        document = status(stack)
        pids = {s["name"]: s["pid"] for s in document["services"]}
        return document["overall"] == "healthy" and pids["hub"] != before["hub"]

    wait_for(new_hub_ready)
    after = {s["name"]: s["pid"] for s in status(stack)["services"]}
    for name in ("redis", "prometheus", "ml_engine", "dashboard"):  # adopted, not restarted
        assert after[name] == before[name], name
    supervisord_log = (stack.home / "var/log/supervisord.log").read_text()
    # "expected" or not depends only on whether the hub had passed startsecs yet.
    assert "exited: hub (exit status 0;" in supervisord_log
    assert "hub stopped" in (stack.home / "var/log/hub.log").read_text()


def test_logs_interleave_every_service(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    done = stack.cli("logs", "-n", "200")
    assert done.returncode == 0
    prefixes = {line.split("]", 1)[0] + "]" for line in done.stdout.splitlines()}
    assert {"[hub]", "[redis]", "[prometheus]", "[supervisord]"} <= prefixes
    only = stack.cli("logs", "redis", "-n", "3")
    assert only.returncode == 0 and len(only.stdout.splitlines()) == 3
    missing = stack.cli("logs", "nosuch")
    assert missing.returncode == 1 and "no log for 'nosuch'" in missing.stderr
    assert stack.cli("logs", "-n", "0").returncode == 2
    hub_lines = [line for line in done.stdout.splitlines() if line.startswith("[hub]")]
    assert all(" [hub] " in line for line in hub_lines)
