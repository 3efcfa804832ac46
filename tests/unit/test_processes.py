"""Ownership of processes, on a /proc fixture tree; terminate() on real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from unistack import processes
from unistack.processes import Owned


def fake_process(proc: Path, pid: int, ppid: int, tick: int, env: dict[str, str], *,
                 state: str = "S", comm: str = "x (y)") -> None:
    folder = proc / str(pid)
    folder.mkdir()
    rest = [state, str(ppid), str(pid)] + ["0"] * 16 + [str(tick), "0"]
    (folder / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
    (folder / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))


def tree(tmp_path: Path) -> tuple[Path, Path]:
    proc, home = tmp_path / "proc", tmp_path / "home"
    proc.mkdir()
    (home / "var" / "run").mkdir(parents=True)
    (home / "var" / "run" / "supervisord.pid").write_text("100\n")
    ours, other = {"UNISTACK_HOME": str(home)}, {"UNISTACK_HOME": str(tmp_path / "other")}
    fake_process(proc, 100, 1, 500, ours)  # supervisord, by its pid file
    fake_process(proc, 101, 100, 510, {**ours, "SUPERVISOR_PROCESS_NAME": "hub"})
    fake_process(proc, 102, 1, 520, {**ours, "SUPERVISOR_PROCESS_NAME": "ml_engine"})  # orphan
    fake_process(proc, 103, 102, 530, {**ours, "SUPERVISOR_PROCESS_NAME": "ml_engine"})
    fake_process(proc, 104, 1, 540, ours)  # a CLI command of the same home: not a service
    fake_process(proc, 105, 1, 550, {**other, "SUPERVISOR_PROCESS_NAME": "hub"})
    fake_process(proc, 106, 1, 560, {**ours, "SUPERVISOR_PROCESS_NAME": "redis"}, state="Z")
    fake_process(proc, 107, 1, 570, {"TITLE": "redis-server 127.0.0.1:6380"})  # env hidden
    return proc, home


def test_scan_finds_the_homes_processes_by_environ_pid_file_and_records(tmp_path: Path) -> None:
    proc, home = tree(tmp_path)
    assert [(p.service, p.pid) for p in processes.scan(home, proc)] == [
        ("supervisord", 100), ("hub", 101), ("ml_engine", 102), ("ml_engine", 103)]
    processes.pid_dir(home).mkdir()
    (processes.pid_dir(home) / "redis").write_text("107 570\n")  # recorded by the guard
    (processes.pid_dir(home) / "prometheus").write_text("105 999\n")  # pid reused since
    found = processes.scan(home, proc)
    assert [(p.service, p.pid) for p in found][-1] == ("redis", 107)
    assert "prometheus" not in {p.service for p in found}
    leaders = processes.leaders(found)
    assert {name: p.pid for name, p in leaders.items()} == {
        "supervisord": 100, "hub": 101, "ml_engine": 102, "redis": 107}


def test_a_stale_pid_file_is_no_supervisord(tmp_path: Path) -> None:
    proc, home = tree(tmp_path)
    (home / "var" / "run" / "supervisord.pid").write_text("105\n")  # another home's process
    assert processes.supervisord_pid(home, proc) == 0
    (home / "var" / "run" / "supervisord.pid").write_text("999\n")  # gone
    assert processes.supervisord_pid(home, proc) == 0
    assert processes.start_tick(106, proc) == 0  # a zombie has no start tick


def test_record_writes_pid_and_tick_only_for_live_processes(tmp_path: Path) -> None:
    proc, home = tree(tmp_path)
    processes.record(home, {"hub": 101, "gone": 999}, proc)
    assert (processes.pid_dir(home) / "hub").read_text() == "101 510\n"
    assert not (processes.pid_dir(home) / "gone").exists()


SLEEPER = """
import os, signal, sys, time
os.setpgrp()
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: (print("term", sys.argv[1], flush=True),
                                              os._exit(0)))
print("up", flush=True)
time.sleep(60)
"""


def child(name: str, log: Path) -> tuple[subprocess.Popen[str], Owned]:
    handle = log.open("a")
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, name], stdout=subprocess.PIPE,
                            stderr=handle, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    return proc, Owned(name, proc.pid, proc.pid, os.getpid(), processes.start_tick(proc.pid))


def test_terminate_goes_in_dependency_order_and_kills_what_ignores_sigterm(
        tmp_path: Path) -> None:
    log = tmp_path / "err"
    children = [child(name, log) for name in ("redis", "ml_engine", "hub")]
    stubborn, owned_stubborn = child("stubborn", log)
    said: list[str] = []
    left = processes.terminate([o for _, o in children] + [owned_stubborn], 3.0, said.append)
    assert left == []
    assert [line.split()[0] for line in said] == ["hub", "ml_engine", "redis", "stubborn"]
    for proc, owned in children:
        assert proc.communicate(timeout=5)[0] == f"term {owned.service}\n"
    assert stubborn.wait(5) == -signal.SIGKILL


def test_terminate_never_signals_a_reused_pid(tmp_path: Path) -> None:
    proc, owned = child("redis", tmp_path / "err")
    try:
        stale = owned._replace(tick=owned.tick - 1)  # same pid, another start: not ours
        assert processes.terminate([stale], 1.0, lambda _: None) == []
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(5)
