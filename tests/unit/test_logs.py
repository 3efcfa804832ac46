"""logs: the stack's line format, secret redaction, and reading every service's log in order."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest

from unistack.config import Settings, load_settings
from unistack.logs import LogLine, follow, parse_timestamp, recent, setup_logging, stamp_lines

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "redis-password-for-log-tests-9z8y"
TOKEN = "operator-token-for-log-tests-7x6w"
TEXT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[(?P<level>[A-Z]+)\] \[(?P<service>[a-z]+)\] "
    r"(?P<message>.*)$")


def utc(iso: str) -> float:
    """Epoch seconds of a UTC wall-clock time, computed without the code under test."""
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def three_hours_east() -> Iterator[None]:
    """Local time is UTC+3 (POSIX TZ signs are inverted), so local and UTC formats differ."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "TST-03"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# --- timestamps ----------------------------------------------------------------------


@pytest.mark.usefixtures("three_hours_east")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2026-11-24 10:57:40.235 [INFO] [hub] reconcile round", utc("2026-11-24T07:57:40.235")),
        ('{"ts": "2026-11-24 10:57:40.235", "level": "INFO", "service": "hub", "message": "x"}',
         utc("2026-11-24T07:57:40.235")),
        ("2026-11-24 10:57:40,235 INFO spawned: 'redis' with pid 3581",
         utc("2026-11-24T07:57:40.235")),
        ("3581:M 24 Nov 2026 10:57:45.935 * Ready to accept connections tcp",
         utc("2026-11-24T07:57:45.935")),
        ("3581:C 24 Nov 2026 10:57:45.001 # oO0OoO0OoO0Oo Redis is starting",
         utc("2026-11-24T07:57:45.001")),
        ('ts=2026-11-24T10:57:39.333Z caller=main.go:585 level=info msg="Starting Prometheus"',
         utc("2026-11-24T10:57:39.333")),
        ("level=info ts=2026-11-24T10:57:39Z msg=x", utc("2026-11-24T10:57:39.000")),
    ],
    ids=["ours", "ours-json", "supervisord", "redis", "redis-child", "prometheus",
         "prometheus-whole-second"],
)
def test_parse_timestamp(line: str, expected: float) -> None:
    assert parse_timestamp(line) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "line",
    ["Traceback (most recent call last):", '  File "x.py", line 1', "",
     "2026-13-45 99:99:99.000 [INFO] [hub] no such date"],
)
def test_parse_timestamp_of_a_line_without_one_is_none(line: str) -> None:
    assert parse_timestamp(line) is None


def test_lines_without_timestamp_inherit_the_previous() -> None:
    lines = ["continued from before",
             "2026-11-24 10:57:40.235 [ERROR] [hub] failed",
             "Traceback (most recent call last):",
             "RuntimeError: boom",
             "2026-11-24 10:57:41.000 [INFO] [hub] recovered"]
    stamped = stamp_lines("hub", lines, previous=42.0)
    first, second = parse_timestamp(lines[1]), parse_timestamp(lines[4])
    assert [line.ts for line in stamped] == [42.0, first, first, first, second]
    assert all(line.service == "hub" for line in stamped)
    assert [line.text for line in stamped] == lines


# --- recent ----------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    with path.open("a") as handle:
        handle.writelines(line + "\n" for line in lines)
    return path


@pytest.mark.usefixtures("three_hours_east")
def test_recent_interleaves_files_in_time_order_and_keeps_the_last(tmp_path: Path) -> None:
    # Local 10:00:0N is 07:00:0N UTC; prometheus writes UTC.
    files = {
        "hub": write_lines(tmp_path / "hub.log",
                           "2026-11-24 10:00:01.000 [INFO] [hub] h1",
                           "2026-11-24 10:00:04.000 [ERROR] [hub] h4",
                           "Traceback (most recent call last):",
                           "2026-11-24 10:00:07.000 [INFO] [hub] h7"),
        "redis": write_lines(tmp_path / "redis.log",
                             "9:M 24 Nov 2026 10:00:02.000 * r2",
                             "9:M 24 Nov 2026 10:00:05.000 * r5"),
        "prometheus": write_lines(tmp_path / "prometheus.log",
                                  "ts=2026-11-24T07:00:03.000Z level=info msg=p3",
                                  "ts=2026-11-24T07:00:06.000Z level=info msg=p6"),
    }
    last = recent(files, 5)
    assert [(line.service, line.text.split()[-1]) for line in last] == [
        ("hub", "h4"), ("hub", "last):"), ("redis", "r5"), ("prometheus", "msg=p6"), ("hub", "h7")]
    assert [line.ts for line in last] == sorted(line.ts for line in last)
    assert len(recent(files, 100)) == 8


def test_recent_reads_only_the_tail_of_a_large_file(tmp_path: Path) -> None:
    lines = [f"2026-11-24 10:{i // 60:02d}:{i % 60:02d}.000 [INFO] [hub] line {i}"
             for i in range(3000)]
    path = write_lines(tmp_path / "hub.log", *lines)
    assert [line.text for line in recent({"hub": path}, 3)] == lines[-3:]


# --- follow ----------------------------------------------------------------------------


class Script:
    """An injected `sleep` that performs the next filesystem step instead of sleeping."""

    def __init__(self, *steps: Callable[[], object]) -> None:
        self._steps = list(steps)
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if not self._steps:
            raise AssertionError("follow() asked for more polls than the script has steps")
        self._steps.pop(0)()


def append(path: Path, text: str) -> Callable[[], None]:
    def step() -> None:
        with path.open("a") as handle:
            handle.write(text)
    return step


def rotate(path: Path, text: str) -> Callable[[], None]:
    """What supervisord does: rename the file aside and start a new one."""
    def step() -> None:
        path.rename(path.with_name(path.name + ".1"))
        path.write_text(text)
    return step


def test_follow_yields_appended_lines_and_reopens_a_rotated_file(tmp_path: Path) -> None:
    hub = write_lines(tmp_path / "hub.log", "2026-11-24 10:00:00.000 [INFO] [hub] old")
    redis = write_lines(tmp_path / "redis.log", "9:M 24 Nov 2026 10:00:00.000 * old")
    stamp = "2026-11-24 10:00:01.000 [INFO] [hub] "
    sleep = Script(
        append(hub, stamp + "a1\n"),
        append(redis, "9:M 24 Nov 2026 10:00:02.000 * half"),  # no newline yet
        append(redis, " done\n"),
        rotate(hub, "".join(f"{stamp}rotated-{i}\n" for i in range(5))),  # longer than before
        append(hub, stamp + "after\n"),
    )
    lines = list(islice(follow({"hub": hub, "redis": redis}, poll=0.25, sleep=sleep), 8))
    assert [(line.service, line.text.rsplit(" ", 1)[-1]) for line in lines] == [
        ("hub", "a1"), ("redis", "done"),
        *[("hub", f"rotated-{i}") for i in range(5)], ("hub", "after")]
    assert lines[1].text == "9:M 24 Nov 2026 10:00:02.000 * half done"
    assert lines[0].ts == parse_timestamp(stamp)
    assert set(sleep.pauses) == {0.25}


def test_follow_picks_up_a_file_created_later(tmp_path: Path) -> None:
    late = tmp_path / "late.log"
    sleep = Script(append(late, "first\nsecond\n"))
    lines = list(islice(follow({"late": late}, sleep=sleep), 2))
    assert lines == [LogLine(0.0, "late", "first"), LogLine(0.0, "late", "second")]


# --- setup_logging ---------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    loaded = load_settings(environ={"UNISTACK_HOME": str(tmp_path)}, root=ROOT)
    return replace(loaded, redis_password=PASSWORD, unistack_operator_token=TOKEN)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def log_lines(capsys: pytest.CaptureFixture[str], settings: Settings,
              emit: Callable[[logging.Logger], None]) -> list[str]:
    logger = setup_logging(settings, "hub")
    emit(logger)
    return capsys.readouterr().out.splitlines()


def test_text_format(capsys: pytest.CaptureFixture[str], settings: Settings) -> None:
    before = time.time()
    lines = log_lines(capsys, settings, lambda log: log.info("serving on %d", 9180))
    assert len(lines) == 1
    match = TEXT_LINE.match(lines[0])
    assert match, lines[0]
    assert match.group("level", "service", "message") == ("INFO", "hub", "serving on 9180")
    stamp = parse_timestamp(lines[0])
    assert stamp is not None
    assert before - 0.001 <= stamp <= time.time()


def test_level_from_settings_filters(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    def emit(log: logging.Logger) -> None:
        log.info("hidden")
        log.warning("shown")

    lines = log_lines(capsys, replace(settings, log_level="WARNING"), emit)
    assert [TEXT_LINE.match(line).group("message") for line in lines] == ["shown"]  # type: ignore[union-attr]


def test_json_format(capsys: pytest.CaptureFixture[str], settings: Settings) -> None:
    lines = log_lines(capsys, replace(settings, log_format="json"),
                      lambda log: log.warning("disk at %d%%", 91))
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert {k: record[k] for k in ("level", "service", "message")} == {
        "level": "WARNING", "service": "hub", "message": "disk at 91%"}
    assert parse_timestamp(lines[0]) == pytest.approx(time.time(), abs=5)


def raise_with_secrets(log: logging.Logger) -> None:
    try:
        raise RuntimeError(f"AUTH {PASSWORD} refused; token {TOKEN}")
    except RuntimeError:
        log.exception("connecting with %s failed", PASSWORD)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_are_redacted_even_in_tracebacks(
    capsys: pytest.CaptureFixture[str], settings: Settings, log_format: str
) -> None:
    lines = log_lines(capsys, replace(settings, log_format=log_format), raise_with_secrets)
    output = "\n".join(lines)
    assert PASSWORD not in output
    assert TOKEN not in output
    assert "****" + PASSWORD[-4:] in output
    assert "****" + TOKEN[-4:] in output
    assert "Traceback" in output
    assert "RuntimeError" in output


WEBHOOK = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/cccccccccccccccccccccccc"


def test_webhook_is_redacted_in_text(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    lines = log_lines(capsys, settings, lambda log: log.info("alerting via %s", WEBHOOK))
    assert WEBHOOK not in lines[0]
    assert lines[0].endswith("alerting via ****")


def test_webhook_is_redacted_in_valid_json(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    lines = log_lines(capsys, replace(settings, log_format="json"),
                      lambda log: log.info("alerting via %s", WEBHOOK))
    assert json.loads(lines[0])["message"] == "alerting via ****"


def test_secret_with_json_special_characters_is_redacted(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    secret = 'chosen"by\\operator-1234'
    chosen = replace(settings, log_format="json", redis_password=secret)
    lines = log_lines(capsys, chosen, lambda log: log.info("password %s", secret))
    assert json.loads(lines[0])["message"] == "password ****1234"
