"""The figures and lines of a benchmark report: spread summaries, Markdown table rows,
PASS/FAIL acceptance lines, the machine line, and the JSON of checks and trials."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and spread (max - min) of VALUES, which must not be empty."""
    low, high = min(values), max(values)
    return {"median": statistics.median(values), "min": low, "max": high,
            "spread": high - low}


SPREAD_HEAD = ("| Measure | Median | Min | Max | Spread | Ratio |",
               "|---|---:|---:|---:|---:|---:|")


def ratio_text(ratio: float | None) -> str:
    """A ratio with two decimals, or "-" when there is none (a baseline row)."""
    return f"{ratio:.2f}" if ratio is not None else "-"


def spread_row(label: str, figures: dict[str, Any], ratio: str) -> str:
    """One row under SPREAD_HEAD: LABEL, the spread() FIGURES in seconds, RATIO as given."""
    return (f"| {label} | {figures['median']:.3f} | {figures['min']:.3f} | "
            f"{figures['max']:.3f} | {figures['spread']:.3f} | {ratio} |")


def verdict(passed: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if passed else "FAIL"


def acceptance_lines(issue: int | None, checks: list[tuple[bool, str]]) -> list[str]:
    """The acceptance block of a report: a heading naming ISSUE (none when None), one line
    per check, then the overall verdict."""
    lines = [f"Acceptance (issue {issue}):" if issue is not None else "Acceptance:"]
    lines += [f"- {text} → {verdict(ok)}" for ok, text in checks]
    return [*lines, f"- overall → {verdict(all(ok for ok, _ in checks))}"]


def checks_json(checks: list[tuple[bool, str]]) -> list[dict[str, Any]]:
    """Acceptance checks as JSON: {"pass": ..., "text": ...} each."""
    return [{"pass": ok, "text": text} for ok, text in checks]


def machine_line(cores: int | None, load_before: float, load_after: float) -> str:
    """The first line of a report: cores, and the 1-minute load average before and after."""
    return (f"Machine: {cores} cores, 1-minute load average {load_before:.2f} at the start, "
            f"{load_after:.2f} at the end.")


def trials_json(trials: int, poll: float, result: dict[str, Any]) -> str:
    """The JSON report of a benchmark of trials: TRIALS, POLL, its samples (lists of
    NamedTuples, as dicts), its acceptance checks, then the rest of RESULT (whose
    "samples" and "acceptance" are taken out of it)."""
    samples = {key: [trial._asdict() for trial in values]
               for key, values in result.pop("samples").items()}
    checks = checks_json(result.pop("acceptance"))
    return json.dumps({"trials": trials, "poll_seconds": poll, "samples": samples,
                       "acceptance": checks, **result}, indent=2)
