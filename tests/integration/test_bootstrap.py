"""scripts/bootstrap.sh installs Debian's redis-server and prometheus without letting
them start or stay enabled (they would take the ports of a first `start` on an
ordinary server), run against stand-ins for apt-get and systemctl that record what they
were asked and what the install could see."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APT = """#!/bin/sh
echo "apt-get $*" >> "$RECORD"
if [ "$1" = install ]; then
  if [ -e "$POLICY" ]; then echo "policy during install: $(sh "$POLICY"; echo $?)" >> "$RECORD"
  else echo "policy during install: none" >> "$RECORD"; fi
fi
"""
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$RECORD"
if [ "$1" = is-active ]; then
  for unit in $ACTIVE; do [ "$unit" = "$3" ] && exit 0; done
  exit 3
fi
"""


def bootstrap(tmp_path: Path, systemd: bool, active: str = "") -> tuple[str, str]:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for name, text in (("apt-get", APT), ("systemctl", SYSTEMCTL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    record, policy = tmp_path / "record", tmp_path / "policy-rc.d"
    systemd_dir = tmp_path / "systemd"
    if systemd:
        systemd_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "RECORD": str(record),
           "POLICY": str(policy), "ACTIVE": active, "UNISTACK_POLICY_RC_D": str(policy),
           "UNISTACK_SYSTEMD_DIR": str(systemd_dir),
           "REDIS_SERVER_BIN": str(tmp_path / "no-redis-server")}
    done = subprocess.run([str(ROOT / "scripts/bootstrap.sh")], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # progress goes to stderr: stdout is the next command's
    return done.stderr, record.read_text()


def test_the_install_runs_with_starts_denied_and_the_units_disabled_after(
    tmp_path: Path,
) -> None:
    out, record = bootstrap(tmp_path, systemd=True)
    assert "apt-get install -y -qq --no-install-recommends redis-server" in record
    assert "policy during install: 101" in record  # invoke-rc.d would not start it
    assert not (tmp_path / "policy-rc.d").exists()  # and it is gone afterwards
    assert "systemctl disable --now --quiet redis-server.service" in record
    assert "systemctl disable --now --quiet prometheus.service" in record
    assert "their own services not started" in out
    assert "disabled the packages' own units" in out


def test_without_systemd_nothing_is_disabled(tmp_path: Path) -> None:
    _, record = bootstrap(tmp_path, systemd=False)
    assert "policy during install: 101" in record
    assert "systemctl" not in record


@pytest.mark.parametrize("active", ["redis-server.service"])
def test_what_already_runs_is_said_and_left_alone(tmp_path: Path, active: str) -> None:
    out, record = bootstrap(tmp_path, systemd=True, active=active)
    assert f"already running before the install: {active}" in out
    assert f"systemctl disable --now --quiet {active}" not in record
    assert "systemctl disable --now --quiet prometheus.service" in record


def test_an_operators_own_policy_file_is_kept(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")
    _, record = bootstrap(tmp_path, systemd=False)
    assert "policy during install: 0" in record
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"
