"""features: each feature against a plain-Python reference, the blocked closed-form EMA
against the recurrence, shapes and alignment of X and y, scale invariance, and proof
that the array module passed as `xp` is the only one used."""

from __future__ import annotations

import inspect
import math
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from unistack.ml import features
from unistack.ml.features import (
    FEATURE_NAMES,
    FIRST_VALID,
    compute_features,
    ema,
    feature_columns,
    features_and_labels,
    label_next_return_up,
    log_return,
    macd,
    rolling_volatility,
    rolling_zscore,
    rsi,
)
from unistack.ml.market import MIN_ROWS, Bars, synthetic_bars

NAN = math.nan
TIGHT = {"rtol": 1e-10, "atol": 1e-12, "equal_nan": True}


# -- plain-Python references: one loop per definition, no numpy


def ref_log_return(close: list[float], periods: int) -> list[float]:
    return [math.log(close[t] / close[t - periods]) if t >= periods else NAN
            for t in range(len(close))]


def ref_mean_pstd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def ref_volatility(close: list[float], window: int) -> list[float]:
    out = []
    for t in range(len(close)):
        if t < window:
            out.append(NAN)
            continue
        returns = [math.log(close[k] / close[k - 1]) for k in range(t - window + 1, t + 1)]
        out.append(ref_mean_pstd(returns)[1])
    return out


def ref_rsi(close: list[float], window: int) -> list[float]:
    out = []
    for t in range(len(close)):
        if t < window:
            out.append(NAN)
            continue
        changes = [close[k] - close[k - 1] for k in range(t - window + 1, t + 1)]
        gains = sum(c for c in changes if c > 0)
        losses = sum(-c for c in changes if c < 0)
        out.append(100 * gains / (gains + losses) if gains + losses else 50.0)
    return out


def ref_ema(values: list[float], span: float) -> list[float]:
    alpha = 2 / (span + 1)
    out = [values[0]]
    for value in values[1:]:
        out.append((1 - alpha) * out[-1] + alpha * value)
    return out


def ref_macd(close: list[float]) -> tuple[list[float], list[float]]:
    fast, slow = ref_ema(close, 12), ref_ema(close, 26)
    line = [(f - s) / c for f, s, c in zip(fast, slow, close, strict=True)]
    signal = ref_ema(line, 9)
    return ([v if t >= 25 else NAN for t, v in enumerate(line)],
            [v if t >= 33 else NAN for t, v in enumerate(signal)])


def ref_zscore(values: list[float], window: int) -> list[float]:
    out = []
    for t in range(len(values)):
        if t < window - 1:
            out.append(NAN)
            continue
        mean, std = ref_mean_pstd(values[t - window + 1:t + 1])
        out.append((values[t] - mean) / std if std > 0 else 0.0)
    return out


@pytest.fixture
def bars() -> Bars:
    return synthetic_bars(90, seed=11)


# -- each feature against its reference


@pytest.mark.parametrize("periods", [1, 5, 20])
def test_log_return_matches_reference(bars: Bars, periods: int) -> None:
    expected = ref_log_return(bars.close.tolist(), periods)
    np.testing.assert_allclose(log_return(bars.close, periods), expected, **TIGHT)


def test_log_return_of_a_series_shorter_than_the_period_is_all_nan() -> None:
    assert np.isnan(log_return([1.0, 2.0, 3.0], 5)).all()


def test_rolling_volatility_matches_reference(bars: Bars) -> None:
    expected = ref_volatility(bars.close.tolist(), 20)
    np.testing.assert_allclose(rolling_volatility(bars.close, 20), expected, **TIGHT)


def test_rsi_matches_the_simple_moving_average_reference(bars: Bars) -> None:
    expected = ref_rsi(bars.close.tolist(), 14)
    np.testing.assert_allclose(rsi(bars.close, 14), expected, **TIGHT)


def test_rsi_is_100_when_prices_only_rise_and_50_when_flat() -> None:
    assert rsi(np.arange(1.0, 31.0))[14:].tolist() == [100.0] * 16
    assert rsi(np.full(30, 7.0))[14:].tolist() == [50.0] * 16


@pytest.mark.parametrize("span", [1, 2, 9, 12, 26, 200])
def test_ema_matches_the_recurrence(bars: Bars, span: int) -> None:
    np.testing.assert_allclose(ema(bars.close, span), ref_ema(bars.close.tolist(), span),
                               **TIGHT)


def test_macd_and_signal_match_reference(bars: Bars) -> None:
    expected_line, expected_signal = ref_macd(bars.close.tolist())
    line, signal = macd(bars.close)
    np.testing.assert_allclose(line, expected_line, **TIGHT)
    np.testing.assert_allclose(signal, expected_signal, **TIGHT)


def test_volume_zscore_matches_reference(bars: Bars) -> None:
    expected = ref_zscore(bars.volume.tolist(), 20)
    np.testing.assert_allclose(rolling_zscore(bars.volume, 20), expected, **TIGHT)


def test_zscore_of_a_flat_window_is_zero_not_noise() -> None:
    volume = np.concatenate([np.full(30, 1234.567), np.linspace(1, 2, 10)])
    score = rolling_zscore(volume, 20)
    assert score[19:30].tolist() == [0.0] * 11
    assert np.isfinite(score[19:]).all()


# -- the blocked closed-form EMA


@pytest.mark.parametrize("span", [9, 12, 26, 200])
def test_blocked_ema_matches_the_recurrence_on_100k_bars(span: int) -> None:
    close = synthetic_bars(100_000, seed=2).close
    assert features._ema_block_length(1 - 2 / (span + 1)) < 100_000  # it really blocks
    np.testing.assert_allclose(ema(close, span), ref_ema(close.tolist(), span),
                               rtol=1e-10, atol=0)


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_ema_gives_the_same_result_for_any_block_length(block: int) -> None:
    close = synthetic_bars(5000, seed=4).close
    np.testing.assert_allclose(ema(close, 26, block=block), ema(close, 26), rtol=1e-12)


def test_one_closed_form_block_over_a_long_series_would_overflow() -> None:
    close = synthetic_bars(100_000, seed=2).close
    with np.errstate(all="ignore"):
        assert not np.isfinite(ema(close, 26, block=100_000)).all()


def test_ema_refuses_a_span_below_one_and_an_empty_block() -> None:
    with pytest.raises(ValueError, match="span"):
        ema([1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="block"):
        ema([1.0, 2.0], 5, block=0)


def test_ema_of_an_empty_series_is_empty() -> None:
    assert ema(np.zeros(0), 12).shape == (0,)


# -- the feature matrix, labels and their alignment


def test_feature_columns_are_named_by_feature_names(bars: Bars) -> None:
    assert tuple(feature_columns(bars.close, bars.volume)) == FEATURE_NAMES


def test_first_valid_is_the_first_row_where_every_feature_is_defined(bars: Bars) -> None:
    columns = feature_columns(bars.close, bars.volume)
    matrix = np.stack([columns[name] for name in FEATURE_NAMES], axis=1)
    assert np.isnan(matrix[FIRST_VALID - 1]).any()
    assert np.isfinite(matrix[FIRST_VALID:]).all()
    assert FIRST_VALID == 33


def test_compute_features_shape_dtype_and_rows(bars: Bars) -> None:
    matrix, first = compute_features(bars)
    assert first == FIRST_VALID
    assert matrix.shape == (len(bars.close) - FIRST_VALID, len(FEATURE_NAMES))
    assert matrix.dtype == np.float32
    columns = feature_columns(bars.close, bars.volume)
    for j, name in enumerate(FEATURE_NAMES):
        assert np.array_equal(matrix[:, j], columns[name][first:].astype(np.float32)), name


@pytest.mark.parametrize("seed", range(5))
def test_compute_features_has_no_nan_or_inf(seed: int) -> None:
    matrix, _ = compute_features(synthetic_bars(100_000, seed=seed))
    assert np.isfinite(matrix).all()


def test_flat_market_has_finite_features() -> None:
    flat = Bars(np.arange(60), *(np.full(60, 10.0) for _ in range(5)))
    matrix, _ = compute_features(flat)
    assert np.isfinite(matrix).all()
    rsi_column = FEATURE_NAMES.index("rsi_14")
    assert set(matrix[:, rsi_column].tolist()) == {50.0}


def test_labels_say_whether_the_next_bar_closes_higher() -> None:
    labels = label_next_return_up([1.0, 2.0, 2.0, 1.5, 3.0])
    assert labels.tolist() == [1, 0, 0, 1]
    assert labels.dtype == np.int32


def test_features_and_labels_are_aligned_row_for_row(bars: Bars) -> None:
    x, y = features_and_labels(bars)
    full, first = compute_features(bars)
    n = len(bars.close)
    assert x.shape == (n - first - 1, len(FEATURE_NAMES))
    assert y.shape == (n - first - 1,)
    assert np.array_equal(x, full[:-1])
    close = bars.close
    assert y.tolist() == [int(close[first + i + 1] > close[first + i]) for i in range(len(y))]


def test_too_few_bars_raise_value_error_naming_the_minimum() -> None:
    with pytest.raises(ValueError, match="more than 33 bars, got 33"):
        compute_features(synthetic_bars(FIRST_VALID))
    with pytest.raises(ValueError, match="more than 34 bars, got 34"):
        features_and_labels(synthetic_bars(FIRST_VALID + 1))
    x, y = features_and_labels(synthetic_bars(FIRST_VALID + 2))
    assert x.shape == (1, len(FEATURE_NAMES))
    assert y.shape == (1,)


def test_market_min_rows_leaves_room_for_features_and_labels() -> None:
    assert MIN_ROWS >= FIRST_VALID + 2


# -- scale invariance: every feature is scale-free (MACD is divided by close)


def scaled(bars: Bars, price: float = 1.0, volume: float = 1.0) -> Bars:
    return bars._replace(open=bars.open * price, high=bars.high * price,
                         low=bars.low * price, close=bars.close * price,
                         volume=bars.volume * volume)


@pytest.mark.parametrize(("price", "volume"), [(37.5, 1.0), (1e-3, 1.0), (1.0, 250.0)])
def test_features_are_invariant_to_scaling_prices_and_volume(
        price: float, volume: float) -> None:
    bars = synthetic_bars(3000, seed=9)
    base = feature_columns(bars.close, bars.volume)
    other = scaled(bars, price, volume)
    moved = feature_columns(other.close, other.volume)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(moved[name], base[name], rtol=1e-8, atol=1e-10,
                                   equal_nan=True, err_msg=name)
    np.testing.assert_allclose(compute_features(other)[0], compute_features(bars)[0],
                               rtol=1e-5, atol=1e-6)


# -- xp is honoured: a counting stand-in for numpy, and numpy itself made unusable


class CountingNumpy(types.ModuleType):
    """numpy, with every function call counted by name."""

    def __init__(self) -> None:
        super().__init__("counting_numpy")
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr  # constants and dtypes (xp.nan, xp.float64) pass through

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


class NoNumpy:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"features used numpy.{name} instead of xp.{name}")


def forbid_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make numpy unusable inside features: the module's `np` and every `xp=np` default."""
    forbidden = NoNumpy()
    monkeypatch.setattr(features, "np", forbidden)
    for function in vars(features).values():
        if inspect.isfunction(function) and function.__module__ == features.__name__:
            defaults = function.__defaults__ or ()
            replaced = tuple(forbidden if d is np else d for d in defaults)
            monkeypatch.setattr(function, "__defaults__", replaced or None)


@pytest.mark.parametrize("entry", [
    features_and_labels,
    lambda bars, xp: tuple(feature_columns(bars.close, bars.volume, xp).values()),
])
def test_xp_is_the_only_array_module_used(
        monkeypatch: pytest.MonkeyPatch, entry: Callable[[Bars, Any], tuple[Any, ...]]) -> None:
    bars = synthetic_bars(5000, seed=6)
    expected = entry(bars, np)
    shim = CountingNumpy()
    forbid_numpy(monkeypatch)
    actual = entry(bars, shim)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert {"asarray", "log", "cumsum", "power", "concatenate", "where", "mean",
            "sqrt"} <= set(shim.calls)


def test_forbid_numpy_catches_a_forgotten_xp(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_numpy(monkeypatch)
    with pytest.raises(AssertionError, match="instead of xp"):
        log_return([1.0, 2.0, 3.0])
