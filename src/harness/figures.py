"""The figures of a benchmark: percentiles, median and range, spread, the summary of a
series of trials, the machine's cores and load; and how a figure or a ratio reads in a
report."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import psutil


def percentile(values: Sequence[float], percent: int) -> float:
    """The PERCENT-th percentile of VALUES, which must not be empty: linear interpolation
    between order statistics, numpy's default (with 10 values, p95 lies between the 9th
    and the 10th)."""
    if len(values) == 1:
        return values[0]
    step = math.gcd(percent, 100)  # the fewest quantiles with that cut point: p95 of 20
    return statistics.quantiles(values, n=100 // step, method="inclusive")[percent // step - 1]


def median_range(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of VALUES, which must not be empty."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread(values: Sequence[float]) -> dict[str, float]:
    """median_range() of VALUES and their spread (max - min)."""
    figures = median_range(values)
    return figures | {"spread": figures["max"] - figures["min"]}


def trial_figures(values: Iterable[float | None]) -> dict[str, Any]:
    """The summary of one figure of a series of trials, VALUES (None where a trial saw
    nothing): n, how many are missing, and p50, p95, min and max of the others (each None
    when no value is left)."""
    every = list(values)
    found = [value for value in every if value is not None]
    if not found:
        return {"n": len(every), "missing": len(every), "p50": None, "p95": None,
                "min": None, "max": None}
    return {"n": len(every), "missing": len(every) - len(found),
            "p50": statistics.median(found), "p95": percentile(found, 95), "min": min(found),
            "max": max(found)}


def figure_cell(value: float | None, n: int = 1, empty: str = "-", unit: str = "") -> str:
    """A figure in seconds with three decimals, then UNIT; EMPTY when there is none, or
    "n/a" when there was nothing to measure (N, the trials, is 0)."""
    return f"{value:.3f}{unit}" if value is not None else (empty if n else "n/a")


def ratio_text(ratio: float | None) -> str:
    """A ratio with two decimals, or "-" when there is none (a baseline row)."""
    return f"{ratio:.2f}" if ratio is not None else "-"


def machine_figures(load_before: float) -> dict[str, Any]:
    """The machine's cores, and its 1-minute load average LOAD_BEFORE (read at the start)
    and now: the arguments of harness.tables.machine_line()."""
    return {"cores": psutil.cpu_count(), "load_before": load_before,
            "load_after": os.getloadavg()[0]}
