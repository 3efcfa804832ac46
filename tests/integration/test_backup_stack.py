"""Backups with the whole stack running: a restore holds Redis and the engine in the
hub's maintenance mode (announced once, no alerts), a restore killed during its hold is
rolled back by the hub, and the hub's scheduled backups verify, prune and alert."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.slack import SlackStandIn
from harness.stacks import Stack
from harness.waiting import wait_for
from tests.backup_support import digest, fill, new_redis_home
from tests.chaos.test_alerts import about, failures
from tests.chaos.test_chaos import events, password, services, start


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


def with_slack(stack: Stack, slack: SlackStandIn, **overrides: str) -> None:
    env_file = stack.home / ".env"
    env_file.write_text(f"SLACK_WEBHOOK_URL={slack.webhook_url}\n")
    env_file.chmod(0o600)
    start(stack, **overrides)
    wait_for(lambda: about(slack, "startup complete"), timeout=10)


def client(stack: Stack) -> redis.Redis:
    return redis.Redis(port=stack.port("REDIS_PORT"), password=password(stack))


def hub(stack: Stack, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}") as answer:
        return json.load(answer)


def all_ready(stack: Stack) -> bool:
    return all(s["ready"] for s in services(stack).values())


def test_online_restore_holds_its_services_quietly_and_serves_the_archive(
        stack: Stack, slack: SlackStandIn) -> None:
    with_slack(stack, slack, BACKUP_INTERVAL="0")
    fill(client(stack), 5000)
    backup = stack.cli("backup", "--json")
    assert backup.returncode == 0, backup.stderr
    name = json.loads(backup.stdout)["backup"]["name"]
    archived = digest(client(stack), 'k:*')
    client(stack).flushall()
    client(stack).set("after-the-backup", "1")
    before = len(slack.requests)
    restored = stack.cli("restore", name, "--yes", "--json", timeout=180)
    assert restored.returncode == 0, restored.stderr
    answer = json.loads(restored.stdout)
    assert answer["online"] and answer["safety_backup"]
    assert "pre-restore" in answer["safety_backup"]
    wait_for(lambda: all_ready(stack), timeout=30)
    assert digest(client(stack), 'k:*') == archived
    held = events(stack, "maintenance")
    over = events(stack, "maintenance_over")
    assert len(held) == 1 and len(over) == 1
    assert "redis" in held[0]["detail"] and "ml_engine" in held[0]["detail"]
    for kind in ("crashed", "hung", "unhealthy", "failed", "looping"):
        assert not [e for e in events(stack, kind) if e["ts"] >= held[0]["ts"]], kind
    wait_for(lambda: len(about(slack, "maintenance")) >= 2, timeout=10)
    new = [str(r.body.get("text", "")) for r in slack.requests[before:]
           if isinstance(r.body, dict)]
    assert len([t for t in new if "maintenance" in t]) == 2, new
    alarms = [t for t in new if t in failures(slack) and "maintenance" not in t
              and ("redis" in t or "ml_engine" in t)]
    assert not alarms, (new, events(stack))
    listed = json.loads(stack.cli("backups", "--json").stdout)
    assert {b["tag"] for b in listed} == {"", "pre-restore"}
    asked_for_a_backup_through_the_hub(stack)
    for log in (stack.home / "var" / "log").rglob("*"):  # no secret in any log
        if log.is_file():
            assert slack.webhook_url not in log.read_text(errors="replace"), log
            assert password(stack) not in log.read_text(errors="replace"), log


def post(stack: Stack, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port('HUB_PORT')}{path}",
                                     method="POST", data=b"")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def asked_for_a_backup_through_the_hub(stack: Stack) -> None:
    """POST /backups: the operator token required; one at a time; the result an event."""
    token = next(line.split("=", 1)[1] for line in (stack.home / ".env").read_text()
                 .splitlines() if line.startswith("UNISTACK_OPERATOR_TOKEN="))
    assert post(stack, "/backups", None)[0] == 401
    done = len(events(stack, "backup_ok"))
    assert post(stack, "/backups", token) == (202, {"started": True, "service": "backup"})
    code, answer = post(stack, "/backups", token)
    assert code == 409 and "already running" in answer["error"]
    wait_for(lambda: len(events(stack, "backup_ok")) > done, timeout=60)
    assert [e for e in events(stack, "audit") if "backup now" in e["detail"]]


def test_a_restore_killed_while_holding_its_services_is_rolled_back_by_the_hub(
        stack: Stack) -> None:
    start(stack, BACKUP_INTERVAL="0")
    fill(client(stack), 3000)
    backup = stack.cli("backup", "--json")
    assert backup.returncode == 0, backup.stderr
    name = json.loads(backup.stdout)["backup"]["name"]
    client(stack).set("after-the-backup", "1")
    live = digest(client(stack), 'k:*')
    child = subprocess.Popen([sys.executable, "-m", "unistack", "restore", name, "--yes"],
                             env=stack.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: hub(stack, "/maintenance").get("pid") == child.pid, timeout=60,
             interval=0.002)
    shown = hub(stack, "/status")  # the hold, as `status` shows it
    os.killpg(child.pid, signal.SIGKILL)
    assert {s["name"]: s["state"] for s in shown["services"]}["redis"] == "MAINTENANCE"
    assert shown["maintenance"]["services"] == ["redis", "ml_engine"]
    child.wait()
    wait_for(lambda: not hub(stack, "/maintenance"), timeout=15)
    wait_for(lambda: all_ready(stack), timeout=30)
    assert not (stack.home / "var" / "run" / "restore.json").exists()
    assert digest(client(stack), 'k:*') == live  # the old data, whole
    assert client(stack).get("after-the-backup") == b"1"
    over = events(stack, "maintenance_over")
    assert over and "ended without releasing" in over[-1]["detail"]
    again = stack.cli("restore", name, "--yes", timeout=180)
    assert again.returncode == 0, again.stderr
    assert client(stack).get("after-the-backup") is None


def test_scheduled_backups_are_verified_and_pruned_and_asked_ones_refused_while_running(
        stack: Stack) -> None:
    start(stack, BACKUP_INTERVAL="2s", BACKUP_KEEP_LAST="2", BACKUP_KEEP_DAILY="0",
          BACKUP_KEEP_WEEKLY="0", BACKUP_KEEP_MONTHLY="0")
    fill(client(stack), 2000)
    wait_for(lambda: len(events(stack, "backup_ok")) >= 3, timeout=60)
    document = hub(stack, "/backups")
    verified = [b for b in document["backups"] if b["state"] == "verified"]
    assert 1 <= len(verified) <= 2  # KEEP_LAST 2, pruned after each verified backup
    assert document["last"]["ok"] and document["interval"] == 2.0
    assert not document["stale"]
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["backups"]["newest_verified"]["state"] == "verified"
    assert "pruned" in events(stack, "backup_ok")[-1]["detail"]


def test_failed_and_stale_backups_raise_one_alert(stack: Stack, slack: SlackStandIn) -> None:
    not_a_dir = stack.home / "not-a-directory"
    not_a_dir.write_text("a file where BACKUP_DIR should be\n")
    with_slack(stack, slack, BACKUP_INTERVAL="2s", BACKUP_DIR=str(not_a_dir))
    wait_for(lambda: events(stack, "backup_failed"), timeout=30)
    failed = events(stack, "backup_failed")[0]
    assert str(not_a_dir) in failed["detail"]
    wait_for(lambda: about(slack, "backup failed"), timeout=15)
    wait_for(lambda: hub(stack, "/backups")["stale"], timeout=15)
    assert len(about(slack, "backup failed")) == 1  # one incident, not one per attempt


def test_a_restore_whose_services_do_not_come_back_is_rolled_back(stack: Stack,
                                                                  tmp_path: Path) -> None:
    """An archive from a home without models: the engine cannot serve it, so after
    START_TIMEOUT the restore puts the old data and models back and starts them again."""
    modelless = new_redis_home()
    try:
        modelless.start_redis()
        fill(modelless.client(), 100, prefix="other")
        made = modelless.cli("backup", "--json")
        assert made.returncode == 0, made.stderr
        made_at = Path(json.loads(made.stdout)["backup"]["path"])
        archive = str(tmp_path / made_at.name)  # an archive brought from another machine
        for suffix in ("", ".sha256"):
            shutil.copy(f"{made_at}{suffix}", f"{archive}{suffix}")
    finally:
        modelless.cleanup()
    start(stack, BACKUP_INTERVAL="0", START_TIMEOUT="8")
    fill(client(stack), 1000)
    before = digest(client(stack), "k:*")
    done = stack.cli("restore", archive, "--yes", timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ml_engine not ready" in done.stderr and "rolled back" in done.stderr
    wait_for(lambda: all_ready(stack), timeout=30)
    assert digest(client(stack), "k:*") == before
    assert not client(stack).keys("other:*")
    assert not (stack.home / "var" / "run" / "restore.json").exists()
    assert not list((stack.home / "var" / "data").glob(".*pre-restore*"))
