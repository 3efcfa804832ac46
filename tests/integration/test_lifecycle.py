"""start, stop and restart against real stacks (issue 9, items 4 and 5): one control lock
per home, a start interrupted by a stop, and a restart that fails says why."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness.stacks import Stack
from harness.waiting import wait_for
from unistack import processes
from unistack.lock import control_lock, lock_path


def cli(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "unistack", *args], env=stack.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holder(stack: Stack) -> str:
    """The command holding the control lock now (its line in the lock file), or ''."""
    path = lock_path(stack.home)
    return path.read_text() if path.exists() else ""


def test_two_starts_train_and_launch_once_and_no_wait_is_busy(stack: Stack) -> None:
    first, second = cli(stack, "start"), cli(stack, "start")
    (out1, err1), (out2, err2) = first.communicate(timeout=90), second.communicate(timeout=90)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    both = out1 + out2
    assert both.count("training 'default'") == 1 and both.count("starting unistack") == 1
    assert "already running" in both and "another start (pid" in both and "waiting" in both
    assert both.count("unistack is ready:") == 2

    with control_lock(stack.home, "restore", True, print):
        for command in (["start"], ["stop"], ["restart"], ["restart", "redis"]):
            done = stack.cli(*command, "--no-wait", timeout=10)
            assert done.returncode == 3, (command, done)
            assert "busy: another restore (pid" in done.stderr
    status, health = stack.cli("status"), stack.cli("health")  # nothing was touched
    assert (status.returncode, health.returncode) == (0, 0), (status, health)
    assert "stack: healthy" in health.stdout


def slow_redis(tmp: Path) -> str:
    """A REDIS_SERVER_BIN that runs and never listens: the stack is never ready."""
    script = tmp / "redis-never-ready"
    script.write_text("#!/bin/sh\nexec sleep 120\n")
    script.chmod(0o755)
    return str(script)


def test_stop_during_start_waits_for_the_lock_and_start_says_stopped_while_starting(
        stack: Stack) -> None:
    stack.env["REDIS_SERVER_BIN"] = slow_redis(stack.home)
    starting = cli(stack, "start")
    wait_for(lambda: " start " in holder(stack), timeout=30)
    begun = time.monotonic()
    stopped = stack.cli("stop", timeout=60)
    out, err = starting.communicate(timeout=30)
    took = time.monotonic() - begun
    assert stopped.returncode == 0, stopped.stderr
    assert "another start (pid" in stopped.stdout and "no process left" in stopped.stdout
    assert starting.returncode == 1 and "stopped while starting" in err, (out, err)
    assert "unistack is ready" not in out and took < 15
    assert processes.scan(stack.home) == [] and stack.processes() == []


def corrupt_aof_manifest(stack: Stack) -> None:
    """The next Redis process reads this manifest and exits at once."""
    manifest = next((stack.home / "var/data/redis").glob("**/*.manifest"))
    manifest.write_text("this is not a manifest\n")


def test_restart_succeeds_only_with_a_fresh_ready_process_and_a_failure_says_why(
        stack: Stack) -> None:
    stack.env["START_TIMEOUT"] = "20"
    assert stack.cli("start").returncode == 0
    old = processes.leaders(processes.scan(stack.home))
    done = stack.cli("restart", "prometheus")
    assert done.returncode == 0 and "prometheus ready again (pid" in done.stdout, done
    new_pid = int(done.stdout.split("(pid ")[1].rstrip(")\n"))
    assert new_pid != old["prometheus"].pid
    assert processes.start_tick(new_pid) > old["prometheus"].tick

    corrupt_aof_manifest(stack)
    begun = time.monotonic()
    failed = stack.cli("restart", "redis")
    assert failed.returncode == 1, failed
    assert "ready again" not in failed.stdout
    assert "redis failed to start again" in failed.stderr or "not ready again" in failed.stderr
    assert "last lines of" in failed.stderr and "redis.log" in failed.stderr
    assert "manifest" in failed.stderr.lower()  # Redis's own reason, from its log
    assert time.monotonic() - begun < 25
    status = stack.cli("status")
    assert status.returncode == 2 and "redis " in status.stdout
