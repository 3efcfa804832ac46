"""Feature engineering, written once against the NumPy/CuPy array API.

Every function takes its arrays and an `xp` module (numpy by default, cupy on a GPU)
and calls only `xp.<function>` and array methods both libraries share: no numpy-only
helpers, no Python loops over rows. Per-bar feature functions return float64 arrays as
long as their input, NaN in their warm-up rows; `compute_features` stacks them and
drops the first FIRST_VALID rows, where some feature is still undefined.

Price features are scale-free (log returns, RSI, MACD divided by close), so a model
trained on one instrument's price level transfers to another's.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# Typed as NumPy; at run time these are whatever `xp` makes (numpy or cupy arrays).
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
# Inputs: anything xp.asarray takes (lists, numpy arrays, cupy arrays).
ArrayLike = Any

RETURN_PERIODS = (1, 5, 20)
VOLATILITY_WINDOW = 20
RSI_WINDOW = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
VOLUME_WINDOW = 20

FEATURE_NAMES = (
    "log_return_1",
    "log_return_5",
    "log_return_20",
    "volatility_20",
    "rsi_14",
    "macd",
    "macd_signal",
    "volume_zscore_20",
)
# The first row where every feature is defined: the MACD signal needs the slow EMA's
# warm-up (25 rows) plus its own (8 rows).
FIRST_VALID = max(
    *RETURN_PERIODS,
    VOLATILITY_WINDOW,
    RSI_WINDOW,
    MACD_SLOW - 1 + MACD_SIGNAL - 1,
    VOLUME_WINDOW - 1,
)
# decay**-block stays below this in the closed-form EMA: far from float64 overflow
# (1.8e308) even after multiplying by prices or volumes, and decay**block far from
# underflow (denormals start at 2.2e-308).
_EMA_MAX_GROWTH = 1e100
# A window whose std is below this fraction of its mean is flat: its z-score is 0, not
# rounding noise divided by rounding noise.
_FLAT = 1e-12


class PriceSeries(Protocol):
    """Anything with close and volume arrays, e.g. market.Bars."""

    @property
    def close(self) -> Any: ...

    @property
    def volume(self) -> Any: ...


def _pad_front(values: FloatArray, n: int, xp: ModuleType) -> FloatArray:
    """VALUES preceded by NaNs up to length N (the rows a window had no data for)."""
    missing = n - values.shape[0]
    padded: FloatArray = xp.concatenate([xp.full(missing, xp.nan), values])
    return padded


def _mask_front(values: FloatArray, rows: int, xp: ModuleType) -> FloatArray:
    """VALUES with its first ROWS set to NaN (warm-up rows that exist but are biased)."""
    return _pad_front(values[rows:], values.shape[0], xp)


def _windows(values: FloatArray, window: int, xp: ModuleType) -> FloatArray:
    """Rows i..i+WINDOW-1 of VALUES as a [n - window + 1, window] matrix (a gather).

    Costs n * window * 8 bytes (16 MB per 100k bars at window 20), which buys exact
    two-pass statistics per window instead of cancellation-prone cumulative sums.
    """
    starts = xp.arange(values.shape[0] - window + 1)
    matrix: FloatArray = values[starts[:, None] + xp.arange(window)[None, :]]
    return matrix


def _log_close(close: ArrayLike, xp: ModuleType) -> FloatArray:
    logs: FloatArray = xp.log(xp.asarray(close, dtype=xp.float64))
    return logs


def log_return(close: ArrayLike, periods: int = 1, xp: ModuleType = np) -> FloatArray:
    """log(close[t] / close[t - PERIODS]); NaN for t < PERIODS."""
    logs = _log_close(close, xp)
    return _pad_front(logs[periods:] - logs[:-periods], logs.shape[0], xp)


def rolling_mean_std(values: ArrayLike, window: int,
                     xp: ModuleType = np) -> tuple[FloatArray, FloatArray]:
    """Mean and population std (ddof=0) of each full WINDOW of VALUES, ending at t >= window-1."""
    matrix = _windows(xp.asarray(values, dtype=xp.float64), window, xp)
    mean: FloatArray = xp.mean(matrix, axis=1)
    std: FloatArray = xp.sqrt(xp.mean((matrix - mean[:, None]) ** 2, axis=1))
    return mean, std


def rolling_volatility(close: ArrayLike, window: int = VOLATILITY_WINDOW,
                       xp: ModuleType = np) -> FloatArray:
    """Population std of the last WINDOW one-bar log returns; NaN for t < WINDOW."""
    logs = _log_close(close, xp)
    _, std = rolling_mean_std(logs[1:] - logs[:-1], window, xp)
    return _pad_front(std, logs.shape[0], xp)


def rsi(close: ArrayLike, window: int = RSI_WINDOW, xp: ModuleType = np) -> FloatArray:
    """Cutler's RSI: 100 * gains / (gains + losses) over the last WINDOW price changes.

    Simple moving averages, not Wilder's smoothing (a recurrence with alpha = 1/window):
    the values differ, the 0-100 scale and meaning do not. 50 when prices did not move.
    """
    prices = xp.asarray(close, dtype=xp.float64)
    change = prices[1:] - prices[:-1]
    gains = xp.sum(_windows(xp.maximum(change, 0.0), window, xp), axis=1)
    losses = xp.sum(_windows(xp.maximum(-change, 0.0), window, xp), axis=1)
    total = gains + losses
    moved = total > 0
    value = xp.where(moved, 100.0 * gains / xp.where(moved, total, 1.0), 50.0)
    return _pad_front(value, prices.shape[0], xp)


def _ema_block_length(decay: float) -> int:
    """The most rows one closed-form block may span before decay**-rows passes the limit."""
    return max(1, int(math.log(_EMA_MAX_GROWTH) / -math.log(decay)))


def _ema_block(values: FloatArray, carry: FloatArray, alpha: float, decay: float,
               xp: ModuleType) -> FloatArray:
    """EMA of one block, continuing from CARRY (the EMA just before it, a 1-element array).

    y[k] = decay**(k+1) * carry + alpha * sum_{j<=k} decay**(k-j) * x[j]
         = decay**k * (decay * carry + alpha * cumsum(x / decay**j)[k])
    """
    powers = xp.power(decay, xp.arange(values.shape[0], dtype=xp.float64))
    ema_block: FloatArray = powers * (decay * carry + alpha * xp.cumsum(values / powers))
    return ema_block


def ema(values: ArrayLike, span: float, xp: ModuleType = np,
        block: int | None = None) -> FloatArray:
    """Exponential moving average, alpha = 2 / (span + 1), seeded y[0] = x[0].

    The recurrence y[t] = (1-alpha) y[t-1] + alpha x[t] (pandas `adjust=False`) in
    closed form: powers of (1-alpha) and a cumulative sum, exact in float64. The powers
    run from 1 down to (1-alpha)**(rows-1) and their inverses up, so one block over a
    long series would overflow (span 26: past ~9,000 rows) and underflow to 0/0. Rows
    are therefore taken BLOCK at a time (default: the longest block keeping
    (1-alpha)**-block below 1e100, ~3,000 rows at span 26), each carrying the last EMA
    value into the next; the Python loop runs once per block, never per row.
    """
    x = xp.asarray(values, dtype=xp.float64)
    alpha = 2.0 / (span + 1.0)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ema span must be >= 1, got {span}")
    if alpha == 1.0 or x.shape[0] == 0:
        copied: FloatArray = x.copy()
        return copied
    decay = 1.0 - alpha
    step = _ema_block_length(decay) if block is None else block
    if step < 1:
        raise ValueError(f"ema block must be >= 1 row, got {step}")
    carry = x[:1]  # y[-1] = x[0] makes y[0] = decay * x[0] + alpha * x[0] = x[0]
    parts = []
    for start in range(0, x.shape[0], step):
        parts.append(_ema_block(x[start:start + step], carry, alpha, decay, xp))
        carry = parts[-1][-1:]
    result: FloatArray = xp.concatenate(parts)
    return result


def macd(close: ArrayLike, xp: ModuleType = np, fast: int = MACD_FAST, slow: int = MACD_SLOW,
         signal: int = MACD_SIGNAL) -> tuple[FloatArray, FloatArray]:
    """(MACD, signal), both divided by close so they are fractions of price, not currency.

    MACD = (EMA fast - EMA slow) / close, NaN for t < slow - 1; signal = EMA of MACD
    over SIGNAL bars, NaN for t < slow + signal - 2 (the conventional min_periods).
    """
    prices = xp.asarray(close, dtype=xp.float64)
    line = (ema(prices, fast, xp) - ema(prices, slow, xp)) / prices
    trigger = ema(line, signal, xp)
    return _mask_front(line, slow - 1, xp), _mask_front(trigger, slow + signal - 2, xp)


def rolling_zscore(values: ArrayLike, window: int = VOLUME_WINDOW,
                   xp: ModuleType = np) -> FloatArray:
    """(x[t] - mean) / std over the last WINDOW values including t; 0 in flat windows."""
    x = xp.asarray(values, dtype=xp.float64)
    mean, std = rolling_mean_std(x, window, xp)
    latest = x[window - 1:]
    varied = std > _FLAT * xp.abs(mean)
    score = xp.where(varied, (latest - mean) / xp.where(varied, std, 1.0), 0.0)
    return _pad_front(score, x.shape[0], xp)


def feature_columns(close: ArrayLike, volume: ArrayLike,
                    xp: ModuleType = np) -> dict[str, FloatArray]:
    """Every feature of FEATURE_NAMES as a float64 array per bar, NaN in its warm-up."""
    line, trigger = macd(close, xp)
    returns = {f"log_return_{periods}": log_return(close, periods, xp)
               for periods in RETURN_PERIODS}
    return {
        **returns,
        "volatility_20": rolling_volatility(close, VOLATILITY_WINDOW, xp),
        "rsi_14": rsi(close, RSI_WINDOW, xp),
        "macd": line,
        "macd_signal": trigger,
        "volume_zscore_20": rolling_zscore(volume, VOLUME_WINDOW, xp),
    }


def feature_matrix(close: ArrayLike, volume: ArrayLike,
                   xp: ModuleType = np) -> tuple[Float32Array, int]:
    """(float32 matrix [n - FIRST_VALID, len(FEATURE_NAMES)], FIRST_VALID): row i is bar
    FIRST_VALID + i. Raises ValueError when there are not more than FIRST_VALID bars."""
    n = xp.asarray(close).shape[0]
    if n <= FIRST_VALID:
        raise ValueError(f"features need more than {FIRST_VALID} bars, got {n}")
    columns = feature_columns(close, volume, xp)
    stacked = xp.stack([columns[name][FIRST_VALID:] for name in FEATURE_NAMES], axis=1)
    matrix: Float32Array = stacked.astype(xp.float32)
    return matrix, FIRST_VALID


def compute_features(bars: PriceSeries, xp: ModuleType = np) -> tuple[Float32Array, int]:
    """feature_matrix of BARS' close and volume: (matrix, index of the bar of row 0)."""
    return feature_matrix(bars.close, bars.volume, xp)


def label_next_return_up(close: ArrayLike, xp: ModuleType = np) -> IntArray:
    """int32 labels for bars 0..n-2: 1 if the next bar closes higher, else 0.

    The last bar has no next bar, so the result is one shorter than CLOSE.
    """
    prices = xp.asarray(close, dtype=xp.float64)
    labels: IntArray = (prices[1:] > prices[:-1]).astype(xp.int32)
    return labels


def features_and_labels(bars: PriceSeries,
                        xp: ModuleType = np) -> tuple[Float32Array, IntArray]:
    """(X, y) aligned row for row: X[i] describes bar FIRST_VALID + i, y[i] says whether
    the bar after it closed higher. The last bar, which has no label, is dropped."""
    matrix, first = compute_features(bars, xp)
    if matrix.shape[0] < 2:
        raise ValueError(f"features and labels need more than {first + 1} bars, "
                         f"got {first + matrix.shape[0]}")
    labels = label_next_return_up(bars.close, xp)
    return matrix[:-1], labels[first:]
