"""Dockerfile.unified, the compose files and .dockerignore keep their hardening and bake
in no secret (ports and paths agreeing everywhere: test_consistency.py)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT


def test_compose_keeps_the_hardening_and_the_cpu_override_only_relaxes_gpu_limits() -> None:
    base = yaml.safe_load((ROOT / "docker-compose.unified.yml").read_text())
    service = base["services"]["unistack"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert service["user"] == "10001:10001"
    assert service["environment"]["UNISTACK_MODE"] == "docker"
    assert {entry.split(":")[0] for entry in service["tmpfs"]} == {"/tmp", "/run"}
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert service["ulimits"] == {"memlock": -1, "stack": 67108864}
    # Secrets only as files: no secret value or secret variable in the compose file.
    for key in ("REDIS_PASSWORD", "UNISTACK_OPERATOR_TOKEN", "SLACK_WEBHOOK_URL"):
        assert key not in service["environment"]
        assert service["environment"][f"{key}_FILE"].startswith("/run/secrets/")
    override = (ROOT / "docker-compose.cpu.yml").read_text()
    assert re.search(r"^\s+ulimits: !reset", override, re.MULTILINE)
    assert re.search(r"^\s+deploy: !reset", override, re.MULTILINE)
    assert "target: cpu" in override
    for key in ("read_only", "cap_drop", "security_opt", "user", "ports", "volumes"):
        assert not re.search(rf"^\s+{key}:", override, re.MULTILINE), key


def test_dockerfile_runs_unprivileged_and_bakes_no_secret() -> None:
    text = (ROOT / "Dockerfile.unified").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and all(user == "10001:10001" for user in users)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[.*\"health\", \"--ready\"\]", text,
                     re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    assert re.search(r'^ARG BASE_IMAGE=nvcr\.io/nvidia/\S+@sha256:[0-9a-f]{64}$', text,
                     re.MULTILINE)
    assert not re.search(r"(PASSWORD|TOKEN|WEBHOOK_URL)=", text)
    assert "/etc/ssl/certs" not in text  # the test harness's CA mount stays out of it
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", "var/", ".venv/", ".git", "*.rdb", "*.aof", "appendonlydir/",
            "**/__pycache__", "*.egg-info/"} <= ignored
