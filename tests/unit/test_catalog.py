"""backup.catalog: archive names, and what the files beside an archive say about it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from unistack.backup import catalog
from unistack.backup.catalog import FAILED, PARTIAL, SEALED, UNVERIFIED, VERIFIED

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DIGEST = "ab" * 32


def archive(directory: Path, ts: float, state: dict[str, Any] | None = None, *,
            digest: str = DIGEST, tag: str = "", encrypted: bool = False,
            content: bytes = b"archive") -> Path:
    """An archive file named for TS; its .sha256 unless DIGEST is "", its .json if STATE."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / catalog.archive_name(ts, tag, encrypted)
    path.write_bytes(content)
    if digest:
        catalog.write_sha256(path, digest)
    if state is not None:
        catalog.write_state(path, state)
    return path


# --- names ----------------------------------------------------------------------------


def test_an_archive_name_carries_the_utc_time_the_tag_and_the_encryption() -> None:
    assert catalog.archive_name(T0) == "unistack-20231114T221320000000Z.tar.zst"
    assert catalog.archive_name(T0 + 0.5, "pre-restore", encrypted=True) == (
        "unistack-20231114T221320500000Z-pre-restore.tar.zst.age")


@pytest.mark.parametrize("ts", [T0, T0 + 0.5, T0 + 0.25, T0 + 59.125, T0 + 86_399.999])
def test_the_stamp_of_a_name_is_the_time_it_was_made_for(ts: float) -> None:
    assert catalog.stamp_of(catalog.archive_name(ts)) == pytest.approx(ts, abs=1e-6)
    assert catalog.stamp_of(catalog.archive_name(ts, "x1", True)) == pytest.approx(ts, abs=1e-6)


def test_a_name_without_microseconds_is_read_to_the_second() -> None:
    assert catalog.stamp_of("unistack-20231114T221320Z.tar.zst") == T0
    assert catalog.stamp_of("unistack-20231114T221320Z-nightly.tar.zst.age") == T0


def test_names_sort_in_time_order() -> None:
    times = [T0 + 0.000_001, T0 + 0.9, T0 + 1, T0 + 86_400]
    names = [catalog.archive_name(ts) for ts in times]
    assert sorted(reversed(names)) == names


@pytest.mark.parametrize("name", [
    "notes.txt",
    "unistack-20231114T221320Z.tar.gz",
    "unistack-20231114T221320Z.tar.zst.sha256",
    "unistack-20231114T221320Z.tar.zst.json",
    "unistack-20231114T221320Z.tar.zst.partial",
    "unistack-20231114T221320Z-Nightly.tar.zst",  # tags are lower case
    "unistack-20231114T2213Z.tar.zst",
    "unistack-20231114T221320.tar.zst",  # not UTC
    "other-20231114T221320Z.tar.zst",
])
def test_a_name_that_is_not_an_archive_of_ours_has_no_stamp(name: str) -> None:
    assert catalog.stamp_of(name) is None


def test_a_name_with_an_impossible_date_is_not_ours() -> None:
    assert catalog.stamp_of("unistack-20231301T000000Z.tar.zst") is None


# --- sidecars -------------------------------------------------------------------------


def test_the_sha256_sidecar_is_in_sha256sum_format_and_private(tmp_path: Path) -> None:
    path = tmp_path / catalog.archive_name(T0)
    catalog.write_sha256(path, DIGEST)
    sidecar = tmp_path / f"{path.name}.sha256"
    assert sidecar.read_text() == f"{DIGEST}  {path.name}\n"
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert catalog.read_sha256(path) == DIGEST


@pytest.mark.parametrize("text", ["", "not-a-digest  x\n", "AB" * 32 + "  x\n", "ab" * 31])
def test_a_sidecar_without_a_sha256_digest_records_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / catalog.archive_name(T0)
    (tmp_path / f"{path.name}.sha256").write_text(text)
    assert catalog.read_sha256(path) == ""


def test_the_state_sidecar_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / catalog.archive_name(T0)
    catalog.write_state(path, {"state": VERIFIED, "keys": 3})
    assert catalog.read_state(path) == {"state": VERIFIED, "keys": 3}
    assert stat.S_IMODE((tmp_path / f"{path.name}.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("text", [None, "{not json", "[1, 2]"])
def test_a_missing_or_unreadable_state_sidecar_is_an_empty_state(
    tmp_path: Path, text: str | None
) -> None:
    path = tmp_path / catalog.archive_name(T0)
    if text is not None:
        (tmp_path / f"{path.name}.json").write_text(text)
    assert catalog.read_state(path) == {}


# --- one archive ----------------------------------------------------------------------


def test_an_archive_verified_by_its_last_check_is_verified(tmp_path: Path) -> None:
    path = archive(tmp_path, T0, {"state": VERIFIED, "verified_at": T0 + 60, "keys": 1234,
                                  "detail": "every key read back"}, content=b"x" * 321)
    found = catalog.entry(path)
    assert found is not None
    assert (found.name, found.path, found.ts, found.size) == (path.name, path, T0, 321)
    assert (found.state, found.sha256, found.verified_at, found.keys) == (
        VERIFIED, DIGEST, T0 + 60, 1234)
    assert found.detail == "every key read back"
    assert (found.encrypted, found.tag) == (False, "")


def test_a_complete_archive_not_checked_yet_is_unverified(tmp_path: Path) -> None:
    found = catalog.entry(archive(tmp_path, T0))
    assert found is not None
    assert (found.state, found.verified_at, found.keys, found.detail) == (
        UNVERIFIED, None, None, "")


def test_an_archive_whose_check_failed_is_failed_and_says_why(tmp_path: Path) -> None:
    found = catalog.entry(archive(tmp_path, T0, {"state": FAILED, "verified_at": T0 + 5,
                                                 "detail": "sha256 mismatch"}))
    assert found is not None
    assert (found.state, found.detail) == (FAILED, "sha256 mismatch")


def test_an_encrypted_archive_checked_without_its_identity_is_sealed(tmp_path: Path) -> None:
    found = catalog.entry(archive(tmp_path, T0, {"state": SEALED, "keys": 7},
                                  tag="secrets", encrypted=True))
    assert found is not None
    assert (found.state, found.keys, found.encrypted, found.tag) == (SEALED, 7, True, "secrets")


def test_an_archive_without_its_sha256_is_partial(tmp_path: Path) -> None:
    found = catalog.entry(archive(tmp_path, T0, {"state": VERIFIED}, digest=""))
    assert found is not None
    assert found.state == PARTIAL
    assert found.detail == "incomplete: its writer stopped before the end"
    assert found.verified_at is None


def test_an_archive_with_a_garbled_sha256_is_partial(tmp_path: Path) -> None:
    path = archive(tmp_path, T0, {"state": VERIFIED})
    (tmp_path / f"{path.name}.sha256").write_text("garbage\n")
    found = catalog.entry(path)
    assert found is not None
    assert found.state == PARTIAL


def test_a_partial_file_is_a_partial_backup_named_as_it_will_be(tmp_path: Path) -> None:
    name = catalog.archive_name(T0, "nightly")
    path = tmp_path / f"{name}.partial"
    path.write_bytes(b"half")
    found = catalog.entry(path)
    assert found is not None
    assert (found.name, found.path, found.state, found.size, found.tag) == (
        name, path, PARTIAL, 4, "nightly")


def test_a_state_sidecar_without_a_state_is_unverified(tmp_path: Path) -> None:
    found = catalog.entry(archive(tmp_path, T0, {"keys": 5}))
    assert found is not None
    assert (found.state, found.keys) == (UNVERIFIED, 5)


def test_a_file_not_named_as_an_archive_or_gone_is_no_backup(tmp_path: Path) -> None:
    other = tmp_path / "notes.tar.zst"
    other.write_bytes(b"")
    assert catalog.entry(other) is None
    assert catalog.entry(tmp_path / catalog.archive_name(T0)) is None


def test_a_backup_record_is_json_ready(tmp_path: Path) -> None:
    path = archive(tmp_path, T0, {"state": VERIFIED, "keys": 1})
    found = catalog.entry(path)
    assert found is not None
    record = found.to_json()
    assert record["path"] == str(path)
    assert (record["name"], record["state"], record["keys"]) == (path.name, VERIFIED, 1)


# --- a directory ----------------------------------------------------------------------


def test_scan_lists_every_backup_newest_first_partial_ones_included(tmp_path: Path) -> None:
    old = archive(tmp_path, T0, {"state": VERIFIED})
    failed = archive(tmp_path, T0 + 3600, {"state": FAILED})
    sealed = archive(tmp_path, T0 + 7200, {"state": SEALED}, encrypted=True)
    partial = tmp_path / f"{catalog.archive_name(T0 + 9000)}.partial"
    partial.write_bytes(b"")
    (tmp_path / "README").write_text("not a backup")
    (tmp_path / "other.tar.zst").write_bytes(b"")
    (tmp_path / "staging").mkdir()
    listed = catalog.scan(tmp_path)
    assert [b.path for b in listed] == [partial, sealed, failed, old]
    assert [b.state for b in listed] == [PARTIAL, SEALED, FAILED, VERIFIED]


def test_scan_of_a_missing_directory_or_a_file_is_empty(tmp_path: Path) -> None:
    assert catalog.scan(tmp_path / "missing") == []
    (tmp_path / "file").write_text("")
    assert catalog.scan(tmp_path / "file") == []


def test_scan_passes_over_a_file_whose_name_has_an_impossible_date(tmp_path: Path) -> None:
    kept = archive(tmp_path, T0, {"state": VERIFIED})
    (tmp_path / "unistack-20231301T000000Z.tar.zst").write_bytes(b"")
    assert [b.path for b in catalog.scan(tmp_path)] == [kept]


def test_newest_verified_passes_over_newer_backups_not_verified(tmp_path: Path) -> None:
    verified = archive(tmp_path, T0, {"state": VERIFIED})
    archive(tmp_path, T0 - 3600, {"state": VERIFIED})
    archive(tmp_path, T0 + 1, {"state": FAILED})
    archive(tmp_path, T0 + 2)
    archive(tmp_path, T0 + 3, {"state": SEALED})
    archive(tmp_path, T0 + 4, {"state": VERIFIED}, digest="")  # partial
    newest = catalog.newest_verified(catalog.scan(tmp_path))
    assert newest is not None
    assert newest.path == verified


def test_newest_verified_of_no_verified_backup_is_none(tmp_path: Path) -> None:
    archive(tmp_path, T0, {"state": FAILED})
    assert catalog.newest_verified(catalog.scan(tmp_path)) is None
    assert catalog.newest_verified([]) is None


def test_orphans_are_the_sidecars_whose_archive_is_gone(tmp_path: Path) -> None:
    kept = archive(tmp_path, T0, {"state": VERIFIED})
    gone = archive(tmp_path, T0 + 60, {"state": VERIFIED})
    half = archive(tmp_path, T0 + 120)  # a writer that died after its sha256
    gone.unlink()
    half.unlink()
    (tmp_path / "settings.json").write_text("{}")  # not a sidecar of ours
    (tmp_path / "x.sha256").write_text("")
    orphans = catalog.orphans(tmp_path)
    assert orphans == sorted([tmp_path / f"{gone.name}.json", tmp_path / f"{gone.name}.sha256",
                              tmp_path / f"{half.name}.sha256"])
    assert not any(p.name.startswith(kept.name) for p in orphans)


def test_orphans_of_a_missing_directory_are_none(tmp_path: Path) -> None:
    assert catalog.orphans(tmp_path / "missing") == []
