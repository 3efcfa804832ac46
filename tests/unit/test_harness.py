"""The pure parts of the harness the benchmarks share: their figures (percentiles, trial
summaries, cells), their tables, their trial loop and commands, waiting and watching, and
the readings they take apart (a Prometheus page, a cProfile)."""

from __future__ import annotations

import argparse
import cProfile
import statistics
import subprocess
import sys
import threading
import time

import pytest

from harness.fetch import metric_samples
from harness.figures import (
    figure_cell,
    median_range,
    percentile,
    ratio_text,
    spread,
    trial_figures,
)
from harness.profiles import entries, own_times, seconds_in, where
from harness.runs import BenchmarkError, benchmark_main, check_exit, run_trials, timed_run
from harness.tables import markdown_table, spread_summary, spread_table
from harness.waiting import WaitTimeout, Watch, poll, wait_for

# --- figures --------------------------------------------------------------------------


def test_percentile_interpolates_between_order_statistics_as_numpy_does() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # 1 .. 10, unsorted
    # numpy.percentile(values, 95): position 0.95 * 9 = 8.55 → 9 + 0.55 * (10 - 9)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 50) == pytest.approx(statistics.median(values))
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([0.25], 95) == 0.25


def test_median_range_and_spread() -> None:
    assert median_range([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "spread": 2.0}


def test_trial_figures_count_the_missing_and_summarize_the_rest() -> None:
    summary = trial_figures([0.5, None, 1.5, 1.0, None])
    assert summary == {"n": 5, "missing": 2, "p50": 1.0, "p95": pytest.approx(1.45),
                       "min": 0.5, "max": 1.5}


def test_trial_figures_of_trials_that_saw_nothing_are_none() -> None:
    assert trial_figures(iter([None, None])) == {"n": 2, "missing": 2, "p50": None,
                                                 "p95": None, "min": None, "max": None}
    assert trial_figures([])["n"] == 0


def test_a_figure_cell_says_none_and_no_trials_apart() -> None:
    assert figure_cell(1.23456) == "1.235"
    assert figure_cell(1.23456, unit=" s") == "1.235 s"
    assert figure_cell(None, n=3) == "-"
    assert figure_cell(None, n=3, empty="never") == "never"
    assert figure_cell(None, n=0, empty="never") == "n/a"
    assert ratio_text(0.456) == "0.46"
    assert ratio_text(None) == "-"


# --- tables ---------------------------------------------------------------------------


def test_markdown_table_aligns_each_column_as_told() -> None:
    assert markdown_table(("Measure", "n", "Value"), "lrr", [("a", 1, "0.500"), ["b", 2, "-"]]) \
        == ["| Measure | n | Value |", "|---|---:|---:|", "| a | 1 | 0.500 |", "| b | 2 | - |"]
    assert markdown_table(("Own", "Function"), "rl", []) == ["| Own | Function |",
                                                             "|---:|---|"]
    with pytest.raises(ValueError, match="2 columns, 3 alignments"):
        markdown_table(("a", "b"), "lrr", [])


def test_spread_summary_takes_ratios_against_a_measure_or_a_given_base() -> None:
    measures = (("ours", "unistack", "base"), ("base", "baseline", None),
                ("stop", "stop", "budget"))
    summary = spread_summary(measures, {"ours": [1.0, 3.0, 2.0], "base": [4.0, 4.0],
                                        "stop": [5.0]}, {"budget": 10.0})
    assert summary["ours"] == {"label": "unistack", "median": 2.0, "min": 1.0, "max": 3.0,
                               "spread": 2.0, "ratio": 0.5}
    assert summary["base"]["ratio"] is None
    assert summary["stop"]["ratio"] == 0.5
    assert spread_table(summary)[2:] == [
        "| unistack | 2.000 | 1.000 | 3.000 | 2.000 | 0.50 |",
        "| baseline | 4.000 | 4.000 | 4.000 | 0.000 | - |",
        "| stop | 5.000 | 5.000 | 5.000 | 0.000 | 0.50 |"]


# --- runs -----------------------------------------------------------------------------


def test_run_trials_appends_tells_and_checks_each_trial(capsys: pytest.CaptureFixture[str],
                                                        ) -> None:
    results = iter([0.25, 0.5])
    samples: list[float] = []
    checked: list[float] = []
    run_trials(2, lambda: next(results), samples, "unistack redis kill",
               lambda value: f"{value:.2f} s", check=checked.append)
    assert samples == checked == [0.25, 0.5]
    assert capsys.readouterr().err.splitlines() == ["  unistack redis kill 1/2: 0.25 s",
                                                    "  unistack redis kill 2/2: 0.50 s"]


def test_timed_run_times_a_command_and_names_a_failure() -> None:
    assert timed_run([sys.executable, "-c", "pass"]) > 0
    assert timed_run([sys.executable, "-c", "raise SystemExit(3)"], ok=(0, 3)) > 0
    with pytest.raises(BenchmarkError, match=r"exited 1: boom$"):
        timed_run([sys.executable, "-c", "import sys; sys.exit('boom')"])


def test_check_exit_reaps_a_popen_and_reports_its_stdout_without_stderr() -> None:
    child = subprocess.Popen([sys.executable, "-c", "print('no'); raise SystemExit(4)"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(BenchmarkError, match=r"^child exited 4: no$"):
        check_exit("child", child)


def test_benchmark_main_prints_text_as_it_is_and_anything_else_as_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    def report(args: argparse.Namespace) -> object:
        return {"json": args.json} if args.json else "a table"

    assert benchmark_main("demo", argparse.ArgumentParser(), report, []) == 0
    assert capsys.readouterr().out == "a table\n"
    assert benchmark_main("demo", argparse.ArgumentParser(), report, ["--json"]) == 0
    assert capsys.readouterr().out == '{\n  "json": true\n}\n'

    def broken(args: argparse.Namespace) -> object:
        raise BenchmarkError("nothing to measure")

    assert benchmark_main("demo", argparse.ArgumentParser(), broken, []) == 1
    assert capsys.readouterr().err == "demo benchmark: nothing to measure\n"


# --- waiting and watching ---------------------------------------------------------------


def test_poll_returns_the_value_or_none_and_wait_for_raises() -> None:
    calls = iter([0, 0, 7])
    assert poll(lambda: next(calls), 5.0, 0.0) == 7
    assert poll(lambda: None, 0.01, 0.001) is None
    with pytest.raises(WaitTimeout, match=r"nothing did not happen within 0\.01 s"):
        wait_for(lambda: False, 0.01, 0.001, "nothing")


def test_a_watch_notes_when_its_condition_first_held() -> None:
    flag = threading.Event()
    start = time.perf_counter()
    watch = Watch(flag.is_set, 0.001)
    time.sleep(0.02)
    flag.set()
    seen = wait_for(lambda: watch.at, 5.0, 0.001, "the watch")
    assert seen - start >= 0.02
    assert watch.since(start) == pytest.approx(seen - start)


def test_a_watch_that_saw_nothing_says_none() -> None:
    assert Watch(lambda: False, 0.001, limit=0.01).since(0.0) is None
    assert Watch(lambda: False, 0.001, clock=time.monotonic).since(0.0) is None


# --- readings ---------------------------------------------------------------------------


def test_metric_samples_key_every_sample_by_name_and_sorted_labels() -> None:
    text = ('# TYPE ml_engine_requests counter\n'
            'ml_engine_requests_total{outcome="ok",model="m"} 3.0\n'
            '# TYPE ml_engine_batches_total counter\nml_engine_batches_total 2.0\n')
    samples = metric_samples(text)
    assert samples[("ml_engine_requests_total", (("model", "m"), ("outcome", "ok")))] == 3.0
    assert samples[("ml_engine_batches_total", ())] == 2.0


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_profile_seconds_by_function_and_own_times() -> None:
    profiler = cProfile.Profile()
    profiler.runcall(_busy, 200_000)
    stats = entries(profiler)
    cumulative = seconds_in(stats, "test_harness.py", "_busy")
    assert 0 < seconds_in(stats, "test_harness.py", "_busy", own=True) <= cumulative
    assert seconds_in(stats, "test_harness.py", "no_such_function") == 0
    top = own_times(stats)
    assert [seconds for seconds, _ in top] == sorted((s for s, _ in top), reverse=True)
    assert any(name.startswith("unit/test_harness.py:") for _, name in top)


def test_where_names_a_file_by_its_last_two_parts_and_a_builtin_by_its_name() -> None:
    assert where("/x/y/unistack/ml/engine.py", 12, "step") == "ml/engine.py:12 step"
    assert where("~", 0, "<built-in method time.sleep>") == "<built-in method time.sleep>"
