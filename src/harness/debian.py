"""Debian programs a benchmark's baseline needs (Monit, Alertmanager, an exporter):
found on PATH, or installed with apt-get as scripts/bootstrap.sh does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from harness.runs import progress

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def apt_install(package: str) -> str:
    """apt-get install PACKAGE (apt-get update and again if the first try fails); "" when
    it is installed, else why it failed."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{package} is not installed, and apt-get cannot run here (needs root)"
    progress(f"{package} is missing: apt-get install -y --no-install-recommends {package} ...")
    env = os.environ | APT_ENV
    done = None
    for command in (["apt-get", "install", "-y", "--no-install-recommends", package],
                    ["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        if done.returncode == 0 and command[1] == "install":
            return ""
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] if done else []
    return f"apt-get install {package} failed: {' '.join(tail)}"


def candidate(package: str) -> bool:
    """Whether apt knows PACKAGE (a candidate version in `apt-cache policy`)."""
    if not shutil.which("apt-cache"):
        return False
    done = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                          timeout=60, check=False)
    found = re.search(r"Candidate:\s*(\S+)", done.stdout)
    return bool(found and found.group(1) != "(none)")


def program(name: str, package: str, optional: bool = False) -> tuple[str | None, str]:
    """The binary NAME from Debian's PACKAGE, installed when missing; or None and why.
    OPTIONAL: give up at once when apt has no such package."""
    if not shutil.which(name):
        if optional and not candidate(package):
            return None, f"apt has no {package}"
        reason = apt_install(package)
        if reason:
            return None, reason
    return shutil.which(name), ""


def version(binary: str) -> str:
    """The first x.y.z in BINARY --version's output, or "?"."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                          check=False)
    text = (done.stdout + done.stderr).strip()
    found = re.search(r"[0-9]+\.[0-9]+\.[0-9]+", text)
    return found.group(0) if found else "?"
