"""OHLCV market data: the `Bars` record, a synthetic generator, and CSV load/store.

CSVs live under `Settings.market_dir` (var/data/market). `load_csv` is the one gate
for outside data: every bad input raises `MarketDataError` naming the file, the line
and what was expected, so nothing downstream has to re-check prices or timestamps.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    pass

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# The longest feature warm-up (features.FIRST_VALID) is 33 bars; 64 leaves rows to learn from.
MIN_ROWS = 64
# Epoch seconds stay below 1e11 until the year 5138; a larger value is almost always
# epoch milliseconds, which would silently turn minutes into decades.
_MAX_EPOCH = 10**11
_INTEGER = re.compile(r"[+-]?[0-9]+")

_START_TIME = 1_700_000_000
_INTERVAL = 60
_START_PRICE = 100.0
_DRIFT = 0.0001
_VOLATILITY = 0.01
_LOG_VOLUME_MEAN = math.log(1e6)
_LOG_VOLUME_SIGMA = 0.5

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class MarketDataError(ValueError):
    """Market data is unreadable or invalid; the message names the file, line and expectation."""


class Bars(NamedTuple):
    """N bars: int64 epoch-second timestamps and float64 prices and volume, all of length N."""

    timestamp: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray


def synthetic_bars(n: int, seed: int = 0) -> Bars:
    """N one-minute bars of a geometric random walk; the same SEED gives the same bars.

    Each open gaps slightly from the previous close; wicks stretch high above and low
    below the body by a multiplicative factor >= 1, so the OHLC envelope always holds.
    """
    if n < 1:
        raise ValueError(f"synthetic_bars needs n >= 1, got {n}")
    rng = np.random.default_rng(seed)
    close = _START_PRICE * np.exp(np.cumsum(rng.normal(_DRIFT, _VOLATILITY, n)))
    previous = np.concatenate(([_START_PRICE], close[:-1]))
    open_ = previous * np.exp(rng.normal(0.0, _VOLATILITY / 4, n))
    wick_up = np.exp(np.abs(rng.normal(0.0, _VOLATILITY / 2, n)))
    wick_down = np.exp(np.abs(rng.normal(0.0, _VOLATILITY / 2, n)))
    return Bars(
        timestamp=_START_TIME + _INTERVAL * np.arange(n, dtype=np.int64),
        open=open_,
        high=np.maximum(open_, close) * wick_up,
        low=np.minimum(open_, close) / wick_down,
        close=close,
        volume=rng.lognormal(_LOG_VOLUME_MEAN, _LOG_VOLUME_SIGMA, n),
    )


def load_csv(path: Path | str, min_rows: int = MIN_ROWS) -> Bars:
    """Bars read from PATH (header timestamp,open,high,low,close,volume in any case/order).

    Timestamps are epoch seconds (all digits) or ISO 8601 (naive means UTC). Raises
    MarketDataError on anything unreadable, malformed, inconsistent or too short.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines, rows, last_line = _read_rows(handle, path)
    except (OSError, UnicodeDecodeError) as exc:
        raise MarketDataError(f"{path}: cannot read OHLCV CSV: {exc}") from exc
    if len(rows) < min_rows:
        raise MarketDataError(f"{path}, line {last_line}: expected at least {min_rows} "
                              f"data rows, found {len(rows)}")
    bars = _bars_from_rows(rows)
    violation = first_violation(bars)
    if violation is not None:
        row, message = violation
        raise MarketDataError(f"{path}, line {lines[row]}: {message}")
    return bars


Row = tuple[int, float, float, float, float, float]


def _read_rows(handle: TextIO, path: Path) -> tuple[list[int], list[Row], int]:
    """(line number of each row, the parsed rows, the last line number) of HANDLE."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise MarketDataError(f"{path}, line 1: expected a header {','.join(COLUMNS)}, "
                              "found an empty file")
    indexes = _column_indexes(header, path)
    lines: list[int] = []
    rows: list[Row] = []
    try:
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue  # blank lines, e.g. a trailing newline
            try:
                rows.append(_parse_row(fields, indexes, len(header)))
            except ValueError as exc:
                raise MarketDataError(f"{path}, line {reader.line_num}: {exc}") from None
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise MarketDataError(f"{path}, line {reader.line_num}: malformed CSV: {exc}") from exc
    return lines, rows, reader.line_num


def _column_indexes(header: list[str], path: Path) -> tuple[int, ...]:
    """The position of each of COLUMNS in HEADER (case-insensitive; extra columns ignored)."""
    names = [name.strip().lower() for name in header]
    missing = [column for column in COLUMNS if column not in names]
    if missing:
        raise MarketDataError(
            f"{path}, line 1: missing column {', '.join(map(repr, missing))}: expected a "
            f"header with {','.join(COLUMNS)}, found {','.join(header)}")
    for column in COLUMNS:
        if names.count(column) > 1:
            raise MarketDataError(f"{path}, line 1: column {column!r} appears "
                                  f"{names.count(column)} times: expected it once")
    return tuple(names.index(column) for column in COLUMNS)


def _parse_row(fields: list[str], indexes: tuple[int, ...], width: int) -> Row:
    """One data row as (timestamp, open, high, low, close, volume); ValueError says why not."""
    if len(fields) != width:
        raise ValueError(f"expected {width} fields (as in the header), found {len(fields)}")
    timestamp = _parse_timestamp(fields[indexes[0]])
    open_, high, low, close, volume = (
        _parse_number(fields[index], column)
        for index, column in zip(indexes[1:], COLUMNS[1:], strict=True))
    return timestamp, open_, high, low, close, volume


def _parse_timestamp(raw: str) -> int:
    """Epoch seconds from all-digit RAW, else from an ISO 8601 date-time (naive means UTC)."""
    text = raw.strip()
    if _INTEGER.fullmatch(text):
        value = int(text)
        if abs(value) >= _MAX_EPOCH:
            raise ValueError(f"column 'timestamp': expected epoch seconds, got {raw!r} "
                             "(epoch milliseconds? divide by 1000)")
        return value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"column 'timestamp': expected epoch seconds or an ISO 8601 "
                         f"date-time, got {raw!r}") from None
    if moment.microsecond:
        raise ValueError(f"column 'timestamp': expected whole seconds, got {raw!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _parse_number(raw: str, column: str) -> float:
    """RAW as a finite float; ValueError names COLUMN otherwise."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"column {column!r}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"column {column!r}: expected a finite number, got {raw!r}")
    return value


def _bars_from_rows(rows: list[Row]) -> Bars:
    if not rows:
        empty = np.zeros(0)
        return Bars(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    columns = list(zip(*rows, strict=True))
    prices = [np.asarray(column, dtype=np.float64) for column in columns[1:]]
    return Bars(np.asarray(columns[0], dtype=np.int64), *prices)


def _rules(bars: Bars) -> list[tuple[BoolArray, Callable[[int], str]]]:
    """Each invariant of valid bars: (rows that break it, what was expected at row i)."""
    prices = np.stack([bars.open, bars.high, bars.low, bars.close])
    later = np.concatenate(([True], np.diff(bars.timestamp) > 0))
    return [
        (prices.min(axis=0) <= 0, lambda i: "open, high, low and close > 0"),
        (bars.volume < 0, lambda i: "volume >= 0"),
        (bars.high < bars.low, lambda i: "high >= low"),
        (bars.high < np.maximum(bars.open, bars.close), lambda i: "high >= open and close"),
        (bars.low > np.minimum(bars.open, bars.close), lambda i: "low <= open and close"),
        (~later, lambda i: f"a timestamp after the previous row's {bars.timestamp[i - 1]}"),
    ]


def first_violation(bars: Bars) -> tuple[int, str] | None:
    """(row, message) of the earliest row of BARS breaking an invariant, or None if valid."""
    lengths = {len(column) for column in bars}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name}={len(col)}" for name, col in zip(COLUMNS, bars, strict=True))
        return 0, f"expected columns of equal length, got {sizes}"
    broken = [(int(np.argmax(mask)), expected) for mask, expected in _rules(bars) if mask.any()]
    if not broken:
        return None
    row, expected = min(broken, key=lambda item: item[0])
    return row, f"expected {expected(row)}, got {_describe(bars, row)}"


def _describe(bars: Bars, row: int) -> str:
    moment = datetime.fromtimestamp(int(bars.timestamp[row]), UTC).isoformat()
    values = ", ".join(f"{name}={float(bars[i + 1][row])!r}"
                       for i, name in enumerate(COLUMNS[1:]))
    return f"timestamp={int(bars.timestamp[row])} ({moment}), {values}"


def write_csv(bars: Bars, path: Path | str) -> None:
    """Write BARS to PATH atomically (temp file + os.replace) in the format load_csv reads.

    Refuses bars that load_csv would reject, so a written file always loads again.
    """
    path = Path(path)
    violation = first_violation(bars)
    if violation is not None:
        row, message = violation
        raise MarketDataError(f"{path}, row {row}: {message}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(_csv_rows(bars))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; market data is not secret
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _csv_rows(bars: Bars) -> Iterator[list[str]]:
    # repr of a Python float is the shortest text that parses back to the same float64.
    columns = [column.tolist() for column in bars]
    for timestamp, *values in zip(*columns, strict=True):
        yield [str(timestamp), *(repr(value) for value in values)]
