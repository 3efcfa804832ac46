"""The backup archive: one tar stream, zstd-compressed (level 3, every core, with its
content checksum), age-encrypted when it holds secrets, hashed as it is written.

Layout: redis/dump.rdb, models/..., market/..., config/config.env, [secrets/.env], and
MANIFEST.json last: per-file sizes and sha256, the commit marker inside the archive.

An archive is only ever read back through `unpack`, which refuses the whole archive on
the first bad member (a link, a device, an absolute or `..` name, a duplicate, a name
outside the layout) and never lets tarfile write anything: it writes each regular file
itself, with O_EXCL | O_NOFOLLOW, into a fresh staging directory that live data never
sees, then checks every file against the manifest and the stream's end against zstd's
frame checksum (a .tar.gz cut by a few bytes passes a full tarfile read; this does not).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple

import zstandard

MANIFEST = "MANIFEST.json"
FORMAT = 1
CHUNK = 1 << 20
TOPS = frozenset({"redis", "models", "market", "config", "secrets"})
MAX_MEMBERS = 200_000
ZSTD_LEVEL = 3

Progress = Callable[[int], None]  # bytes of input done so far


class ArchiveError(Exception):
    """The archive is corrupt, truncated, unsafe or not ours; the message says where."""


class NeedsIdentity(ArchiveError):
    """An encrypted archive and no identity to open it: nothing is wrong with it."""


class DecryptFailed(ArchiveError):
    """age refused it: a wrong identity, or an archive damaged since it was written."""


class NoRoom(Exception):
    """Unpacking would fill the disk under var/restore (a large archive, or a bomb)."""


class Entry(NamedTuple):
    """One file to archive: its name in the archive and where it is now."""

    name: str
    source: Path


class Written(NamedTuple):
    sha256: str  # of the whole archive file as written
    size: int
    manifest: dict[str, Any]


class _Sink:
    """The end of the writing chain: counts and hashes what reaches the file."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._handle.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._handle.flush()


@contextmanager
def _encrypting(sink: _Sink, recipients: list[Any]) -> Iterator[Any]:
    """A writer whose bytes reach SINK age-encrypted (pyrage on a thread, through a pipe)."""
    import pyrage  # noqa: PLC0415 -- only archives with secrets need it

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def encrypt() -> None:
        try:
            with os.fdopen(read_fd, "rb") as reader:
                pyrage.encrypt_io(reader, sink, recipients)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=encrypt, name="backup-encrypt", daemon=True)
    thread.start()
    try:
        with os.fdopen(write_fd, "wb", buffering=CHUNK) as writer:
            yield writer
    finally:
        thread.join()
    if failure:
        raise ArchiveError(f"encryption failed: {failure[0]}")


Manifest = Callable[[list[dict[str, Any]]], dict[str, Any]]


def write(destination: Path, entries: list[Entry], manifest: Manifest,
          recipients: list[Any] | None = None, progress: Progress = lambda n: None
          ) -> Written:
    """Write ENTRIES, then the manifest that MANIFEST makes of their records (path, size,
    sha256), to DESTINATION, fsynced; the caller renames it into place. Encrypted to
    RECIPIENTS when given."""
    with open(destination, "xb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        sink = _Sink(handle)
        with _encrypting(sink, recipients) if recipients else _plain(sink) as out:
            document = _write_tar(out, entries, manifest, progress)
        handle.flush()
        os.fsync(handle.fileno())
    return Written(sink.hash.hexdigest(), sink.size, document)


@contextmanager
def _plain(sink: _Sink) -> Iterator[_Sink]:
    yield sink


def _write_tar(out: Any, entries: list[Entry], manifest: Manifest,
               progress: Progress) -> dict[str, Any]:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
    files: list[dict[str, Any]] = []
    with compressor.stream_writer(out, closefd=False) as compressed, \
            tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT,
                         bufsize=CHUNK) as tar:
        # Its default, 16 KiB copies, makes the archive 2.4x slower (not in typeshed).
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]
        for entry in entries:
            files.append(_add(tar, entry, progress))
        document = {"format": FORMAT, **manifest(files), "files": files}
        data = json.dumps(document, indent=2).encode()
        tar.addfile(_info(MANIFEST, len(data), 0o600), _Bytes(data))  # type: ignore[arg-type,unused-ignore]
    return document


def _add(tar: tarfile.TarFile, entry: Entry, progress: Progress) -> dict[str, Any]:
    with open(entry.source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        reader = _Hashed(handle, progress)
        tar.addfile(_info(entry.name, size, 0o600), reader)  # type: ignore[arg-type,unused-ignore]
    return {"path": entry.name, "size": size, "sha256": reader.hash.hexdigest()}


def _info(name: str, size: int, mode: int) -> tarfile.TarInfo:
    """A member header that says nothing of this machine's users."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(time.time())
    return info


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk


# --- reading ---------------------------------------------------------------------


class _Hashed:
    """A file as it is read (an input file by tarfile, the archive by unpack): hashed
    on the way, progress reported."""

    def __init__(self, handle: IO[bytes], progress: Progress) -> None:
        self._handle = handle
        self._progress = progress
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.hash.update(data)
        self._progress(len(data))
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Decompressed:
    """The tar stream out of zstd, decompressed (and the archive read and hashed) on a
    thread of its own, so that the other core does it while this one checks, hashes and
    writes the members. At the end the frame must be complete (a cut archive ends
    mid-frame) and nothing may follow it."""

    def __init__(self, source: Any) -> None:
        # bytes, then None at the end of the frame, or the exception that ended it
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self._stopped = threading.Event()
        self._buffer = bytearray()
        self._ended = False
        self._thread = threading.Thread(target=self._produce, args=(source,),
                                        name="backup-unpack", daemon=True)
        self._thread.start()

    def _produce(self, source: Any) -> None:
        try:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            while not decompressor.eof:
                if self._stopped.is_set():
                    return
                data = source.read(CHUNK)
                if not data:
                    raise ArchiveError("the archive is truncated: its compressed stream "
                                       "ends before its end mark")
                chunk = decompressor.decompress(data)
                if chunk:
                    self._put(chunk)
            if source.read(CHUNK) or decompressor.unused_data:
                raise ArchiveError("data follows the end of the compressed stream")
            self._put(None)
        except zstandard.ZstdError as exc:
            self._put(ArchiveError(f"the compressed stream is corrupt: {exc}"))
        except BaseException as exc:  # handed to the reader's thread
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stopped.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fill(self) -> bool:
        if self._ended:
            return False
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
            return False
        self._buffer += item
        return True

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def finish(self) -> None:
        """Read to the end of the frame (tar's zero blocks), checking it is whole."""
        while self._fill():
            self._buffer.clear()
        self._thread.join()

    def close(self) -> None:
        """Stop the thread whatever happened (a refused member ends reading early)."""
        self._stopped.set()
        self._thread.join()


@contextmanager
def _decrypting(source: _Hashed, identities: list[Any]) -> Iterator[Any]:
    import pyrage  # noqa: PLC0415 -- only archives with secrets need it

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def decrypt() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=CHUNK) as writer:
                pyrage.decrypt_io(source, writer, identities)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=decrypt, name="backup-decrypt", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=CHUNK) as reader:
        try:
            yield reader
        except ArchiveError:
            # A stream that ended early: decryption may have ended it, and says so once
            # its thread is over. Still running (a refused member): the error stands.
            thread.join(timeout=2.0)
            if not failure:
                raise
        finally:
            reader.close()
            thread.join()
    if failure:  # what broke the stream, not its symptom (an early end)
        raise DecryptFailed(f"decryption failed (a wrong identity, or an archive damaged "
                            f"since it was written): {failure[0]}")


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(21) == b"age-encryption.org/v1"


def unpack(path: Path, staging: Path, identities: list[Any] | None = None,
           progress: Progress = lambda n: None) -> tuple[str, dict[str, Any]]:
    """Check and write every member of the archive at PATH into STAGING (created here,
    must not exist); return (sha256 of the whole file, manifest). On any fault STAGING
    is removed and ArchiveError says which member and why."""
    encrypted = is_encrypted(path)
    if encrypted and not identities:
        raise NeedsIdentity(f"{path.name} is encrypted (it holds secrets): give the age "
                            "identity that BACKUP_RECIPIENT belongs to (--identity FILE)")
    staging.mkdir(mode=0o700, parents=False)
    try:
        with open(path, "rb") as handle:
            source = _Hashed(handle, progress)
            with _decrypting(source, identities or []) if encrypted \
                    else _plain_source(source) as plain:
                stream = _Decompressed(plain)
                try:
                    manifest = _extract(stream, staging, _room(staging))
                finally:
                    stream.close()
            source.drain()
        return source.hash.hexdigest(), manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def _plain_source(source: _Hashed) -> Iterator[_Hashed]:
    yield source


def _room(staging: Path) -> int:
    """Bytes the members may add up to: the free space under STAGING, less a reserve."""
    return shutil.disk_usage(staging).free - (64 << 20)


def _extract(stream: _Decompressed, staging: Path, room: int) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    manifest: dict[str, Any] | None = None
    count = total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
            for member in tar:
                if manifest is not None:
                    raise ArchiveError(f"member {member.name!r} follows {MANIFEST}, which "
                                       "must be last")
                check_member(member, seen, count)
                count, total = count + 1, total + member.size
                if total > room:
                    raise NoRoom(f"the archive unpacks to more than the {room / 1e6:.0f} MB "
                                 f"free under {staging.parent}; free space and try again")
                reader = tar.extractfile(member) if member.isfile() else None
                if member.name == MANIFEST:
                    manifest = _manifest(reader.read() if reader else b"")
                elif reader is not None:
                    seen[member.name] = _stored(reader, staging, member)
        stream.finish()
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a readable tar stream: {exc}") from None
    except (EOFError, zstandard.ZstdError) as exc:
        raise ArchiveError(f"the archive is truncated or corrupt: {exc}") from None
    if manifest is None:
        raise ArchiveError(f"no {MANIFEST}: the archive is incomplete (its writer was "
                           "stopped before the end) or not a unistack backup")
    compare(manifest, seen)
    return manifest


def check_member(member: tarfile.TarInfo, seen: dict[str, Any], count: int) -> None:
    """Refuse anything but a regular file or directory with a plain relative name inside
    the layout, met once."""
    name = member.name
    if count >= MAX_MEMBERS:
        raise ArchiveError(f"more than {MAX_MEMBERS} members: refused (a tar bomb?)")
    kind = "regular file" if member.isreg() else "directory" if member.isdir() else None
    if kind is None or member.issparse():
        raise ArchiveError(f"member {name!r} is a {_kind(member)}: only regular files "
                           "and directories are allowed")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or not parts or any(p in ("", ".", "..") for p in parts) \
            or "\\" in name or "\0" in name or name != "/".join(parts):
        raise ArchiveError(f"member {name!r} has an unsafe name: expected a relative path "
                           "without '..' or '.'")
    if name != MANIFEST and parts[0] not in TOPS:
        raise ArchiveError(f"member {name!r} is outside the backup layout "
                           f"({', '.join(sorted(TOPS))}, {MANIFEST})")
    if name in seen:
        raise ArchiveError(f"member {name!r} appears twice: refused")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device node"
    if member.isfifo():
        return "FIFO"
    return "sparse file" if member.issparse() else f"member of type {member.type!r}"


def _stored(reader: IO[bytes], staging: Path, member: tarfile.TarInfo) -> dict[str, Any]:
    """_store, with a name that cannot be written (under a file, over a directory) as
    the archive's fault; a full disk stays the disk's."""
    try:
        return _store(reader, staging, member)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ArchiveError(f"member {member.name!r} cannot be written where it points "
                           f"({exc.strerror or exc}): refused") from None


def _store(reader: IO[bytes], staging: Path, member: tarfile.TarInfo) -> dict[str, Any]:
    """Write one regular file under STAGING ourselves: never through a link, never over
    an existing file; hashed as written. Not fsynced: a verify throws it away, and a
    restore syncs the whole staging directory once, before it swaps anything in."""
    target = staging.joinpath(*PurePosixPath(member.name).parts)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return {"path": member.name, "size": size, "sha256": digest.hexdigest()}


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), list):
        raise ArchiveError(f"{MANIFEST} is not a unistack backup manifest of format {FORMAT}")
    redis = manifest.get("redis")
    if not isinstance(redis, dict) or not isinstance(redis.get("keys"), int) \
            or isinstance(redis.get("keys"), bool) or redis["keys"] < 0 \
            or not isinstance(redis.get("rdb_sha256"), str):
        raise ArchiveError(f"{MANIFEST}'s redis section is malformed: expected a key count "
                           "(a whole number >= 0) and the RDB's sha256")
    return manifest


def compare(manifest: dict[str, Any], found: dict[str, dict[str, Any]]) -> None:
    """Every file the manifest lists is there with its size and sha256, and no other."""
    listed = {str(f.get("path")): f for f in manifest["files"] if isinstance(f, dict)}
    for name in sorted(set(listed) | set(found)):
        if name not in found:
            raise ArchiveError(f"{name} is in the manifest but not in the archive")
        if name not in listed:
            raise ArchiveError(f"{name} is in the archive but not in the manifest")
        want, got = listed[name], found[name]
        if (want.get("size"), want.get("sha256")) != (got["size"], got["sha256"]):
            raise ArchiveError(f"{name} differs from the manifest: size {got['size']} "
                               f"(expected {want.get('size')}), sha256 {got['sha256'][:12]}… "
                               f"(expected {str(want.get('sha256'))[:12]}…)")


def file_sha256(path: Path, progress: Progress = lambda n: None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()
