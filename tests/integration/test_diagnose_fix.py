"""`fix_all_container_issues.sh` and `fix_frontend_access.sh` on real stacks broken for
real: each broken state found by diagnose with its id and evidence, repaired by one fix
run, and gone on the next diagnosis; what a fix must not repair by itself (a foreign
process on our port, a full disk) named with who holds it and how to free it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.ports import free_ports
from harness.stacks import Stack
from harness.waiting import wait_for
from tests.chaos.test_chaos import password, services, start
from tests.chaos.test_redis_faults import fill_disk, tmpfs
from tests.conftest import ROOT
from tests.integration.test_diagnose import by_id, diagnose, secrets_of
from unistack import processes
from unistack.supervisor import SupervisorClient

pytestmark = pytest.mark.integration

FIX_ALL = str(ROOT / "scripts/fix_all_container_issues.sh")
FIX_FRONTEND = str(ROOT / "scripts/fix_frontend_access.sh")


def run(stack: Stack, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=stack.env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def not_ok(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i: f for i, f in by_id(document).items() if f["status"] != "ok"}


def hub_post(stack: Stack, path: str, body: dict[str, Any]) -> int:
    """POST to the hub as the operator (its token from .env)."""
    token = next(line.split("=", 1)[1] for line in (stack.home / ".env").read_text()
                 .splitlines() if line.startswith("UNISTACK_OPERATOR_TOKEN="))
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}",
                                     method="POST", data=json.dumps(body).encode())
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def test_a_running_stack_broken_many_ways_is_repaired_by_one_fix_run(stack: Stack) -> None:
    start(stack, BACKUP_INTERVAL="0", PROMETHEUS_SCRAPE_INTERVAL="1s")
    home = stack.home
    (home / ".env").chmod(0o644)  # the secrets readable by everyone
    # (A directory's mode is repaired by the hub before each start of a service: the
    # killed-supervisord test below breaks them.)
    # Prometheus scrapes the engine on a port nothing listens on: its target is down.
    targets = home / "var/run/prometheus/targets/services.json"
    wrong = free_ports(1)[0]
    targets.write_text(targets.read_text().replace(f":{stack.port('ML_ENGINE_PORT')}\"",
                                                   f":{wrong}\""))
    # Redis stopped: its runtime config broken, then killed; every restart fails.
    redis_conf = home / "var/run/redis.conf"
    redis_conf.write_text(redis_conf.read_text() + "this-is-not-a-directive yes\n")
    os.kill(services(stack)["redis"]["pid"], signal.SIGKILL)
    wait_for(lambda: "service.redis" in not_ok(diagnose(stack)[1])
             and "prometheus.targets" in not_ok(diagnose(stack)[1]), timeout=30)
    before = snapshot_mtimes(home)
    code, document = diagnose(stack)
    assert snapshot_mtimes(home) == before  # diagnosing changed nothing
    found = not_ok(document)
    assert code == 2
    assert "mode 0644" in found["env.permissions"]["evidence"]
    # the diff runs from the file on disk to what config.env renders
    assert "-this-is-not-a-directive yes" in found["drift.runtime:var/run/redis.conf"][
        "evidence"]
    assert any(line.startswith("-") and f":{wrong}" in line for line in found[
        "drift.runtime:var/run/prometheus/targets/services.json"]["evidence"].splitlines())
    assert "ml_engine" in found["prometheus.targets"]["evidence"]
    assert found["service.redis"]["status"] == "fail"
    plan = run(stack, FIX_ALL, "--dry-run")
    assert plan.stdout.splitlines()[:2] == [
        "would run fix.env-permissions for env.permissions",
        "would run fix.runtime-config for drift.runtime:var/run/redis.conf, "
        "drift.runtime:var/run/prometheus/targets/services.json"], plan.stdout
    assert "fix.restart:redis" not in plan.stdout  # the re-rendered file restarts it
    done = run(stack, FIX_ALL)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "fix.runtime-config: runtime files re-rendered; redis restarted and ready" in \
        done.stdout, done.stdout + done.stderr
    fixed = next(line for line in done.stdout.splitlines() if line.startswith("fixed: "))
    for repaired in ("env.permissions", "drift.runtime:var/run/redis.conf",
                     "drift.runtime:var/run/prometheus/targets/services.json",
                     "service.redis"):
        assert repaired in fixed, done.stdout
    # The second diagnosis: nothing failing; Prometheus has the right target again.
    wait_for(lambda: "prometheus.targets" not in not_ok(diagnose(stack)[1]), timeout=20)
    code, after = diagnose(stack)
    assert after["counts"]["fail"] == 0, not_ok(after)
    assert code in (0, 1)
    assert oct((home / ".env").stat().st_mode & 0o777) == "0o600"
    everything = plan.stdout + done.stdout + done.stderr + json.dumps(document)
    assert all(secret not in everything for secret in secrets_of(stack))
    again = run(stack, FIX_ALL)  # idempotent: nothing left to do
    assert again.stdout.startswith("nothing to fix"), again.stdout


def snapshot_mtimes(home: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in [home, *home.rglob("*")]
            if not p.is_symlink() and p.exists() and "data" not in p.parts
            and p.suffix != ".log" and "pids" not in p.parts}


def test_a_killed_supervisord_leaves_orphans_and_stale_files_repaired_by_one_fix_run(
        stack: Stack) -> None:
    start(stack)
    daemon = int((stack.home / "var/run/supervisord.pid").read_text())
    orphans = {name: s["pid"] for name, s in services(stack).items() if s["pid"]}
    # The guard stops what a killed supervisord leaves running: kill it first, once it
    # has recorded the programs' pids (each second; Redis hides its environment).
    wait_for((stack.home / "var/run/pids/redis").exists, timeout=10)
    guard = next(p.pid for p in processes.scan(stack.home) if p.service == "hubguard")
    os.kill(guard, signal.SIGKILL)
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not processes.start_tick(daemon), timeout=5)
    (stack.home / ".env").chmod(0o644)  # the secrets readable by everyone
    (stack.home / "var/data/market").chmod(0o777)  # a data directory anyone may write
    shutil.rmtree(stack.home / "var/backups")  # a missing directory
    code, document = diagnose(stack)
    found = not_ok(document)
    assert code == 2
    assert "mode 0644" in found["env.permissions"]["evidence"]
    assert "mode 0777" in found["fs.mode:var/data/market"]["evidence"]
    assert f"{stack.home}/var/backups: absent" in found["fs.missing"]["evidence"]
    assert found["supervisord.reachable"]["fix"] == "fix.start"
    assert found["files.stale-pid"]["evidence"].endswith(f"pid {daemon}, no such process")
    assert "nothing answers on it" in found["files.stale-socket"]["evidence"]
    assert found["orphan.redis"]["evidence"] == f"pid {orphans['redis']}"
    done = run(stack, FIX_ALL)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    lines = done.stdout.splitlines()
    ran = [line.split(":")[0] for line in lines if line.startswith("fix.")]
    assert ran == ["fix.env-permissions", "fix.directories", "fix.permissions",
                   "fix.stale-files", "fix.orphans", "fix.start"], done.stdout
    assert "fix.start: the stack was started; every service is ready" in lines
    assert "fix.orphans: orphans stopped" in lines
    now = {s["pid"] for s in services(stack).values()}
    assert now.isdisjoint(orphans.values())  # the orphans were stopped...
    assert all(s["ready"] for s in services(stack).values())  # ...and the stack started
    _, after = diagnose(stack)
    assert after["counts"]["fail"] == 0, not_ok(after)
    assert not {"env.permissions", "fs.mode:var/data/market", "fs.missing",
                "files.stale-pid", "files.stale-socket", "orphan.redis"} & set(not_ok(after))


def test_a_full_disk_is_named_with_its_filesystem_and_clears_when_space_returns(
        stack: Stack) -> None:
    with tmpfs(stack.home / "var/data/redis", size="16m") as data:
        start(stack, BACKUP_INTERVAL="0")
        filler = fill_disk(data)
        client = redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))
        with contextlib.suppress(redis.ResponseError):
            client.bgsave()
        wait_for(lambda: services(stack)["redis"]["state"] == "DEGRADED", timeout=15)
        code, document = diagnose(stack)
        found = not_ok(document)
        disk = found[f"disk.free:{data}"]
        assert code == 2 and disk["status"] == "fail"
        assert disk["evidence"].startswith(f"{data}: 0.0 % free (0 MiB)")
        assert "grow the volume" in disk["remedy"]
        redis_down = found["service.redis"]
        assert "rdb_last_bgsave_status:err" in redis_down["evidence"]
        assert redis_down["fix"] == ""  # a restart would not help: it says so
        assert "a restart would not help" in redis_down["remedy"]
        # The engine waits for Redis to take writes again; it does not crash-loop.
        assert "program.ml_engine" not in found, found.get("program.ml_engine")
        assert [f for f in found.values() if "fix.restart" in f["fix"]] == []
        done = run(stack, FIX_ALL)  # nothing it may do: the disk is the operator's
        assert "fix.restart:redis" not in done.stdout and done.returncode == 2, done.stdout
        assert f"disk.free:{data}" in done.stdout  # what remains
        filler.unlink()
        with contextlib.suppress(redis.ResponseError):  # one may be running already
            client.bgsave()
        wait_for(lambda: services(stack)["redis"]["ready"], timeout=15)
        _, after = diagnose(stack)
        assert f"disk.free:{data}" not in not_ok(after) and "service.redis" not in not_ok(after)
        stack.cleanup()


def test_fix_frontend_access_names_the_foreign_holder_then_restarts_the_dashboard(
        stack: Stack) -> None:
    # The hub retries a service that failed to start after 30 s: the fix must not wait.
    start(stack, BACKUP_INTERVAL="0", RESTART_BACKOFF_INITIAL="30")
    port = stack.port("DASHBOARD_PORT")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_PORT, str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin and holder.stdout
    try:
        assert hub_post(stack, "/maintenance", {"services": ["dashboard"], "reason": "test",
                                                "pid": os.getpid()}) == 201
        wait_for(lambda: services(stack)["dashboard"]["state"] == "MAINTENANCE", timeout=15)
        # held: the holder stops it, as a restore stops what it holds
        SupervisorClient(stack.home / "var/run/supervisor.sock").stop("dashboard")
        wait_for(lambda: port_free(port), timeout=15)
        holder.stdin.write("take it\n")  # the dashboard is stopped: take its port
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "listening"
        assert hub_post(stack, "/maintenance/end", {}) == 200
        wait_for(lambda: services(stack)["dashboard"]["state"] in ("FAILED", "LOOPING"),
                 timeout=30)  # gunicorn gave up binding; the hub holds it down
        assert {"port.foreign:DASHBOARD_PORT", "service.dashboard"} <= set(
            not_ok(diagnose(stack)[1]))
        blocked = run(stack, FIX_FRONTEND)
        assert blocked.returncode == 2, blocked.stdout + blocked.stderr
        assert "fix.restart:dashboard" not in blocked.stdout  # futile while the port is held
        assert "FAIL port.foreign:DASHBOARD_PORT" in blocked.stdout
        assert f"pid {holder.pid}" in blocked.stdout
        assert "a fix never kills a foreign process" in blocked.stdout
        assert holder.poll() is None  # it was not killed
    finally:
        holder.kill()
        holder.wait()
    done = run(stack, FIX_FRONTEND)
    assert "fix.restart:dashboard: dashboard restarted and ready" in done.stdout, \
        done.stdout + done.stderr
    assert done.returncode in (0, 1)
    assert services(stack)["dashboard"]["ready"]


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


# A process that takes PORT when told (a line on stdin), says so and holds it.
HOLD_PORT = """
import socket, sys, time
sys.stdin.readline()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(600)
"""


def test_a_drifted_port_in_a_copy_of_supervisord_conf_is_found_and_put_back(
        stack: Stack, tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("config.env", "supervisord.conf", "redis.conf", "prometheus.yml",
                 "alert_rules.yml"):
        shutil.copy(ROOT / name, copy / name)
    conf = copy / "supervisord.conf"
    conf.write_text(conf.read_text().replace(
        ":%(ENV_PROMETHEUS_PORT)s", ":9090"))
    env = {**stack.env, "PYTHONPATH": str(copy / "src")}
    done = subprocess.run([sys.executable, "-m", "unistack", "diagnose", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    found = not_ok(json.loads(done.stdout))
    [drifted] = [f for i, f in found.items() if i.startswith("drift.supervisord:")]
    assert drifted["status"] == "fail" and done.returncode == 2
    assert "[program:prometheus]" in drifted["evidence"]
    assert (f"port 9090 where %(ENV_PROMETHEUS_PORT)s (config.env: "
            f"{stack.port('PROMETHEUS_PORT')}) belongs") in drifted["evidence"]
    assert str(copy / "supervisord.conf") in drifted["remedy"]
    done = subprocess.run([sys.executable, "-m", "unistack", "fix", "--only", "drift"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.startswith(f"fix.supervisord-conf: {conf}: line "), done.stdout
    assert conf.read_text() == (ROOT / "supervisord.conf").read_text()  # repaired
    again = subprocess.run([sys.executable, "-m", "unistack", "diagnose", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert not [i for i in not_ok(json.loads(again.stdout)) if i.startswith("drift.")]
