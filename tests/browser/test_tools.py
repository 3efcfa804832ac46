"""scripts/bootstrap.sh --test-tools installs Debian's chromium and wrk when they are
missing, and only then (run against a stand-in apt-get that records what it was asked);
without the option, nothing of the kind is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APT = '#!/bin/sh\necho "apt-get $*" >> "$RECORD"\n'


def bootstrap(tmp_path: Path, *args: str, missing: tuple[str, ...]) -> tuple[int, str, str]:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "apt-get").write_text(APT)
    (fake / "apt-get").chmod(0o755)
    record = tmp_path / "record"
    record.touch()
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "RECORD": str(record),
           # A tool named here is missing; the other one is found (any program will do).
           "CHROMIUM_BIN": str(tmp_path / "no-chromium") if "chromium" in missing else "sh",
           "WRK_BIN": str(tmp_path / "no-wrk") if "wrk" in missing else "sh"}
    done = subprocess.run([str(ROOT / "scripts/bootstrap.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr, record.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs as root")
def test_missing_test_tools_are_installed_without_recommends(tmp_path: Path) -> None:
    code, out, record = bootstrap(tmp_path, "--test-tools", missing=("chromium", "wrk"))
    assert code == 0, out
    assert "apt-get update -qq" in record
    assert "apt-get install -y -qq --no-install-recommends chromium wrk" in record
    assert "installing the test tools chromium wrk" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs as root")
def test_only_what_is_missing_is_installed(tmp_path: Path) -> None:
    _, _, record = bootstrap(tmp_path, "--test-tools", missing=("wrk",))
    assert "apt-get install -y -qq --no-install-recommends wrk" in record
    assert "chromium" not in record


def test_present_tools_or_no_option_install_nothing(tmp_path: Path) -> None:
    code, out, record = bootstrap(tmp_path, "--test-tools", missing=())
    assert code == 0, out
    assert record == ""
    code, out, record = bootstrap(tmp_path, missing=("chromium", "wrk"))
    assert code == 0, out
    assert record == ""  # manage_production.sh start never installs test tools
