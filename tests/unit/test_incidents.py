"""hub.incidents: what an incident file holds, on real processes, with secrets redacted."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.waiting import wait_for
from unistack.hub.incidents import IncidentRecorder, Retention, process_report
from unistack.redaction import redact

SECRET = "s3cret-redis-password-0123456789"
STACK_DUMPER = textwrap.dedent("""
    import faulthandler, signal, sys, time
    log = open(sys.argv[1], "a")
    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)
    log.write("registered\\n")
    log.flush()
    def serve_forever():
        while True:
            time.sleep(0.05)
    serve_forever()
""")






@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    logs = tmp_path / "log"
    logs.mkdir()
    return logs


@pytest.fixture
def recorder(tmp_path: Path, log_dir: Path) -> IncidentRecorder:
    directory = tmp_path / "incidents"
    directory.mkdir()
    return IncidentRecorder(directory, log_dir, 5, lambda text: redact(text, (SECRET,)))


def stopped_child(spawn: Callable[..., subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    child = spawn("sleep", "60")
    child.send_signal(signal.SIGSTOP)
    status = Path(f"/proc/{child.pid}/status")
    wait_for(lambda: "T (stopped)" in status.read_text())
    return child


def test_capture_of_a_stopped_process_writes_a_private_redacted_file(
    spawn: Callable[..., subprocess.Popen[bytes]], recorder: IncidentRecorder,
    tmp_path: Path, log_dir: Path,
) -> None:
    child = stopped_child(spawn)
    old = [f"old line {i}" for i in range(20)]
    recent = ["2026-11-24 10:00:00.000 [INFO] [redis] serving",
              f"2026-11-24 10:00:01.000 [ERROR] [redis] AUTH {SECRET} refused",
              "2026-11-24 10:00:02.000 [INFO] [redis] last words"]
    (log_dir / "redis.log").write_text("\n".join(old + recent) + "\n")
    verdict = "liveness failed 2 times in a row (timed out); process state stopped"
    started = time.monotonic()
    path = recorder.capture("redis", child.pid, verdict, python=False)
    assert time.monotonic() - started < 1.0 + 2.0  # bounded; nvidia-smi may take its 2 s
    assert path.parent == tmp_path / "incidents"
    assert path.name.endswith("-redis.txt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert f"verdict: {verdict}" in text
    assert f"pid: {child.pid}" in text
    assert re.search(r"^State:\s+T \(stopped\)$", text, re.MULTILINE)
    assert re.search(r"^wchan: ", text, re.MULTILINE)
    assert "== last 5 log lines of redis" in text
    assert "last words" in text
    assert "old line 14" not in text  # only the tail
    assert "== GPU" in text
    assert SECRET not in text
    assert "AUTH ****" + SECRET[-4:] in text
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_capture_without_a_log_file_or_a_process_still_writes(
    recorder: IncidentRecorder,
) -> None:
    path = recorder.capture("prometheus", 0, "not ready 20 s after start", python=True)
    text = path.read_text()
    assert "verdict: not ready 20 s after start" in text
    assert "no process" in text


def test_process_report_of_pid_0_or_a_dead_pid_does_not_raise(
    spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    assert process_report(0) == "no process"
    child = spawn("true")
    child.wait(5)
    report = process_report(child.pid)
    assert "unreadable" in report
    assert "wchan:" in report


def test_process_report_reads_the_given_proc_tree(tmp_path: Path) -> None:
    task = tmp_path / "42" / "task" / "42"
    task.mkdir(parents=True)
    (tmp_path / "42" / "status").write_text(
        "Name:\tredis-server\nUmask:\t0022\nState:\tD (disk sleep)\nPPid:\t1\n"
        "Threads:\t4\nVmRSS:\t1024 kB\nSigQ:\t0/1\n")
    (tmp_path / "42" / "wchan").write_text("io_schedule")
    (tmp_path / "42" / "stack").write_text("[<0>] io_schedule+0x12/0x40\n")
    (task / "children").write_text("43 44 ")
    report = process_report(42, proc=tmp_path)
    assert report.splitlines()[:5] == ["Name:\tredis-server", "State:\tD (disk sleep)",
                                       "PPid:\t1", "Threads:\t4", "VmRSS:\t1024 kB"]
    assert "Umask" not in report
    assert "wchan: io_schedule" in report
    assert "children: 43 44" in report
    assert "io_schedule+0x12" in report


def test_capture_of_a_python_service_holds_its_stack(
    spawn: Callable[..., subprocess.Popen[bytes]], recorder: IncidentRecorder, log_dir: Path,
) -> None:
    log = log_dir / "engine.log"
    log.touch()
    child = spawn(sys.executable, "-c", STACK_DUMPER, str(log))
    wait_for(lambda: "registered" in log.read_text())
    path = recorder.capture("engine", child.pid, "hung", python=True)
    text = path.read_text()
    assert "a Python stack dump was requested with SIGUSR1" in text
    assert re.search(r'^\s*File "<string>", line \d+ in serve_forever$', text, re.MULTILINE)
    assert child.poll() is None  # SIGUSR1 asked for a dump; it did not kill


def test_incident_files_are_bounded_by_age_and_count(tmp_path: Path) -> None:
    directory = tmp_path / "incidents"
    directory.mkdir()
    now = time.time()
    for n, age in enumerate([40 * 86400, 5, 4, 3, 2, 1]):
        path = directory / f"2026{n:02d}-redis.txt"
        path.write_text("x")
        os.utime(path, (now - age, now - age))
    (directory / "notes.md").write_text("not an incident file")
    recorder = IncidentRecorder(directory, tmp_path, 5, lambda text: text,
                                Retention(max_age=30 * 86400, max_files=3))
    deleted = recorder.prune()
    assert sorted(p.name for p in deleted) == ["202600-redis.txt", "202601-redis.txt",
                                               "202602-redis.txt"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "202603-redis.txt", "202604-redis.txt", "202605-redis.txt", "notes.md"]
    recorder.capture("redis", 0, "hung", python=False)  # a new one: the oldest goes
    assert len(list(directory.glob("*.txt"))) == 3
    assert not (directory / "202603-redis.txt").exists()
