"""The support bundle (`diagnose --bundle`): one tar.gz an operator can send, with the
findings, the tail of every service's log, the effective configuration with every secret
masked, and the versions of what runs. Everything in it passes through the secrets'
redaction; `.env` and the runtime files that hold secrets are never read into it. It is
written outside the home (diagnosing changes nothing there)."""

from __future__ import annotations

import io
import json
import platform
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from unistack import logs
from unistack.config import Settings
from unistack.configkeys import KEYS
from unistack.diagnose.findings import Finding, document, text

_LOG_LINES = 200


def default_path(now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now or time.time()))
    return Path.cwd() / f"unistack-support-{stamp}.tar.gz"


def write(path: Path, settings: Settings, findings: list[Finding], took: float) -> Path:
    """Write the bundle to PATH (refused inside the home); PATH."""
    if path.resolve().is_relative_to(settings.unistack_home):
        raise ValueError(f"--bundle {path} is inside UNISTACK_HOME ({settings.unistack_home}): "
                         "diagnosing writes nothing there; expected a path outside it")
    members = {
        "findings.json": json.dumps(document(findings, took, str(settings.unistack_home)),
                                    indent=2),
        "findings.txt": text(findings),
        "config.json": json.dumps(_config(settings), indent=2),
        "versions.json": json.dumps(_versions(settings), indent=2),
    }
    for service, log in sorted(logs.log_files(settings).items()):
        members[f"logs/{service}.log"] = "\n".join(logs.tail_lines(log, _LOG_LINES))
    with tarfile.open(path, "w:gz") as bundle:
        for name, content in members.items():
            data = settings.redact(content).encode()
            info = tarfile.TarInfo(f"unistack-support/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            bundle.addfile(info, io.BytesIO(data))
    path.chmod(0o600)
    return path


def _config(settings: Settings) -> dict[str, str]:
    written = settings.to_env()
    return {key.name: ("(set)" if settings.value(key.name) else "(not set)")
            if key.secret else written[key.name] for key in KEYS}


def _versions(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                             "platform": platform.platform()}
    for name, command in (("redis", [settings.redis_server_bin, "--version"]),
                          ("prometheus", [settings.prometheus_bin, "--version"])):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=5,
                                  check=False)
            found[name] = (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
            found[name] = f"unavailable: {exc}"
    return found
