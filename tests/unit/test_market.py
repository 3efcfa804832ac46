"""market: synthetic bars are deterministic and valid; CSVs round-trip and every bad
input names the file, the line and what was expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unistack.ml.market import (
    COLUMNS,
    Bars,
    MarketDataError,
    first_violation,
    load_csv,
    synthetic_bars,
    write_csv,
)

HEADER = "timestamp,open,high,low,close,volume"
ROWS = 8  # data rows in a good file: lines 2..9


def good_lines(rows: int = ROWS) -> list[str]:
    body = [f"{1_700_000_000 + 60 * i},100,101,99,100.5,1000" for i in range(rows)]
    return [HEADER, *body]


def write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def with_line(line_number: int, text: str) -> list[str]:
    """The good file with LINE_NUMBER (1 is the header) replaced by TEXT."""
    lines = good_lines()
    lines[line_number - 1] = text
    return lines


def assert_bars_equal(left: Bars, right: Bars) -> None:
    for name, a, b in zip(COLUMNS, left, right, strict=True):
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name


# -- synthetic bars


def test_synthetic_bars_are_deterministic_for_a_seed() -> None:
    assert_bars_equal(synthetic_bars(500, seed=7), synthetic_bars(500, seed=7))
    assert not np.array_equal(synthetic_bars(500, seed=7).close,
                              synthetic_bars(500, seed=8).close)


def test_synthetic_bars_have_the_declared_dtypes_and_lengths() -> None:
    bars = synthetic_bars(300)
    assert bars.timestamp.dtype == np.int64
    for column in bars[1:]:
        assert column.dtype == np.float64
    assert {len(column) for column in bars} == {300}


def test_synthetic_bars_keep_the_ohlc_invariants() -> None:
    bars = synthetic_bars(20_000, seed=3)
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.low > 0)
    assert np.all(bars.volume > 0)
    assert np.all(np.diff(bars.timestamp) > 0)
    assert first_violation(bars) is None


def test_synthetic_bars_look_like_a_market() -> None:
    bars = synthetic_bars(20_000, seed=1)
    returns = np.diff(np.log(bars.close))
    assert 0.005 < returns.std() < 0.02
    log_volume = np.log(bars.volume)  # lognormal volume: its log is symmetric
    skew = np.mean((log_volume - log_volume.mean()) ** 3) / log_volume.std() ** 3
    assert abs(skew) < 0.1


def test_synthetic_bars_refuse_an_empty_series() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        synthetic_bars(0)


# -- CSV round trip


def test_write_then_load_returns_the_same_bars(tmp_path: Path) -> None:
    bars = synthetic_bars(1000, seed=5)
    path = tmp_path / "market" / "SYN.csv"
    write_csv(bars, path)
    assert_bars_equal(load_csv(path), bars)
    assert sorted(p.name for p in path.parent.iterdir()) == ["SYN.csv"]  # no temp left


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    write_csv(synthetic_bars(100, seed=1), path)
    write_csv(synthetic_bars(200, seed=2), path)
    assert_bars_equal(load_csv(path), synthetic_bars(200, seed=2))


def test_write_refuses_bars_that_would_not_load_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    write_csv(synthetic_bars(100), path)
    before = path.read_bytes()
    broken = synthetic_bars(100)
    broken.volume[42] = -1.0
    with pytest.raises(MarketDataError, match=r"bars\.csv, row 42: expected volume >= 0"):
        write_csv(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv"]


def test_write_refuses_columns_of_unequal_length(tmp_path: Path) -> None:
    bars = synthetic_bars(10)._replace(volume=np.ones(9))
    with pytest.raises(MarketDataError, match="equal length"):
        write_csv(bars, tmp_path / "bars.csv")


def test_load_accepts_any_case_column_order_extra_columns_and_blank_lines(
        tmp_path: Path) -> None:
    lines = ["Volume, CLOSE ,Low,High,Open,Symbol,TimeStamp"]
    lines += [f"{1000 + i},{100.5 + i},99,{102 + i},100,XYZ,{1_700_000_000 + 60 * i}"
              for i in range(3)]
    path = write_lines(tmp_path, [*lines, "", ""])
    bars = load_csv(path, min_rows=3)
    assert bars.timestamp.tolist() == [1_700_000_000, 1_700_000_060, 1_700_000_120]
    assert bars.close.tolist() == [100.5, 101.5, 102.5]
    assert bars.volume.tolist() == [1000.0, 1001.0, 1002.0]


def test_load_reads_iso_8601_timestamps_naive_as_utc(tmp_path: Path) -> None:
    stamps = ["2024-01-02T00:00:00Z", "2024-01-02 00:01:00", "2024-01-02T02:02:00+02:00"]
    body = [f"{stamp},100,101,99,100.5,1000" for stamp in stamps]
    bars = load_csv(write_lines(tmp_path, [HEADER, *body]), min_rows=3)
    assert bars.timestamp.tolist() == [1_704_153_600, 1_704_153_660, 1_704_153_720]


def test_load_skips_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(("\ufeff" + "\n".join(good_lines()) + "\n").encode())
    assert len(load_csv(path, min_rows=ROWS).close) == ROWS


# -- every bad input names the file, the line and what was expected

BAD_CASES = {
    "missing column": (["timestamp,open,high,low,close", "1,1,1,1,1"], 1,
                       "missing column 'volume'"),
    "duplicate column": ([HEADER + ",close", "1,1,1,1,1,1,1"], 1, "'close' appears 2 times"),
    "too few fields": (with_line(4, "1700000120,100,101,99,100.5"), 4, "expected 6 fields"),
    "too many fields": (with_line(4, "1700000120,100,101,99,100.5,1,2"), 4,
                        "expected 6 fields"),
    "non-numeric price": (with_line(5, "1700000180,abc,101,99,100.5,1000"), 5,
                          "column 'open': expected a number, got 'abc'"),
    "empty value": (with_line(5, "1700000180,100,101,99,,1000"), 5,
                    "column 'close': expected a number, got ''"),
    "nan": (with_line(6, "1700000240,100,101,99,nan,1000"), 6,
            "column 'close': expected a finite number, got 'nan'"),
    "inf": (with_line(6, "1700000240,100,inf,99,100.5,1000"), 6,
            "column 'high': expected a finite number, got 'inf'"),
    "negative volume": (with_line(3, "1700000060,100,101,99,100.5,-5"), 3,
                        "expected volume >= 0"),
    "zero price": (with_line(3, "1700000060,0,101,0,100.5,5"), 3,
                   "expected open, high, low and close > 0"),
    "high below low": (with_line(7, "1700000300,100,98,99,100.5,1000"), 7,
                       "expected high >= low"),
    "high below close": (with_line(7, "1700000300,100,101,99,102,1000"), 7,
                         "expected high >= open and close"),
    "low above open": (with_line(7, "1700000300,98,101,99,100.5,1000"), 7,
                       "expected low <= open and close"),
    "repeated timestamp": (with_line(8, "1700000300,100,101,99,100.5,1000"), 8,
                           "expected a timestamp after the previous row's 1700000300"),
    "decreasing timestamp": (with_line(8, "1700000000,100,101,99,100.5,1000"), 8,
                             "expected a timestamp after the previous row's 1700000300"),
    "bad timestamp": (with_line(2, "yesterday,100,101,99,100.5,1000"), 2,
                      "expected epoch seconds or an ISO 8601 date-time, got 'yesterday'"),
    "millisecond timestamp": (with_line(2, "1700000000000,100,101,99,100.5,1000"), 2,
                              "epoch milliseconds"),
    "fractional seconds": (with_line(2, "2023-11-14T22:13:20.5,100,101,99,100.5,1000"), 2,
                           "expected whole seconds"),
    "empty file": ([], 1, "expected a header"),
    "too few rows": (good_lines(3), 4, "expected at least 5 data rows, found 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_load_rejects_bad_input_naming_file_and_line(tmp_path: Path, case: str) -> None:
    lines, line, expected = BAD_CASES[case]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(MarketDataError) as caught:
        load_csv(path, min_rows=5)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line}: "), message
    assert expected in message


def test_load_reports_the_earliest_bad_line_first(tmp_path: Path) -> None:
    lines = good_lines()
    lines[6] = "1700000300,100,98,99,100.5,1000"  # line 7: high < low
    lines[2] = "1700000060,100,101,99,100.5,-1"  # line 3: negative volume
    with pytest.raises(MarketDataError, match=r", line 3: expected volume >= 0"):
        load_csv(write_lines(tmp_path, lines), min_rows=5)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match=r"nope\.csv: cannot read"):
        load_csv(tmp_path / "nope.csv")


def test_load_names_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(MarketDataError, match=r"bars\.csv: cannot read"):
        load_csv(path)
