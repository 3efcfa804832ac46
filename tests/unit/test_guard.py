"""The guard after its stdin closed: orphans of a dead supervisord are stopped, nothing is
touched while supervisord lives. Real child processes carry the home in their environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unistack import processes
from unistack.config import load_settings
from unistack.hub.guard import supervisord_gone


def child(home: Path, service: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "UNISTACK_HOME": str(home)}
    if service:
        env["SUPERVISOR_PROCESS_NAME"] = service
    return subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgrp(); "
                             "time.sleep(60)"], env=env)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNISTACK_HOME", str(tmp_path))
    (tmp_path / "var" / "run").mkdir(parents=True)
    (tmp_path / "var" / "log").mkdir()
    return tmp_path


def test_a_live_supervisord_means_an_ordinary_shutdown(home: Path) -> None:
    daemon, engine = child(home, None), child(home, "ml_engine")
    try:
        (home / "var/run/supervisord.pid").write_text(f"{daemon.pid}\n")
        assert supervisord_gone(load_settings()) == 0
        assert engine.poll() is None and daemon.poll() is None
    finally:
        for proc in (daemon, engine):
            proc.kill()
            proc.wait(5)


def test_orphans_of_a_dead_supervisord_are_stopped_and_reported(home: Path) -> None:
    engine, hub = child(home, "ml_engine"), child(home, "hub")
    (home / "var/run/supervisord.pid").write_text("999999\n")  # gone
    try:
        assert supervisord_gone(load_settings()) == 0
        assert engine.wait(5) < 0 and hub.wait(5) < 0  # ended by a signal
        assert processes.scan(home) == []
        log = (home / "var/log/hubguard.log").read_text()
        assert "supervisord is gone" in log and f"ml_engine (pid {engine.pid})" in log
        assert "every process of this home is stopped" in log
    finally:
        for proc in (engine, hub):
            proc.kill()
            proc.wait(5)
