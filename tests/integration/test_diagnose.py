"""`diagnose` (scripts/diagnose_container.sh) on a real home: a healthy stack, then broken
states made for real, each found with its id and evidence; diagnosing writes nothing and
shows no secret."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness.stacks import Stack
from tests.conftest import ROOT
from tests.integration.test_keys import KEYS

pytestmark = pytest.mark.integration


def diagnose(stack: Stack) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([str(ROOT / "scripts/diagnose_container.sh"), "--json"],
                          env=stack.env, capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode, json.loads(done.stdout)


def by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in document["findings"]}


def snapshot(home: Path) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size, p.stat().st_mode)
            for p in [home, *home.rglob("*")] if not p.is_symlink()}


def secrets_of(stack: Stack) -> list[str]:
    return [line.split("=", 1)[1] for line in (stack.home / ".env").read_text().splitlines()
            if "=" in line]


def test_a_healthy_stack_has_no_failure_and_the_output_holds_no_secret(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    code, document = diagnose(stack)
    assert document["schema"] == 1 and document["overall"] in ("ok", "warn"), document
    assert code == {"ok": 0, "warn": 1}[document["overall"]]
    assert document["counts"]["fail"] == 0, [f for f in document["findings"]
                                             if f["status"] == "fail"]
    found = by_id(document)
    for service in ("redis", "prometheus", "ml_engine", "dashboard", "hub"):
        assert found[f"service.{service}"]["status"] == "ok", found.get(f"service.{service}")
    assert found["supervisord.reachable"]["status"] == "ok"
    assert found["ports"]["status"] == "ok" and found["env.permissions"]["status"] == "ok"
    assert document["seconds"] < 2.0
    text = stack.cli("diagnose")
    assert all(secret not in text.stdout + json.dumps(document) for secret in secrets_of(stack))


def test_broken_states_are_found_with_their_evidence_and_nothing_is_written(
        stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    assert stack.cli("stop").returncode == 0
    (stack.home / ".env").chmod(0o644)  # a secret file readable by everyone
    (stack.home / "var/data/redis").chmod(0o777)
    pidfile = stack.home / "var/run/supervisord.pid"
    pidfile.write_text("999999\n")  # a pid file naming a dead process
    with socket.socket() as foreign:  # a foreign listener on the dashboard's port
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        foreign.bind(("127.0.0.1", stack.port("DASHBOARD_PORT")))
        foreign.listen()
        before = snapshot(stack.home)
        code, document = diagnose(stack)
        assert snapshot(stack.home) == before  # diagnosing changes nothing
    assert code == 2 and document["overall"] == "fail"
    found = by_id(document)
    assert found["env.permissions"]["status"] == "fail"
    assert "mode 0644" in found["env.permissions"]["evidence"]
    assert "chmod 600" in found["env.permissions"]["remedy"]
    assert found["config.invalid"]["status"] == "fail"  # lenient loading said so too
    redis_dir = found["fs.mode:var/data/redis"]
    assert "mode 0777" in redis_dir["evidence"] and redis_dir["fix"] == "fix.permissions"
    assert found["files.stale-pid"]["evidence"].endswith("pid 999999, no such process")
    foreign_port = found["port.foreign:DASHBOARD_PORT"]
    assert f"pid {os.getpid()}" in foreign_port["evidence"], foreign_port
    assert "never kills a foreign process" in foreign_port["remedy"]
    assert found["supervisord.reachable"]["status"] == "fail"
    text = stack.cli("diagnose")
    assert text.returncode == 2
    assert "FAIL env.permissions" in text.stdout and "fix: chown" in text.stdout
    assert all(secret not in text.stdout + text.stderr for secret in secrets_of(stack))


def test_fix_all_repairs_what_diagnose_found_and_a_second_diagnosis_is_clean(
        stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    assert stack.cli("stop").returncode == 0
    (stack.home / ".env").chmod(0o644)
    (stack.home / "var/data/redis").chmod(0o777)
    shutil.rmtree(stack.home / "var/data/market")
    (stack.home / "var/run/supervisord.pid").write_text("999999\n")
    script = str(ROOT / "scripts/fix_all_container_issues.sh")
    plan = subprocess.run([script, "--dry-run"], env=stack.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "would run fix.env-permissions" in plan.stdout, plan.stdout + plan.stderr
    lines = plan.stdout.splitlines()
    assert lines.index(next(x for x in lines if "fix.env-permissions" in x)) < \
        lines.index(next(x for x in lines if "fix.stale-files" in x))  # files first
    assert oct((stack.home / ".env").stat().st_mode & 0o777) == "0o644"  # a plan only
    done = subprocess.run([script], env=stack.env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert "fixed:" in done.stdout, done.stdout + done.stderr
    _, after = diagnose(stack)
    found = by_id(after)
    assert found["env.permissions"]["status"] == "ok"
    for gone in ("fs.mode:var/data/redis", "fs.missing", "files.stale-pid", "config.invalid"):
        assert gone not in found, found[gone]
    again = subprocess.run([script], env=stack.env, capture_output=True, text=True,
                           timeout=60, check=False)  # idempotent: nothing left to do
    assert "fix.env-permissions" not in again.stdout and "fix.permissions" not in again.stdout


def test_the_support_bundle_holds_findings_logs_and_config_and_no_secret(
        stack: Stack, tmp_path: Path) -> None:
    assert stack.cli("start").returncode == 0
    target = tmp_path / "support.tar.gz"
    done = stack.cli("diagnose", "--bundle", str(target))
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert f"support bundle (secrets masked): {target}" in done.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(target) as bundle:
        names = bundle.getnames()
        contents = {n: bundle.extractfile(n).read().decode()  # type: ignore[union-attr]
                    for n in names if bundle.getmember(n).isfile()}
    assert {"unistack-support/findings.json", "unistack-support/config.json",
            "unistack-support/versions.json", "unistack-support/logs/hub.log"} <= set(names)
    assert json.loads(contents["unistack-support/config.json"])["REDIS_PASSWORD"] == "(set)"
    assert "Redis server" in contents["unistack-support/versions.json"]
    everything = "\n".join(contents.values())
    assert all(secret not in everything for secret in secrets_of(stack))
    inside = stack.cli("diagnose", "--bundle", str(stack.home / "bundle.tar.gz"))
    assert inside.returncode == 1 and "inside UNISTACK_HOME" in inside.stderr
    assert not (stack.home / "bundle.tar.gz").exists()


def readiness(stack: Stack) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([str(ROOT / "scripts/verify_production_readiness.sh"), "--json"],
                          env=stack.env, capture_output=True, text=True, timeout=120,
                          check=False)
    return done.returncode, json.loads(done.stdout), done.stdout


def test_readiness_of_a_started_home_has_no_failure_and_names_what_to_do(stack: Stack) -> None:
    assert stack.cli("start").returncode == 0
    _, before, _ = readiness(stack)  # no API keys yet: each provider named
    missing = by_id(before)["ready.keys:alpaca"]
    assert missing["status"] == "fail" and missing["evidence"].startswith(
        "ALPACA_API_KEY_ID, ALPACA_API_SECRET_KEY not set")
    keys = subprocess.run([str(ROOT / "scripts/setup_env.sh"), "--non-interactive"],
                          env={**stack.env, **KEYS}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert keys.returncode == 0, keys.stderr
    code, document, output = readiness(stack)
    assert document["counts"]["fail"] == 0, [f for f in document["findings"]
                                             if f["status"] == "fail"]
    found = by_id(document)
    for passed in ("ready.files", "ready.secrets", "drift.container", "drift.supervisord",
                   "ready.compose-schema", "ready.hadolint", "ready.shellcheck",
                   "ready.promtool-config", "ready.promtool-rules", "env.permissions",
                   "ready.keys"):
        assert found[passed]["status"] == "ok", found[passed]
    assert found["ready.slack"]["status"] == "warn"  # no webhook in this home
    assert code == 1
    assert all(secret not in output for secret in secrets_of(stack))
