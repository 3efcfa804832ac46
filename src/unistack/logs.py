"""Logs: the one line format of our Python services, and reading every service's log.

Our services write `2026-11-23 18:32:30.123 [LEVEL] [service] message` (or JSON lines
with LOG_FORMAT=json) to stdout, through a formatter that redacts every secret;
supervisord writes each to var/log/<service>.log and rotates it. Reading parses the
timestamps of every format in var/log/ so that all services interleave in time order.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from unistack.config import Settings


class _Formatter(logging.Formatter):
    def __init__(self, service: str, json_lines: bool, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._service = service
        self._json = json_lines
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        # Redact before encoding: JSON escaping would hide a secret from the match.
        message = self._redact(message)
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        stamp += f".{int(record.msecs):03d}"
        if self._json:
            return json.dumps({"ts": stamp, "level": record.levelname,
                               "service": self._service, "message": message})
        return f"{stamp} [{record.levelname}] [{self._service}] {message}"


def setup_logging(settings: Settings, service: str) -> logging.Logger:
    """Route the root logger to stdout in the stack's format, secrets redacted."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(service, settings.log_format == "json", settings.redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    return logging.getLogger(f"unistack.{service}")


class LogLine(NamedTuple):
    ts: float
    service: str
    text: str


_LOCAL_FORMATS = (
    # ours, and supervisord's own log (comma before milliseconds)
    (re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[.,](\d{3})"), "%Y-%m-%d %H:%M:%S"),
    # redis-server: "1234:M 24 Nov 2026 10:50:42.123 * Ready to accept connections"
    (re.compile(r"^\d+:[XCSM] (\d\d \w{3} \d{4} \d\d:\d\d:\d\d)\.(\d{3})"), "%d %b %Y %H:%M:%S"),
)
# prometheus logfmt: ts=2026-11-24T10:50:42.123Z
_UTC_FORMAT = re.compile(r"\bts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z")
_JSON_TS = re.compile(r'^\{"ts": "(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})"')


def parse_timestamp(line: str) -> float | None:
    """Epoch seconds of a log line in any of the stack's formats, or None."""
    for pattern, fmt in (*_LOCAL_FORMATS, (_JSON_TS, "%Y-%m-%d %H:%M:%S")):
        match = pattern.match(line)
        if match:
            try:
                base = time.mktime(time.strptime(match.group(1), fmt))
            except ValueError:
                return None
            return base + int(match.group(2)) / 1000
    match = _UTC_FORMAT.search(line)
    if match:
        moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        fraction = float("0." + match.group(2)) if match.group(2) else 0.0
        return moment.timestamp() + fraction
    return None


def log_files(settings: Settings) -> dict[str, Path]:
    """The current log file of each service (and supervisord) under var/log/."""
    return {path.stem: path for path in sorted(settings.log_dir.glob("*.log"))}


def tail_lines(path: Path, count: int) -> list[str]:
    """The last COUNT lines of PATH (none if it does not exist)."""
    block = 65536
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start) + data
            end = start
    return data.decode(errors="replace").splitlines()[-count:]


def stamp_lines(service: str, lines: list[str], previous: float = 0.0) -> list[LogLine]:
    """Give each line its own timestamp, or its predecessor's (tracebacks, continuations)."""
    stamped = []
    for text in lines:
        previous = parse_timestamp(text) or previous
        stamped.append(LogLine(previous, service, text))
    return stamped


def recent(files: dict[str, Path], count: int) -> list[LogLine]:
    """The last COUNT lines across FILES, interleaved in time order."""
    merged: list[LogLine] = []
    for service, path in files.items():
        merged.extend(stamp_lines(service, tail_lines(path, count)))
    merged.sort(key=lambda line: line.ts)
    return merged[-count:]


def follow(
    files: dict[str, Path], poll: float = 0.2, sleep: Callable[[float], None] = time.sleep
) -> Iterator[LogLine]:
    """Yield lines appended to FILES from now on; reopens a file that was rotated."""
    offsets = {name: path.stat().st_size for name, path in files.items() if path.exists()}
    inodes = {name: path.stat().st_ino for name, path in files.items() if path.exists()}
    while True:
        for name, path in files.items():
            if not path.exists():
                continue
            info = path.stat()
            if info.st_ino != inodes.get(name) or info.st_size < offsets.get(name, 0):
                inodes[name], offsets[name] = info.st_ino, 0
            with path.open("rb") as handle:
                handle.seek(offsets.get(name, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            offsets[name] = offsets.get(name, 0) + len(complete)
            yield from stamp_lines(name, complete.decode(errors="replace").splitlines())
        sleep(poll)
