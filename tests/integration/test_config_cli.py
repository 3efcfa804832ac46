"""Bad configuration and bad homes as an operator meets them through the real CLI: a
clear error in seconds, exit 2, naming file:line or the home; a home with a space works."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.stacks import Stack, stack_environment


def test_a_typo_in_dotenv_is_refused_in_two_seconds_naming_file_and_line(
    stack: Stack
) -> None:
    env_file = stack.home / ".env"
    env_file.write_text("# secrets\nREDIS_PROT=1234\n")
    env_file.chmod(0o600)
    began = time.monotonic()
    done = stack.cli("start")
    took = time.monotonic() - began
    assert done.returncode == 2 and took <= 2.0, (done.stderr, took)
    assert f"{env_file}:2: unknown key REDIS_PROT (did you mean REDIS_PORT?)" in done.stderr
    assert not (stack.home / "var/run/supervisor.sock").exists()
    # stop, status and logs still run on a broken configuration, and say what is wrong
    status = stack.cli("status", "--json")
    assert status.returncode == 2 and json.loads(status.stdout)["overall"] == "down"
    assert "unknown key REDIS_PROT" in status.stderr
    stopped = stack.cli("stop")
    assert stopped.returncode == 0 and "unknown key REDIS_PROT" in stopped.stderr
    assert stack.cli("config").returncode == 2


def test_a_lookalike_environment_variable_is_only_a_warning(stack: Stack) -> None:
    stack.env["HUB_PROT"] = "1"
    done = stack.cli("config")
    assert done.returncode == 0
    assert "HUB_PROT is not a unistack key (did you mean HUB_PORT?)" in done.stderr


def test_a_read_only_home_is_one_sentence_not_a_traceback(stack: Stack) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stack.home)],
                   check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(stack.home)], check=True)
        began = time.monotonic()
        done = stack.cli("start")
        took = time.monotonic() - began
    finally:
        subprocess.run(["umount", "-l", str(stack.home)], check=False)
    assert done.returncode == 2 and took <= 2.0
    assert f"UNISTACK_HOME={stack.home} is unusable: Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_home_with_a_space_runs_the_whole_stack() -> None:
    parent = Path(tempfile.mkdtemp(prefix="us-", dir="/tmp"))
    home = parent / "a b"
    home.mkdir()
    running = Stack(home, stack_environment(home))
    try:
        done = running.cli("start", timeout=90)
        assert done.returncode == 0, done.stderr
        status = json.loads(running.cli("status", "--json").stdout)
        assert status["overall"] == "healthy"
        assert (home / "var/data/redis/appendonlydir").is_dir()
        assert running.cli("stop").returncode == 0
    finally:
        running.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
