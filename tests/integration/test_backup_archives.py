"""No corrupted or malicious archive ever changes live data, against a real redis-server.

Each case damages a real backup or crafts an archive, then: `verify` exits 4 naming the
problem and `backups` lists the archive as failed; `restore --yes` exits 4 too; Redis's
dataset, the model and market files and the home's whole tree are as they were (only the
commands' lock files may appear), var/restore is empty, no restore journal is left, and
nothing lands where a hostile member name or link aims outside the home.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyrage
import pytest
import zstandard
from pyrage import x25519

from tests.backup_support import RedisHome, digest, fill, model_files, new_redis_home
from unistack.backup import archive, catalog

EXIT_OK, EXIT_CORRUPT = 0, 4
KEYS = 1000  # plus the stream and the hash fill() adds
# Both commands take the home's locks: their files may appear, holding "pid command since".
LOCKS = frozenset({"var/run/backup.lock", "var/run/control.lock"})
SECRET = "https://hooks.slack.com/services/T000/B000/secretvalue123"

Run = subprocess.CompletedProcess[str]


# --- the live state ------------------------------------------------------------------


class Live(NamedTuple):
    redis: str  # digest() of the whole dataset
    files: dict[str, bytes]  # every file under var/models and var/data/market
    tree: dict[str, str]  # every path of the home but var/backups' and var/restore's


def observe(home: RedisHome) -> Live:
    settings = home.settings()
    roots = (settings.models_dir, settings.data_dir / "market")
    files = {path.relative_to(home.home).as_posix(): path.read_bytes()
             for root in roots for path in sorted(root.rglob("*")) if path.is_file()}
    return Live(digest(home.client()), files, tree(home.home))


def tree(home: Path) -> dict[str, str]:
    """Path -> kind (and size, for a regular file) of everything under HOME."""
    found = {}
    for directory, dirs, names in os.walk(home):
        for name in dirs + names:
            path = Path(directory, name)
            relative = path.relative_to(home).as_posix()
            if not relative.startswith(("var/backups/", "var/restore/")):
                found[relative] = kind(path)
    return found


def kind(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISREG(info.st_mode):
        return f"file {info.st_size}"
    return "directory" if stat.S_ISDIR(info.st_mode) else f"mode {info.st_mode:o}"


def assert_untouched(home: RedisHome, before: Live, aimed: tuple[Path, ...]) -> None:
    assert home.client().ping()
    after = observe(home)
    assert after.redis == before.redis
    assert after.files == before.files
    new = set(after.tree) - set(before.tree) - LOCKS - {"var/restore"}  # staging's root
    assert not new, f"new paths in the home: {sorted(new)}"
    kept = {path: what for path, what in before.tree.items() if path not in LOCKS}
    assert {path: after.tree.get(path) for path in kept} == kept
    restore_dir = home.home / "var" / "restore"
    assert not restore_dir.exists() or not list(restore_dir.iterdir())
    assert not (home.home / "var" / "run" / "restore.json").exists()
    for path in aimed:
        assert not os.path.lexists(path), f"{path} was written outside the home"


# --- the commands ----------------------------------------------------------------------


class Attempt(NamedTuple):
    verify: Run
    listed: dict[str, Any]  # the archive's record in `backups --json`, after verify
    restore: Run


def real_backup(home: RedisHome, *args: str) -> tuple[dict[str, Any], Run]:
    done = home.cli("backup", "--json", *args)
    assert done.returncode == EXIT_OK, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)["backup"]
    return record, done


def listing(home: RedisHome, name: str) -> dict[str, Any]:
    done = home.cli("backups", "--json")
    assert done.returncode == EXIT_OK, done.stderr
    return next(record for record in json.loads(done.stdout) if record["name"] == name)


def attempt(home: RedisHome, name: str, before: Live, *, identity: Path | None = None,
            aimed: tuple[Path, ...] = ()) -> Attempt:
    """Verify, list and restore NAME; nothing live may have changed, whatever they said."""
    extra = ("--identity", str(identity)) if identity else ()
    checked = home.cli("verify", name, "--json", *extra)
    listed = listing(home, name)
    restored = home.cli("restore", name, "--yes", *extra)
    assert_untouched(home, before, aimed)
    return Attempt(checked, listed, restored)


def assert_refused(done: Attempt, why: str, state: str | None = catalog.FAILED) -> None:
    """Both commands exit 4 saying WHY (a regex); `backups` shows STATE."""
    assert done.verify.returncode == EXIT_CORRUPT, done.verify.stderr
    assert done.restore.returncode == EXIT_CORRUPT, done.restore.stderr
    error = json.loads(done.verify.stdout)["error"]
    assert re.search(why, error, re.IGNORECASE), error
    assert error in done.verify.stderr
    assert re.search(why, done.restore.stderr, re.IGNORECASE), done.restore.stderr
    if state is not None:
        assert done.listed["state"] == state, done.listed
    if state == catalog.FAILED:
        assert re.search(why, done.listed["detail"], re.IGNORECASE), done.listed


def refuse(home: RedisHome, name: str, before: Live, why: str) -> Attempt:
    done = attempt(home, name, before)
    assert_refused(done, why)
    return done


# --- archives ----------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members(path: Path, identities: list[Any] | None = None) -> dict[str, bytes]:
    """Every regular member of the archive at PATH, read our own way (not through unpack)."""
    data = path.read_bytes()
    if identities:
        data = pyrage.decrypt(data, identities)
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    found = {}
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r|") as tar:
        for member in tar:
            reader = tar.extractfile(member) if member.isfile() else None
            if reader is not None:
                found[member.name] = reader.read()
    return found


def copy_backup(home: RedisHome, name: str) -> str:
    """A byte-identical second archive of NAME, with the .sha256 its backup wrote."""
    twin = catalog.archive_name(time.time())
    shutil.copyfile(home.backups / name, home.backups / twin)
    catalog.write_sha256(home.backups / twin, catalog.read_sha256(home.backups / name))
    return twin


def damage(path: Path, change: Callable[[bytes], bytes], recompute: bool) -> None:
    """Rewrite the archive at PATH; with RECOMPUTE, its .sha256 matches the damaged bytes
    (only the stream's own checks can tell), else it keeps the digest of the intact one."""
    written = catalog.read_sha256(path)
    data = change(path.read_bytes())
    path.write_bytes(data)
    if recompute:
        catalog.write_sha256(path, sha256(data))
        assert catalog.read_sha256(path) == sha256(data)
    else:
        assert catalog.read_sha256(path) == written != sha256(data)


def damaged_twins(home: RedisHome, change: Callable[[bytes], bytes]) -> tuple[str, str]:
    """Two damaged copies of a real backup: (.sha256 as written, .sha256 rewritten)."""
    fill(home.client(), KEYS)
    model_files(home.settings())
    record, _ = real_backup(home)
    kept, rewritten = record["name"], copy_backup(home, record["name"])
    damage(home.backups / kept, change, recompute=False)
    damage(home.backups / rewritten, change, recompute=True)
    return kept, rewritten


class Member(NamedTuple):
    info: tarfile.TarInfo
    data: bytes = b""


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    return Member(info, data)


def special(name: str, type_: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type_, linkname, 0o644
    if type_ == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return Member(info)


def legit(home: RedisHome) -> tuple[list[Member], dict[str, Any]]:
    """The live dataset as a real archive holds it (a fresh RDB by redis-server, the
    models, the market data) and the manifest that lists them."""
    client = home.client()
    client.save()
    rdb = (home.settings().data_dir / "redis" / "dump.rdb").read_bytes()
    files = {"redis/dump.rdb": rdb, **model_files(home.settings())}
    listed = [{"path": name, "size": len(data), "sha256": sha256(data)}
              for name, data in files.items()]
    manifest = {"format": archive.FORMAT, "created": time.time(), "files": listed,
                "redis": {"keys": int(client.dbsize()), "rdb_sha256": sha256(rdb),
                          "rdb_size": len(rdb)}}
    return [regular(name, data) for name, data in files.items()], manifest


def craft(home: RedisHome, entries: list[Member]) -> str:
    """ENTRIES as a tar in a zstd stream (its content checksum on), named and hashed like
    a real backup in BACKUP_DIR."""
    name = catalog.archive_name(time.time())
    path = home.backups / name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    with open(path, "xb") as handle, \
            compressor.stream_writer(handle, closefd=False) as compressed, \
            tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    catalog.write_sha256(path, sha256(path.read_bytes()))
    return name


def manifest_member(manifest: dict[str, Any]) -> Member:
    return regular(archive.MANIFEST, json.dumps(manifest, indent=2).encode())


# --- 1, 2: truncated and bit-flipped archives --------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
def test_a_truncated_archive_is_refused(redis_home: RedisHome, cut: int) -> None:
    """The .tar.gz pitfall: a few bytes off the end leave every tar member readable; the
    zstd frame's missing end must still be refused, also when NAME.sha256 was rewritten
    to match the cut file."""
    kept, rewritten = damaged_twins(redis_home, lambda data: data[:-cut])
    before = observe(redis_home)
    refuse(redis_home, kept, before, r"\btruncated\b")
    refuse(redis_home, rewritten, before, r"\btruncated\b")


def test_a_flipped_bit_is_refused(redis_home: RedisHome) -> None:
    def flip(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1:]

    kept, rewritten = damaged_twins(redis_home, flip)
    before = observe(redis_home)
    # Where the bit lands decides which check sees it first: a zstd block or the frame's
    # content checksum, a tar header's checksum, a file's sha256 in the manifest, or the
    # whole archive's sha256. Each names the damage.
    why = r"corrupt|checksum|differs from the manifest|sha256|not a readable tar"
    refuse(redis_home, kept, before, why)
    refuse(redis_home, rewritten, before, why)


# --- 3: a sound archive around a corrupt RDB ------------------------------------------------


def flip_middle_bytes(rdb: bytes) -> bytes:
    middle = len(rdb) // 2
    return rdb[:middle] + bytes(b ^ 0xFF for b in rdb[middle:middle + 16]) + rdb[middle + 16:]


def cut_rdb(rdb: bytes) -> bytes:
    return rdb[:len(rdb) * 2 // 3]


@pytest.mark.parametrize("corrupt", [flip_middle_bytes, cut_rdb], ids=["flipped", "cut"])
def test_a_corrupt_rdb_in_a_sound_archive_is_refused(
        redis_home: RedisHome, tmp_path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    """Every hash agrees (the archive's, each file's, the manifest's) and the key count is
    the real one: only redis-check-rdb and the trial load can see the RDB is broken."""
    fill(redis_home.client(), KEYS)
    model_files(redis_home.settings())
    record, _ = real_backup(redis_home)
    before = observe(redis_home)
    rdb = tmp_path / "dump.rdb"
    rdb.write_bytes(corrupt(members(redis_home.backups / record["name"])["redis/dump.rdb"]))
    settings = redis_home.settings()
    roots = (("models", settings.models_dir), ("market", settings.data_dir / "market"))
    entries = [archive.Entry("redis/dump.rdb", rdb)] + [
        archive.Entry(f"{top}/{path.relative_to(root).as_posix()}", path)
        for top, root in roots for path in sorted(root.rglob("*")) if path.is_file()]

    def manifest(files: list[dict[str, Any]]) -> dict[str, Any]:
        listed = next(f for f in files if f["path"] == "redis/dump.rdb")
        return {"created": time.time(), "redis": {
            "keys": record["keys"], "rdb_sha256": listed["sha256"], "rdb_size": listed["size"]}}

    name = catalog.archive_name(time.time())
    written = archive.write(redis_home.backups / name, entries, manifest)
    catalog.write_sha256(redis_home.backups / name, written.sha256)
    assert record["keys"] == KEYS + 2
    refuse(redis_home, name, before, r"redis-check-rdb|trial load|scratch redis-server")


# --- 4: malicious tars -----------------------------------------------------------------------


class Hostile(NamedTuple):
    """Bad members added to an otherwise sound archive (or its manifest changed), what the
    refusal must say, and where outside the home it aims (given the home, a unique token
    and a real directory outside the home)."""

    members: Callable[[str, Path], list[Member]]
    why: str
    aimed: Callable[[Path, str, Path], tuple[Path, ...]] = lambda home, token, outside: ()
    after_manifest: bool = False
    manifest: Callable[[dict[str, Any]], dict[str, Any]] = lambda manifest: manifest


def escapes(name: str) -> Callable[[Path, str, Path], tuple[Path, ...]]:
    """Where ../NAME lands from the staging directory (var/restore/) or from the
    commands' working directory."""
    return lambda home, token, outside: (home / "var" / "restore" / name.format(token),
                                         Path.cwd().parent / name.format(token))


HOSTILE = {
    "dot-dot": Hostile(
        lambda token, outside: [regular(f"../escape-{token}.txt", b"pwned")],
        r"unsafe name.*'\.\.'", escapes("escape-{}.txt")),
    "dot-dot-inside": Hostile(
        lambda token, outside: [regular(f"redis/../../escape-{token}.txt", b"pwned")],
        r"unsafe name.*'\.\.'", escapes("escape-{}.txt")),
    "dot-dot-beside-the-home": Hostile(
        lambda token, outside: [regular(f"../../../../{token}.txt", b"pwned")],
        r"unsafe name.*'\.\.'",
        lambda home, token, outside: (home.parent / f"{token}.txt",)),
    "absolute": Hostile(
        lambda token, outside: [regular(f"/tmp/{token}.txt", b"pwned")],
        r"unsafe name.*relative path",
        lambda home, token, outside: (Path("/tmp") / f"{token}.txt",)),
    "symlink": Hostile(
        lambda token, outside: [special("models/link", tarfile.SYMTYPE, "/etc/passwd")],
        r"symbolic link.*/etc/passwd"),
    "write-through-a-symlink": Hostile(
        lambda token, outside: [special("models/link", tarfile.SYMTYPE, str(outside)),
                                regular("models/link/x", b"pwned")],
        r"symbolic link",
        lambda home, token, outside: (outside / "x",)),
    "hardlink": Hostile(
        lambda token, outside: [special("models/hard", tarfile.LNKTYPE, "/etc/passwd")],
        r"hard link.*/etc/passwd"),
    "char-device": Hostile(
        lambda token, outside: [special("models/null", tarfile.CHRTYPE)], r"device node"),
    "fifo": Hostile(
        lambda token, outside: [special("models/fifo", tarfile.FIFOTYPE)], r"\bFIFO\b"),
    "duplicate": Hostile(
        lambda token, outside: [regular("models/default/1/model.json", b"the second one")],
        r"appears twice"),
    "outside-the-layout": Hostile(
        lambda token, outside: [regular("etc/cron.d/x", b"* * * * * root true\n")],
        r"outside the backup layout"),
    "after-the-manifest": Hostile(
        lambda token, outside: [regular("models/late.json", b"{}")],
        r"follows MANIFEST\.json", after_manifest=True),
    # Beyond the usual list: a member under an earlier regular member, and a manifest
    # whose redis section has the wrong shape.
    "file-under-a-file": Hostile(
        lambda token, outside: [regular("models/default/1/model.json/x", b"pwned")],
        r"model\.json/x.*cannot be written"),
    "manifest-redis-not-an-object": Hostile(
        lambda token, outside: [], r"manifest|redis",
        manifest=lambda manifest: {**manifest, "redis": 5}),
    "manifest-keys-not-a-number": Hostile(
        lambda token, outside: [], r"manifest|keys",
        manifest=lambda manifest: {**manifest, "redis": {**manifest["redis"], "keys": "many"}}),
}


def hostile_archive(home: RedisHome, case: Hostile | None, token: str, outside: Path) -> str:
    entries, manifest = legit(home)
    if case is None:
        return craft(home, [*entries, manifest_member(manifest)])
    bad, tail = case.members(token, outside), [manifest_member(case.manifest(manifest))]
    return craft(home, entries + (tail + bad if case.after_manifest else bad + tail))


def test_the_crafted_archive_verifies_without_its_bad_member(
        redis_home: RedisHome, tmp_path: Path) -> None:
    """The control: each hostile archive below is this one plus its bad member, so its
    refusal is that member's doing."""
    fill(redis_home.client(), KEYS)
    name = hostile_archive(redis_home, None, uuid.uuid4().hex, tmp_path)
    done = redis_home.cli("verify", name, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["keys"] == KEYS + 2
    assert listing(redis_home, name)["state"] == catalog.VERIFIED


@pytest.mark.parametrize("case_id", [
    pytest.param(case_id, id=case_id)
    for case_id, case in HOSTILE.items()])
def test_a_malicious_archive_is_refused_whole(redis_home: RedisHome, tmp_path: Path,
                                              case_id: str) -> None:
    case = HOSTILE[case_id]
    token = f"unistack-escape-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"  # a real directory a link may point into
    outside.mkdir()
    passwd = Path("/etc/passwd").read_bytes()
    fill(redis_home.client(), KEYS)
    name = hostile_archive(redis_home, case, token, outside)
    before = observe(redis_home)
    done = attempt(redis_home, name, before, aimed=case.aimed(redis_home.home, token, outside))
    assert Path("/etc/passwd").read_bytes() == passwd
    assert not list(outside.iterdir())
    assert_refused(done, case.why)


# --- 5: no NAME.sha256 -------------------------------------------------------------------------


def test_an_archive_without_its_sha256_is_refused(redis_home: RedisHome) -> None:
    fill(redis_home.client(), KEYS)
    model_files(redis_home.settings())
    record, _ = real_backup(redis_home)
    before = observe(redis_home)
    catalog.sidecar(redis_home.backups / record["name"], ".sha256").unlink()
    done = attempt(redis_home, record["name"], before)
    # The catalog lists an archive without its .sha256 as partial (its writer stopped
    # before writing it), whatever a verification recorded.
    assert_refused(done, r"\.sha256 is missing", state=catalog.PARTIAL)


# --- 6: encrypted archives --------------------------------------------------------------------


@pytest.fixture
def secret_home() -> Iterator[RedisHome]:
    """A home whose .env holds a Slack webhook and whose --include-secrets backups are
    encrypted to an age recipient (its identity in extra["identity"])."""
    identity = x25519.Identity.generate()
    made = new_redis_home(BACKUP_RECIPIENT=str(identity.to_public()))
    made.extra["identity"] = str(identity)
    env_file = made.home / ".env"
    env_file.write_text(f"SLACK_WEBHOOK_URL={SECRET}\n")
    env_file.chmod(0o600)
    made.start_redis()
    try:
        yield made
    finally:
        made.cleanup()


def identity_file(directory: Path, identity: str) -> Path:
    path = directory / f"{uuid.uuid4().hex}.key"
    path.write_text(f"# created: by the test\n{identity}\n")
    path.chmod(0o600)
    return path


def sealed_backup(home: RedisHome) -> tuple[str, Run]:
    fill(home.client(), KEYS)
    model_files(home.settings())
    record, made = real_backup(home, "--include-secrets")
    assert record["name"].endswith(".tar.zst.age")
    assert archive.is_encrypted(home.backups / record["name"])
    assert record["state"] == catalog.SEALED
    return record["name"], made


def test_an_encrypted_archive_needs_its_identity_and_hides_the_secrets(
        secret_home: RedisHome, tmp_path: Path) -> None:
    name, made = sealed_backup(secret_home)
    path = secret_home.backups / name
    right = identity_file(tmp_path, secret_home.extra["identity"])
    wrong = identity_file(tmp_path, str(x25519.Identity.generate()))
    before = observe(secret_home)

    bare = attempt(secret_home, name, before)
    assert_refused(bare, r"is encrypted.*--identity", state=None)  # see the test below
    wrong_key = attempt(secret_home, name, before, identity=wrong)
    assert wrong_key.verify.returncode == wrong_key.restore.returncode == EXIT_CORRUPT
    checked = secret_home.cli("verify", name, "--json", "--identity", str(right))
    assert checked.returncode == EXIT_OK, checked.stderr
    assert json.loads(checked.stdout)["keys"] == KEYS + 2
    assert listing(secret_home, name)["state"] == catalog.VERIFIED

    inside = members(path, [x25519.Identity.from_str(secret_home.extra["identity"])])
    assert SECRET in inside["secrets/.env"].decode()  # there, encrypted, as asked for
    secrets = (SECRET, secret_home.env["REDIS_PASSWORD"],
               secret_home.env["UNISTACK_OPERATOR_TOKEN"])
    printed = [made.stdout, made.stderr, checked.stdout, checked.stderr]
    for done in (bare, wrong_key):
        printed += [done.verify.stdout, done.verify.stderr, json.dumps(done.listed),
                    done.restore.stdout, done.restore.stderr]
    for value in secrets:
        assert value not in inside[archive.MANIFEST].decode()
        assert value.encode() not in path.read_bytes()
        assert not [text for text in printed if value in text]
    assert_refused(wrong_key, r"decrypt", state=None)


def test_verifying_without_the_identity_leaves_a_sealed_archive_for_prune_to_keep(
        secret_home: RedisHome) -> None:
    """Forgetting --identity says so (exit 4) but finds nothing wrong with the archive:
    it must not become 'failed', which prune deletes."""
    name, _ = sealed_backup(secret_home)
    checked = secret_home.cli("verify", name)
    assert checked.returncode == EXIT_CORRUPT
    assert "--identity" in checked.stderr
    planned = secret_home.cli("prune", "--dry-run", "--json")
    assert planned.returncode == EXIT_OK, planned.stderr
    assert listing(secret_home, name)["state"] == catalog.SEALED
    assert name not in json.loads(planned.stdout)["remove"]
