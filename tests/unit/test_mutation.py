"""scripts/run_mutation.sh's pure parts (harness.mutation): which module an argument
names, the [tool.mutmut] table of a work directory, mutmut's results read back, the
score and the report. mutmut itself runs only in the command."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from harness.mutation import (
    UNITS,
    Result,
    Tally,
    Unit,
    UsageError,
    copied_entries,
    mutmut_table,
    not_killed,
    report_lines,
    tally,
    unit_of,
    verdicts,
)

ROOT = Path(__file__).resolve().parents[2]

# A mutmut .meta file: each mutant's exit code (a method's name carries mutmut's "ǁ").
META = json.dumps({
    "exit_code_by_key": {
        "unistack.ml.protocol.x_parse__mutmut_1": 1,
        "unistack.ml.protocol.x_parse__mutmut_2": 0,
        "unistack.alerts.outbox.xǁOutboxǁput__mutmut_3": -24,
        "unistack.alerts.outbox.xǁOutboxǁput__mutmut_4": 33,
        "unistack.configkeys.x__choice__mutmut_5": 255,
        "unistack.configkeys.x__choice__mutmut_6": 99,
        "unistack.configkeys.x__choice__mutmut_7": None,
    },
    "hash_by_function_name": {}, "type_check_error_by_key": {}, "durations_by_key": {},
    "estimated_durations_by_key": {},
}, ensure_ascii=False)


def test_the_five_modules_of_the_issue_are_the_default_and_their_files_exist() -> None:
    assert [unit.name for unit in UNITS] == ["policy", "router", "protocol", "outbox", "config"]
    for unit in UNITS:
        for path in (*unit.sources, *unit.tests):
            assert (ROOT / path).is_file(), path


def test_a_module_is_named_by_its_unit_or_by_its_file() -> None:
    protocol = unit_of("protocol")
    assert protocol == Unit("protocol", ("src/unistack/ml/protocol.py",),
                            ("tests/unit/test_protocol.py",))
    assert unit_of("src/unistack/ml/protocol.py") == protocol
    assert unit_of(str(ROOT / "src/unistack/ml/protocol.py")) == protocol
    # one file of a unit of two: that file alone, judged by the unit's tests
    assert unit_of("src/unistack/configkeys.py") == Unit(
        "unistack.configkeys", ("src/unistack/configkeys.py",), unit_of("config").tests)
    # any other module: its tests/unit/test_<stem>.py
    assert unit_of("src/unistack/envfile.py") == Unit(
        "unistack.envfile", ("src/unistack/envfile.py",), ("tests/unit/test_envfile.py",))


@pytest.mark.parametrize(("argument", "said"), [
    ("routr", "routr is not a module: expected one of policy, router, protocol, outbox, "
              "config or a .py file under src/"),
    ("README.md", "README.md is not a module"),
    ("src/unistack/missing.py", "src/unistack/missing.py is not a module"),
    ("/etc/hostname", "/etc/hostname is outside the checkout"),
    ("src/unistack/cli.py", "src/unistack/cli.py has no unit tests: expected "
                            "tests/unit/test_cli.py"),
])
def test_an_argument_naming_no_testable_module_is_refused(argument: str, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        unit_of(argument)
    assert said in str(refused.value)


def test_the_mutmut_table_names_the_units_sources_and_tests() -> None:
    table = tomllib.loads(mutmut_table(unit_of("config"), ["config.env", "docs"]))["tool"]
    settings = table["mutmut"]
    assert settings["only_mutate"] == ["src/unistack/config.py", "src/unistack/configkeys.py"]
    assert settings["pytest_add_cli_args_test_selection"] == [
        "tests/unit/test_config.py", "tests/unit/test_registry_consistency.py"]
    assert settings["also_copy"] == ["config.env", "docs"]
    assert settings["do_not_mutate_patterns"] == []
    assert settings["source_paths"] == ["src"]
    assert settings["process_isolation"] == "forkserver"
    assert settings["use_git_change_detection"] is False
    assert "harness.mutation_plugin" in settings["pytest_add_cli_args"]
    outbox = tomllib.loads(mutmut_table(unit_of("outbox"), []))["tool"]["mutmut"]
    assert outbox["do_not_mutate_patterns"] == list(unit_of("outbox").skip) != []


def test_a_work_directory_gets_the_checkouts_files_but_no_secrets_or_state() -> None:
    entries = copied_entries(ROOT)
    assert {"src", "tests", "config.env", "docs", "scripts"} <= set(entries)
    assert not {".git", ".venv", ".env", "var", "mutants", "pyproject.toml"} & set(entries)


def test_mutmut_exit_codes_are_read_as_verdicts() -> None:
    assert verdicts(META) == {
        "unistack.ml.protocol.x_parse__mutmut_1": "killed",
        "unistack.ml.protocol.x_parse__mutmut_2": "survived",
        "unistack.alerts.outbox.xǁOutboxǁput__mutmut_3": "timeout",  # SIGXCPU
        "unistack.alerts.outbox.xǁOutboxǁput__mutmut_4": "no tests",
        # pytest could not run the tests (mutmut itself says timeout)
        "unistack.configkeys.x__choice__mutmut_5": "error",
        "unistack.configkeys.x__choice__mutmut_6": "suspicious",
        "unistack.configkeys.x__choice__mutmut_7": "not checked",  # the run was stopped
    }


def test_the_score_counts_killed_timed_out_and_unrunnable_mutants() -> None:
    counts = tally(verdicts(META))
    assert counts == Tally(mutants=7, killed=1, timeout=1, error=1, survived=1, no_tests=1,
                           other=2)
    assert counts.score == 300 / 7
    assert not counts.passed


def test_a_module_passes_at_ninety_percent_and_not_below() -> None:
    def counts(killed: int, survived: int) -> Tally:
        return tally({f"m{n}": "killed" if n < killed else "survived"
                      for n in range(killed + survived)})

    assert counts(9, 1).score == 90.0 and counts(9, 1).passed
    assert counts(89, 11).score == 89.0 and not counts(89, 11).passed
    assert tally({}).score is None and not tally({}).passed  # no mutants: nothing judged


def test_the_report_is_a_row_per_module_then_every_mutant_not_killed() -> None:
    statuses = verdicts(META)
    assert not_killed(statuses) == {
        "unistack.alerts.outbox.xǁOutboxǁput__mutmut_4": "no tests",
        "unistack.configkeys.x__choice__mutmut_6": "suspicious",
        "unistack.configkeys.x__choice__mutmut_7": "not checked",
        "unistack.ml.protocol.x_parse__mutmut_2": "survived",
    }
    lines = report_lines([Result(unit_of("protocol"), statuses, 12.0),
                          Result(unit_of("outbox"), {"a": "killed"}, 3.0)])
    assert lines[:4] == [
        "| module | mutants | killed | timeout | error | survived | no tests | other | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| protocol | 7 | 1 | 1 | 1 | 1 | 1 | 2 | 42.9 % |",
        "| outbox | 1 | 1 | 0 | 0 | 0 | 0 | 0 | 100.0 % |",
    ]
    assert lines[-4:] == [
        "- protocol: unistack.alerts.outbox.xǁOutboxǁput__mutmut_4 (no tests)",
        "- protocol: unistack.configkeys.x__choice__mutmut_6 (suspicious)",
        "- protocol: unistack.configkeys.x__choice__mutmut_7 (not checked)",
        "- protocol: unistack.ml.protocol.x_parse__mutmut_2 (survived)",
    ]
    assert report_lines([Result(unit_of("outbox"), {"a": "killed"}, 3.0)])[-1].startswith(
        "| outbox |")  # nothing left: no list
