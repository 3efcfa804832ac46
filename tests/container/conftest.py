"""The container image built from Dockerfile.unified, run with podman (no Docker engine on
these machines: /work/shared/reference/containers.md).

One image per session: scripts/container_base.sh (podman, runc, the debootstrapped Debian
base, a containers.conf outside /etc) and one `podman build` of the `cpu` target. The
host's CA bundle is mounted into the build here only (the PyPI proxy of these machines);
the Dockerfile never depends on it. Timings of every step are printed at the end of the
session ("container timings").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

IMAGE = "localhost/unistack:test"
ARM64_IMAGE = "localhost/unistack:test-arm64"
BASE = "localhost/unistack-base:bookworm"
ARM64_BASE = "localhost/unistack-base:bookworm-arm64"
CA_MOUNT = "/etc/ssl/certs:/etc/ssl/certs:ro"  # the test harness's PyPI proxy, never the image's
RUNTIME_UID = 10001

# Seconds per step, printed by pytest_terminal_summary (the report's numbers).
TIMINGS: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The arm64 build takes minutes: only when `-m` selects it by name."""
    expression = config.getoption("markexpr") or ""
    if re.search(r"(?<!not )\barm64\b", expression):
        return
    skip = pytest.mark.skip(reason="emulated arm64 build: run with -m arm64")
    for item in items:
        if "arm64" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_line(
            "container timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in TIMINGS.items()))


@dataclass
class Podman:
    """podman (and podman-compose) with this session's containers.conf."""

    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, input=input_text)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def compose(self, files: Sequence[str], project: str, *args: str,
                extra_env: dict[str, str] | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """podman-compose (PyPI) with FILES under project PROJECT, from the checkout."""
        command = ["podman-compose", "--in-pod", "false", "-p", project]
        for name in files:
            command += ["-f", name]
        done = subprocess.run(
            [*_podman_compose(), *command[1:], *args], cwd=ROOT,
            env={**self.env, **(extra_env or {})}, capture_output=True, text=True,
            timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command + list(args))} exited {done.returncode}:\n"
                                 f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done


def _podman_compose() -> list[str]:
    """podman-compose from this interpreter's environment (the dev extra)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("podman_compose") is None:
        raise AssertionError("podman-compose is not installed in this environment: "
                             "`.venv/bin/pip install podman-compose` (the dev extra)")
    return [sys.executable, "-m", "podman_compose"]


def prepare_base(arch: str = "") -> dict[str, str]:
    """scripts/container_base.sh: the environment podman needs (CONTAINERS_CONF)."""
    command = [str(ROOT / "scripts/container_base.sh")] + (["--arch", arch] if arch else [])
    begun = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    TIMINGS[f"base{'-' + arch if arch else ''}"] = time.monotonic() - begun
    if done.returncode != 0:
        raise AssertionError(f"scripts/container_base.sh failed ({done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    found = re.search(r"^CONTAINERS_CONF=(.+)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    assert Path(found.group(1)).is_file()
    return {**os.environ, "CONTAINERS_CONF": found.group(1)}


def build(podman: Podman, tag: str, base: str, *extra: str, timeout: float = 900,
          label: str = "build") -> None:
    begun = time.monotonic()
    podman.run("build", "--format", "docker", "--network", "host", "-v", CA_MOUNT,
               "--build-arg", f"BASE_IMAGE={base}", "--target", "cpu", *extra,
               "-f", str(ROOT / "Dockerfile.unified"), "-t", tag, str(ROOT), timeout=timeout)
    TIMINGS[label] = time.monotonic() - begun


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman(prepare_base())


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The `cpu` target on the local Debian base, built once per session (layers cached)."""
    build(podman, IMAGE, BASE)
    return IMAGE


@pytest.fixture(scope="session")
def arm64_image() -> Iterator[tuple[Podman, str]]:
    runner = Podman(prepare_base("arm64"))
    build(runner, ARM64_IMAGE, ARM64_BASE, "--arch", "arm64", timeout=3000,
          label="build-arm64")
    yield runner, ARM64_IMAGE
