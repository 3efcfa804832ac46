"""ResourceWatcher: thresholds with hysteresis on real processes and real disks."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import busy_loop
from unistack.config import load_settings
from unistack.hub.events import EventLog
from unistack.hub.resources import ResourceWatcher, filesystems, mount_point


def watcher(tmp_path: Path, pids: dict[str, int], **environ: str) -> tuple[ResourceWatcher,
                                                                            EventLog]:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path), **environ})
    events = EventLog()
    return ResourceWatcher(settings, lambda: pids, events, [tmp_path]), events


def test_free_disk_below_the_threshold_raises_one_event_and_it_stays_raised(
    tmp_path: Path,
) -> None:
    resources, events = watcher(tmp_path, {}, DISK_FREE_WARN_PERCENT="100")
    for _ in range(3):
        resources.sample()
    raised = [e for e in events.recent() if e["kind"] == "resource"]
    assert len(raised) == 1
    assert raised[0]["service"] == "stack" and "free disk" in raised[0]["detail"]
    assert f"under {mount_point(tmp_path)}" in raised[0]["detail"]
    [warning] = resources.disk_warnings
    assert warning.startswith(("low disk: free disk", "disk full: free disk"))
    assert str(tmp_path) in warning


def test_directories_on_one_filesystem_are_one_incident(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path),
                                      "DISK_FREE_WARN_PERCENT": "100"})
    events = EventLog()
    dirs = [tmp_path / name for name in ("data", "log", "run")]
    for directory in dirs:
        directory.mkdir()
    ResourceWatcher(settings, dict, events, dirs).sample()
    assert len([e for e in events.recent() if e["kind"] == "resource"]) == 1
    assert filesystems(dirs) == {mount_point(tmp_path): dirs}


def test_plenty_of_free_disk_raises_nothing(tmp_path: Path) -> None:
    resources, events = watcher(tmp_path, {}, DISK_FREE_WARN_PERCENT="0.001")
    resources.sample()
    assert events.recent() == []


@pytest.fixture
def busy_process() -> Iterator[subprocess.Popen[bytes]]:
    process = busy_loop(30)
    yield process
    process.kill()
    process.wait()


def test_a_busy_service_raises_a_cpu_event_once(
    tmp_path: Path, busy_process: subprocess.Popen[bytes]
) -> None:
    resources, events = watcher(tmp_path, {"engine": busy_process.pid},
                                CPU_WARN_PERCENT="20", DISK_FREE_WARN_PERCENT="0.001")
    resources.sample()  # primes the CPU counter
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)  # CPU percent is measured over the time between two samples
        resources.sample()
        if any(e["kind"] == "resource" for e in events.recent()):
            break
    cpu = [e for e in events.recent() if e["kind"] == "resource"]
    assert len(cpu) == 1 and cpu[0]["service"] == "engine" and "CPU" in cpu[0]["detail"]


def test_a_vanished_process_is_skipped(tmp_path: Path) -> None:
    resources, events = watcher(tmp_path, {"gone": 2**22 + 12345},
                                DISK_FREE_WARN_PERCENT="0.001")
    resources.sample()
    assert events.recent() == []
