"""Backup, verify and restore against a real redis-server on loopback (no supervisord):
the round trip under concurrent writes, AOF, a new machine, secrets, locks, a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyrage import x25519

from harness.waiting import wait_for
from tests.backup_support import RedisHome, digest, fill, model_files, new_redis_home, value
from unistack.backup import catalog, journal
from unistack.lock import control_lock


def backup_name(home: RedisHome, *args: str) -> str:
    done = home.cli("backup", "--json", *args)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["backup"]["name"])


def test_round_trip_under_concurrent_writes_restores_one_consistent_snapshot(
        redis_home: RedisHome) -> None:
    client = redis_home.client()
    fill(client, 20000, prefix="base")
    files = model_files(redis_home.settings())
    stop, written = threading.Event(), [0]

    def writer() -> None:  # sequential writes: any snapshot holds a prefix of them
        writes = redis_home.client()
        while not stop.is_set():
            writes.set(f"seq:{written[0]}", value(written[0]))
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        name = backup_name(redis_home)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 0
    client.flushall()
    client.set("after-the-backup", "1")
    redis_home.stop_redis()
    done = redis_home.cli("restore", name, "--yes")
    assert done.returncode == 0, done.stderr
    redis_home.start_redis()
    restored = redis_home.client()
    assert restored.get("after-the-backup") is None
    seq = sorted(int(k.split(b":")[1]) for k in restored.scan_iter("seq:*", count=1000))
    assert seq == list(range(len(seq)))  # a prefix: one point in time, nothing torn
    assert all(restored.get(f"seq:{n}") == value(n) for n in seq[-50:])
    assert restored.get("base:19999") == value(19999)
    manifest_keys = json.loads(redis_home.cli("backups", "--json").stdout)[0]["keys"]
    assert restored.dbsize() == manifest_keys
    settings = redis_home.settings()
    for member, data in files.items():
        top, rest = member.split("/", 1)
        root = settings.models_dir if top == "models" else settings.data_dir / "market"
        assert (root / rest).read_bytes() == data
    before = digest(restored)
    redis_home.stop_redis()
    redis_home.start_redis()  # AOF on, and it holds the restored data
    assert digest(redis_home.client()) == before


def test_restore_with_aof_on_serves_the_archive_not_the_old_aof_and_keeps_writing(
        redis_home: RedisHome) -> None:
    client = redis_home.client()
    fill(client, 3000)
    name = backup_name(redis_home)
    client.set("only-in-the-old-aof", "1")  # AOF everysec: it is in the live AOF
    redis_home.stop_redis()
    assert redis_home.cli("restore", name, "--yes").returncode == 0
    redis_home.start_redis()
    restored = redis_home.client()
    assert restored.get("only-in-the-old-aof") is None  # the pitfall: the old AOF wins
    assert restored.get("k:2999") == value(2999)
    assert restored.info("persistence")["aof_enabled"] == 1
    restored.set("written-after-the-restore", "1")
    wait_for(lambda: restored.info("persistence")["aof_pending_bio_fsync"] == 0
             and restored.info("persistence")["aof_delayed_fsync"] == 0)
    restored.execute_command("BGREWRITEAOF")
    wait_for(lambda: restored.info("persistence")["aof_rewrite_in_progress"] == 0
             and restored.info("persistence")["aof_rewrite_scheduled"] == 0)
    redis_home.stop_redis(kill=True)  # kill -9: only what the AOF holds survives
    redis_home.start_redis()
    survivor = redis_home.client()
    assert survivor.get("written-after-the-restore") == b"1"
    assert survivor.get("k:0") == value(0)


def test_restore_into_a_new_machine_needs_no_secrets_and_brings_them_when_archived(
        redis_home: RedisHome) -> None:
    fill(redis_home.client(), 2000)
    plain = redis_home.backups / backup_name(redis_home)
    original = digest(redis_home.client())
    fresh = new_redis_home()  # another home, another Redis password, nothing in it
    try:
        done = fresh.cli("restore", str(plain), "--yes", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["online"] is False and any("start" in n for n in answer["notes"])
        assert not (fresh.home / ".env").exists()  # no secrets came with it
        fresh.start_redis()
        assert digest(fresh.client()) == original  # the password is config, not data
    finally:
        fresh.cleanup()


def test_secrets_come_back_only_from_an_encrypted_archive_with_its_identity() -> None:
    identity = x25519.Identity.generate()
    source = new_redis_home(BACKUP_RECIPIENT=str(identity.to_public()))
    fresh = new_redis_home()
    try:
        secret = "https://hooks.slack.com/services/T0/B0/keep-this-out-of-logs"
        (source.home / ".env").write_text(f"SLACK_WEBHOOK_URL={secret}\n")
        (source.home / ".env").chmod(0o600)
        source.start_redis()
        fill(source.client(), 500)
        refused = source.cli("backup", "--include-secrets")
        assert refused.returncode == 0, refused.stderr  # taken, sealed: no identity here
        key = source.home / "identity.txt"
        key.write_text(str(identity) + "\n")
        listed = json.loads(source.cli("backups", "--json").stdout)
        assert listed[0]["state"] == "sealed" and listed[0]["encrypted"]
        archive = Path(listed[0]["path"])
        assert secret.encode() not in archive.read_bytes()
        done = fresh.cli("restore", str(archive), "--yes", "--identity", str(key))
        assert done.returncode == 0, done.stderr
        restored = fresh.home / ".env"
        assert restored.read_text() == (source.home / ".env").read_text()
        assert restored.stat().st_mode & 0o777 == 0o600
        for output in (refused.stdout, refused.stderr, done.stdout, done.stderr):
            assert secret not in output
    finally:
        source.cleanup()
        fresh.cleanup()


def test_include_secrets_without_a_recipient_is_refused_with_what_to_set(
        redis_home: RedisHome) -> None:
    done = redis_home.cli("backup", "--include-secrets")
    assert done.returncode == 1
    assert "BACKUP_RECIPIENT" in done.stderr
    assert not list(redis_home.backups.glob("unistack-*"))


def test_a_second_backup_or_a_restore_during_a_backup_fails_fast_with_exit_3(
        redis_home: RedisHome) -> None:
    fill(redis_home.client(), 100)
    earlier = backup_name(redis_home)
    fill(redis_home.client(), 150_000, size=512)
    first = subprocess.Popen([sys.executable, "-m", "unistack", "backup"], env=redis_home.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = redis_home.home / "var" / "run" / "backup.lock"
    try:
        wait_for(lambda: lock.exists() and lock.read_text().startswith(f"{first.pid} "))
        second = redis_home.cli("backup", timeout=30)
        restore = redis_home.cli("restore", earlier, "--yes", timeout=30)
        assert first.poll() is None, "the first backup ended before the others ran"
        assert second.returncode == 3 and "busy" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert restore.returncode == 3 and "busy" in restore.stderr
    finally:
        assert first.wait(120) == 0
    assert redis_home.client().get("k:149999") == value(149999, 512)  # nothing restored
    again = redis_home.cli("backup")
    assert again.returncode == 0, again.stderr


def test_sigkill_during_backup_keeps_the_last_good_backup_and_a_rerun_succeeds(
        redis_home: RedisHome) -> None:
    fill(redis_home.client(), 1000)
    good = backup_name(redis_home)
    fill(redis_home.client(), 200_000, prefix="big", size=1024)
    child = subprocess.Popen([sys.executable, "-m", "unistack", "backup"], env=redis_home.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(redis_home.backups.glob("*.partial")), timeout=60, interval=0.001)
    child.kill()
    child.wait()
    names = [p.name for p in redis_home.backups.iterdir()]
    assert [n for n in names if n.endswith(".tar.zst")] == [good]
    assert any(n.endswith(".partial") for n in names)
    listed = json.loads(redis_home.cli("backups", "--json").stdout)
    assert {b["name"]: b["state"] for b in listed}[good] == "verified"
    rerun = redis_home.cli("backup", "--json")
    assert rerun.returncode == 0, rerun.stderr  # the lock died with the killed process
    assert not list(redis_home.backups.glob("*.partial"))
    assert not list((redis_home.home / "var" / "data" / "redis").glob(".backup-*"))
    assert redis_home.cli("verify", good).returncode == 0


def test_a_restore_killed_mid_swap_is_rolled_back_before_anything_starts(
        redis_home: RedisHome) -> None:
    """The state kill -9 leaves between two renames: the journal, Redis's data moved aside,
    the restored data not yet in place. `backup` (like `start` and the hub) rolls it back."""
    fill(redis_home.client(), 1000)
    before = digest(redis_home.client())
    redis_home.stop_redis()
    settings = redis_home.settings()
    live = settings.data_dir / "redis"
    staging = settings.var / "restore" / "restore-1-1"
    (staging / "redis").mkdir(parents=True)
    (staging / "redis" / "dump.rdb").write_bytes(b"not the old data")
    swap = journal.Swap(live, live.with_name(".redis.pre-restore-1"), staging / "redis")
    journal.begin(settings, [swap], "killed.tar.zst")
    os.rename(swap.live, swap.aside)  # ... and here the restore was killed
    assert journal.recover(settings, lambda text: None)
    assert not journal.path(settings).exists()
    redis_home.start_redis()
    assert digest(redis_home.client()) == before


def test_destination_too_small_is_refused_before_anything_is_written(
        redis_home: RedisHome) -> None:
    fill(redis_home.client(), 5000, size=1024)
    small = redis_home.home / "small"
    with tmpfs(small, "1m"):
        redis_home.env["BACKUP_DIR"] = str(small)
        done = redis_home.cli("backup")
        assert done.returncode == 5, done.stderr
        assert "MB free" in done.stderr and "BACKUP_DIR" in done.stderr
        assert os.listdir(small) == []


def test_destination_filling_up_while_writing_keeps_nothing_half_written(
        redis_home: RedisHome) -> None:
    fill(redis_home.client(), 60_000, size=1024)  # ~60 MB of RDB, barely compressible
    target = redis_home.home / "target"
    with tmpfs(target, "200m"):
        redis_home.env["BACKUP_DIR"] = str(target)
        child = subprocess.Popen([sys.executable, "-m", "unistack", "backup"],
                                 env=redis_home.env, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: list(target.glob("*.partial")), timeout=60, interval=0.001)
        filler = target / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True,
                       check=False)  # someone else fills the disk meanwhile
        _, err = child.communicate(timeout=120)
        assert child.returncode == 5, err
        assert "filled up" in err
        assert sorted(os.listdir(target)) == ["filler"]
        filler.unlink()
        again = redis_home.cli("backup", "--json")
        assert again.returncode == 0, again.stderr


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def synthetic(directory: Path, ts: float, state: str, tag: str = "") -> str:
    """An archive-shaped file with its sidecars (retention reads names and states only)."""
    name = catalog.archive_name(ts, tag)
    path = directory / name
    path.write_bytes(b"x")
    if state == "partial":
        path.rename(path.with_name(name + ".partial"))
        return name + ".partial"
    catalog.write_sha256(path, "0" * 64)
    catalog.write_state(path, {"state": state})
    return name


def test_prune_keeps_what_the_policy_says_and_never_the_wrong_ones(
        redis_home: RedisHome) -> None:
    directory = redis_home.backups
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    days = [synthetic(directory, now - d * 86400, "verified") for d in range(1, 11)]
    failed = synthetic(directory, now - 3600, "failed")
    unverified = synthetic(directory, now - 7200, "unverified")
    partial = synthetic(directory, now - 60, "partial")
    future = synthetic(directory, now + 365 * 86400, "verified")
    redis_home.env.update(BACKUP_KEEP_LAST="2", BACKUP_KEEP_DAILY="0", BACKUP_KEEP_WEEKLY="0",
                          BACKUP_KEEP_MONTHLY="0")
    dry = redis_home.cli("prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert sorted(planned["remove"]) == sorted([*days[2:], failed])
    assert set(planned["ignored"]) == {unverified, future}
    assert len(os.listdir(directory)) == 3 * 13 + 1  # nothing deleted by a dry run
    done = redis_home.cli("prune", "--json")
    assert done.returncode == 0, done.stderr
    left = set(os.listdir(directory))
    assert {days[0], days[1], unverified, future} <= left
    assert not {failed, partial, *days[2:]} & left
    assert not [n for n in left if n.startswith(tuple(days[2:]))]  # sidecars went too
    redis_home.env.update(BACKUP_KEEP_LAST="0")
    empty = redis_home.cli("prune")
    assert empty.returncode == 2 and "BACKUP_KEEP_LAST" in empty.stderr
    assert {days[0], days[1]} <= set(os.listdir(directory))


def test_restore_while_a_start_or_stop_holds_the_control_lock_is_busy(
        redis_home: RedisHome) -> None:
    name = backup_name(redis_home)
    settings = redis_home.settings()
    with control_lock(settings.unistack_home, "start", False, lambda text: None):
        done = redis_home.cli("restore", name, "--yes")
    assert done.returncode == 3, done.stderr
    assert "busy" in done.stderr and "start" in done.stderr


def test_every_backup_command_has_help_and_json(redis_home: RedisHome) -> None:
    name = backup_name(redis_home)
    for command in ("backup", "backups", "verify", "restore", "prune"):
        helped = redis_home.cli(command, "--help")
        assert helped.returncode == 0 and "--json" in helped.stdout, command
    for args in (("backups", "--json"), ("verify", name, "--json"),
                 ("prune", "--dry-run", "--json")):
        done = redis_home.cli(*args)
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)
    missing = redis_home.cli("verify", "no-such-archive.tar.zst", "--json")
    assert missing.returncode == 2
    assert "no-such-archive" in json.loads(missing.stdout)["error"]
    unconfirmed = redis_home.cli("restore", name, stdin="")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
