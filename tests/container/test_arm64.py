"""The GH200's architecture: the `cpu` target of Dockerfile.unified built for linux/arm64
on the emulated Debian base (qemu-user-static, binfmt_misc: scripts/container_base.sh
--arch arm64), and the engine's capability report read from inside it.

Minutes under emulation, so not in the default run: `pytest -m arm64 tests/container`.
Only the CPU target can be checked here: the CUDA base and the GPU paths need a GPU host.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.container.conftest import TIMINGS, Podman

pytestmark = [pytest.mark.container, pytest.mark.arm64, pytest.mark.timeout(3600)]


def test_arm64_image_reports_aarch64_and_the_xgboost_backend(
        arm64_image: tuple[Podman, str]) -> None:
    podman, image = arm64_image
    assert podman.run("image", "inspect", "--format", "{{.Architecture}}",
                      image).stdout.strip() == "arm64"
    begun = time.monotonic()
    done = podman.run("run", "--rm", "--arch", "arm64", "--network", "none", "--read-only",
                      "--tmpfs", "/tmp", "--cap-drop", "ALL",
                      "--security-opt", "no-new-privileges", "--entrypoint", "python",
                      image, "-m", "unistack", "ml", "doctor", "--json", timeout=600)
    TIMINGS["arm64 ml doctor"] = time.monotonic() - begun
    print(done.stdout)  # the report, verbatim (pytest -s shows it)
    report = json.loads(done.stdout)
    assert report["machine"] == "aarch64"
    assert report["libraries"]["xgboost"]["ok"] is True
    assert report["backends"]["xgboost"]["device"] == "cpu"
    assert report["gpu_usable"] is False
