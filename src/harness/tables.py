"""The lines of a benchmark report: Markdown tables (the spread table among them),
PASS/FAIL acceptance lines, the machine line, and the JSON of checks and trials. Its
figures come from harness.figures."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from harness.figures import ratio_text, spread


def table_row(cells: Iterable[object]) -> str:
    """One Markdown table row of CELLS, each as str() gives it."""
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(head: Sequence[str], align: str, rows: Iterable[Iterable[object]],
                   ) -> list[str]:
    """A Markdown table: the HEAD row, its rule (ALIGN has "l" or "r" for each column:
    left or right), then ROWS."""
    if len(align) != len(head):
        raise ValueError(f"{len(head)} columns, {len(align)} alignments")
    rule = "|" + "".join("---:|" if side == "r" else "---|" for side in align)
    return [table_row(head), rule, *map(table_row, rows)]


SPREAD_HEAD = ("| Measure | Median | Min | Max | Spread | Ratio |",
               "|---|---:|---:|---:|---:|---:|")


def spread_row(label: str, figures: dict[str, Any], ratio: str) -> str:
    """One row under SPREAD_HEAD: LABEL, the spread() FIGURES in seconds, RATIO as given."""
    return (f"| {label} | {figures['median']:.3f} | {figures['min']:.3f} | "
            f"{figures['max']:.3f} | {figures['spread']:.3f} | {ratio} |")


Measures = Sequence[tuple[str, str, str | None]]


def spread_summary(measures: Measures, samples: dict[str, list[float]],
                   bases: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """For each of MEASURES (key, label, what its ratio is taken against): its label, the
    spread() of its SAMPLES, and its ratio: its median over the median of the measure
    named third, or over the number of that name in BASES (None when nothing is named)."""
    summary: dict[str, dict[str, Any]] = {key: {"label": label, **spread(samples[key])}
                                          for key, label, _ in measures}
    medians = {key: row["median"] for key, row in summary.items()} | (bases or {})
    for key, _, against in measures:
        base = medians[against] if against else None
        summary[key]["ratio"] = summary[key]["median"] / base if base else None
    return summary


def spread_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """SPREAD_HEAD and a spread_row() for each row of a spread_summary()."""
    return [*SPREAD_HEAD, *(spread_row(row["label"], row, ratio_text(row["ratio"]))
                            for row in summary.values())]


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
