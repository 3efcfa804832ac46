"""Mutation testing with mutmut 3 (scripts/run_mutation.sh): each module is mutated and
judged by its own unit tests; one table row per module, then every mutant not killed.

mutmut reads its settings from the pyproject.toml of the directory it runs in and copies
the project into mutants/ there. So each module gets a directory of its own in the
checkout, mutants/<name>/ (git-ignored): links to the checkout's files, the checkout's
pyproject.toml plus a [tool.mutmut] table naming the module's sources and tests, and
mutmut's own mutants/ below. It is made afresh on every run: mutmut keeps a verdict
while the mutated function is unchanged, even after the tests changed.

The mutants run in a fork server that imports nothing of ours ("forkserver", warm-up
"none"), so each mutant's test run imports the mutated package anew and a function
called while a module is imported runs mutated too (configkeys builds KEYS so);
harness.mutation_plugin then lets every test count for such a function.

Verdicts come from mutmut's exit codes (its mutants/*.meta files). The score counts a
mutant as detected when its tests failed (killed), ran out of time (timeout) or could not
run at all (error: pytest could not start them, because the mutant broke the import of a
test module or of the conftest; mutmut itself files that under timeout). mutmut runs no
git command on the checkout: GIT_CEILING_DIRECTORIES stops git's search for a repository
at mutants/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from harness.runs import progress

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "mutants"
THRESHOLD = 90.0
MUTMUT = "3.8.1"  # scripts/run_mutation.sh installs this version


class Unit(NamedTuple):
    """Source files mutated together, and the unit tests that judge them; SKIP: regexes
    of source lines mutmut leaves alone (its do_not_mutate_patterns)."""

    name: str
    sources: tuple[str, ...]
    tests: tuple[str, ...]
    skip: tuple[str, ...] = ()


UNITS = (
    Unit("policy", ("src/unistack/policy.py",), ("tests/unit/test_policy.py",)),
    Unit("router", ("src/unistack/alerts/router.py",), ("tests/unit/test_router.py",)),
    Unit("protocol", ("src/unistack/ml/protocol.py",), ("tests/unit/test_protocol.py",)),
    # The calls that run SQL: mutmut's mutants of SQL text change its letter case, which
    # SQLite ignores, or make it no SQL at all (their arguments go unmutated with them).
    Unit("outbox", ("src/unistack/alerts/outbox.py",), ("tests/unit/test_outbox.py",),
         skip=(r"\.execute\(", r"\._read\(")),
    # Loading and the keys' parsers; test_registry_consistency loads Settings for the
    # checked-in supervisord.conf and prometheus.yml (test_config_keys_used reads source
    # text only: it calls nothing of either module).
    Unit("config", ("src/unistack/config.py", "src/unistack/configkeys.py"),
         ("tests/unit/test_config.py", "tests/unit/test_registry_consistency.py")),
)

# A mutant's verdict by the exit code of its test run: mutmut.stats.status_by_exit_code,
# but for 255, a worker's exception (pytest could not run the tests: exit 4), which mutmut
# calls a timeout. Any other code is "suspicious", as in mutmut.
VERDICTS: dict[int | None, str] = {
    None: "not checked", 0: "survived", 1: "killed", 3: "killed", 5: "no tests",
    33: "no tests", 2: "check was interrupted by user", 34: "skipped", 35: "suspicious",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 37: "caught by type check",
    255: "error", -11: "segfault", -9: "segfault",
}
DETECTED = frozenset({"killed", "timeout", "error"})

# Given to pytest on every run of a work directory's tests.
PYTEST_ARGS = ("-p", "harness.mutation_plugin", "-p", "no:cacheprovider")


class UsageError(Exception):
    """An argument names nothing this command can mutate."""


class MutmutError(Exception):
    """mutmut could not run a unit; its own output (on stderr) says why."""


def module_name(source: str) -> str:
    """src/unistack/ml/protocol.py -> unistack.ml.protocol"""
    return ".".join(Path(source).with_suffix("").parts[1:])


def unit_of(argument: str, root: Path = ROOT) -> Unit:
    """The unit ARGUMENT names: one of UNITS by name, or a source file under src/ (one of
    a unit's: that unit's tests; else tests/unit/test_<stem>.py)."""
    named = {unit.name: unit for unit in UNITS}
    if argument in named:
        return named[argument]
    path = Path(argument)
    try:
        source = (path if path.is_absolute() else root / path).resolve().relative_to(root)
    except ValueError:
        raise UsageError(f"{argument} is outside the checkout {root}") from None
    if source.parts[0] != "src" or source.suffix != ".py" or not (root / source).is_file():
        raise UsageError(f"{argument} is not a module: expected one of {', '.join(named)} "
                         "or a .py file under src/")
    text = source.as_posix()
    for unit in UNITS:
        if unit.sources == (text,):
            return unit
        if text in unit.sources:
            return unit._replace(name=module_name(text), sources=(text,))
    test = f"tests/unit/test_{source.stem}.py"
    if not (root / test).is_file():
        raise UsageError(f"{argument} has no unit tests: expected {test}")
    return Unit(module_name(text), (text,), (test,))


def copied_entries(root: Path) -> list[str]:
    """The checkout's top-level entries a work directory links to and mutmut copies:
    every one but the hidden ones (.git, .venv, .env), pyproject.toml (written anew),
    mutants/ and var/ (state)."""
    return sorted(path.name for path in root.iterdir() if not path.name.startswith(".")
                  and path.name not in {"pyproject.toml", "mutants", "var"})


def mutmut_table(unit: Unit, also_copy: Sequence[str]) -> str:
    """UNIT's [tool.mutmut] table (TOML: json.dumps writes its strings, lists, booleans)."""
    settings: dict[str, Any] = {
        "source_paths": ["src"],
        "only_mutate": list(unit.sources),
        "pytest_add_cli_args_test_selection": list(unit.tests),
        "pytest_add_cli_args": list(PYTEST_ARGS),
        "also_copy": list(also_copy),
        "do_not_mutate_patterns": list(unit.skip),
        "process_isolation": "forkserver",
        "forkserver_warmup": "none",
        "use_git_change_detection": False,
    }
    return "".join(["[tool.mutmut]\n",
                    *(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())])


def prepare(unit: Unit, root: Path = ROOT, work: Path = WORK) -> Path:
    """A fresh work directory for UNIT under WORK."""
    pyproject = (root / "pyproject.toml").read_text()
    if "mutmut" in tomllib.loads(pyproject).get("tool", {}):
        raise UsageError("pyproject.toml has a [tool.mutmut] table: this command writes its "
                         "own per module; remove it")
    directory = work / unit.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    entries = copied_entries(root)
    for name in entries:
        (directory / name).symlink_to(root / name)
    # mutmut copies src (source_paths) and tests by itself.
    also_copy = [name for name in entries if name not in {"src", "tests"}]
    (directory / "pyproject.toml").write_text(f"{pyproject}\n{mutmut_table(unit, also_copy)}")
    return directory


def verdicts(meta: str) -> dict[str, str]:
    """The verdict of every mutant in the JSON of a mutmut .meta file, by mutant name."""
    exit_codes: dict[str, int | None] = json.loads(meta)["exit_code_by_key"]
    return {name: VERDICTS.get(code, "suspicious") for name, code in exit_codes.items()}


class Tally(NamedTuple):
    """One unit's mutants by verdict; `other` is every verdict but the five named."""

    mutants: int
    killed: int
    timeout: int
    error: int
    survived: int
    no_tests: int
    other: int

    @property
    def score(self) -> float | None:
        """Detected mutants in percent of all; None without mutants."""
        detected = self.killed + self.timeout + self.error
        return 100 * detected / self.mutants if self.mutants else None

    @property
    def passed(self) -> bool:
        return self.score is not None and self.score >= THRESHOLD


def tally(statuses: Mapping[str, str]) -> Tally:
    counts = Counter(statuses.values())
    named = ("killed", "timeout", "error", "survived", "no tests")
    killed, timeout, error, survived, no_tests = (counts[verdict] for verdict in named)
    return Tally(len(statuses), killed, timeout, error, survived, no_tests,
                 len(statuses) - killed - timeout - error - survived - no_tests)


def not_killed(statuses: Mapping[str, str]) -> dict[str, str]:
    """The mutants the tests let through, with their verdicts, by name."""
    return {name: status for name, status in sorted(statuses.items())
            if status not in DETECTED}


class Result(NamedTuple):
    unit: Unit
    statuses: dict[str, str]
    seconds: float


def score_text(score: float | None) -> str:
    return "-" if score is None else f"{score:.1f} %"


def report_lines(results: Sequence[Result]) -> list[str]:
    """The Markdown table, one row per unit, then the mutants not killed."""
    lines = ["| module | mutants | killed | timeout | error | survived | no tests | other "
             "| score |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        counts = tally(result.statuses)
        lines.append(f"| {result.unit.name} | {counts.mutants} | {counts.killed} | "
                     f"{counts.timeout} | {counts.error} | {counts.survived} | "
                     f"{counts.no_tests} | {counts.other} | {score_text(counts.score)} |")
    left = [(result.unit.name, name, status) for result in results
            for name, status in not_killed(result.statuses).items()]
    if left:
        lines += ["", "Not detected (the diff of one: cd mutants/MODULE && PYTHONPATH="
                      f"../../.cache/mutation/mutmut-{MUTMUT} ../../.venv/bin/python -m mutmut "
                      "show NAME):"]
        lines += [f"- {unit}: {name} ({status})" for unit, name, status in left]
    return lines


def report_json(results: Sequence[Result], seconds: float) -> dict[str, Any]:
    modules = []
    for result in results:
        counts = tally(result.statuses)
        modules.append({"name": result.unit.name, "sources": list(result.unit.sources),
                        "tests": list(result.unit.tests), **counts._asdict(),
                        "score": counts.score, "passed": counts.passed,
                        "seconds": round(result.seconds, 1),
                        "not_killed": not_killed(result.statuses)})
    return {"date": date.today().isoformat(), "mutmut": metadata.version("mutmut"),
            "threshold": THRESHOLD, "seconds": round(seconds, 1),
            "passed": all(module["passed"] for module in modules), "modules": modules}


def mutmut(directory: Path, *arguments: str) -> None:
    """Run mutmut (on the PYTHONPATH scripts/run_mutation.sh sets) in DIRECTORY, its
    output on stderr."""
    argv = [sys.executable, "-m", "mutmut", *arguments]
    environment = {**os.environ, "GIT_CEILING_DIRECTORIES": str(directory.parent)}
    done = subprocess.run(argv, cwd=directory, env=environment, check=False,
                          stdout=sys.stderr.fileno())
    if done.returncode != 0:
        raise MutmutError(f"`mutmut {' '.join(arguments)}` in {directory} exited "
                          f"{done.returncode}")


def run(unit: Unit) -> Result:
    started = time.monotonic()
    directory = prepare(unit)
    progress(f"run_mutation: {unit.name}: mutating {', '.join(unit.sources)}, judged by "
             f"{', '.join(unit.tests)}, in {directory.relative_to(ROOT)}/ ...")
    mutmut(directory, "run")
    statuses: dict[str, str] = {}
    for source in unit.sources:
        meta = directory / "mutants" / f"{source}.meta"
        if not meta.is_file():
            raise MutmutError(f"mutmut left no results for {source} ({meta} is missing)")
        statuses.update(verdicts(meta.read_text()))
    result = Result(unit, statuses, time.monotonic() - started)
    counts = tally(statuses)
    progress(f"run_mutation: {unit.name}: {counts.mutants} mutants, {counts.killed} killed, "
             f"score {score_text(counts.score)} in {result.seconds:.0f} s")
    return result


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/run_mutation.sh",
        description=f"Mutation testing (mutmut 3): a row per module, exit 1 below "
                    f"{THRESHOLD:.0f} %.")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"{', '.join(unit.name for unit in UNITS)} (default: all), or "
                             "a .py file under src/")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        units = list(dict.fromkeys(unit_of(name) for name in arguments.modules
                                   or [unit.name for unit in UNITS]))
    except UsageError as exc:
        print(f"run_mutation: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        results = [run(unit) for unit in units]
    except (MutmutError, UsageError) as exc:
        print(f"run_mutation: {exc}", file=sys.stderr)
        return 3
    if arguments.json:
        print(json.dumps(report_json(results, time.monotonic() - started), indent=2))
    else:
        print("\n".join(report_lines(results)))
    progress(f"run_mutation: {len(results)} module(s) in {time.monotonic() - started:.0f} s")
    below = [result for result in results if not tally(result.statuses).passed]
    if below:
        progress(f"run_mutation: below {THRESHOLD:.0f} %: " + ", ".join(
            f"{result.unit.name} ({score_text(tally(result.statuses).score)})"
            for result in below))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
