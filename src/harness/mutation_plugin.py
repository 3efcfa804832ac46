"""A pytest plugin for mutation runs (harness.mutation): a function called while the
tests' modules are imported counts as called by every test.

mutmut 3 learns which tests call each function (its "stats" run) and tests the
function's mutants with those tests alone. A function called during an import
(configkeys builds KEYS with _choice, _pattern, _probe_keys ...) is called before the
first test, and mutmut credits the call to that first test only, although every test
uses what it built. mutmut has no setting for this: before its collector credits the
calls since the last test to the test that just ran (the set mutmut.state.state()._stats
of the pinned mutmut 3.8.1), this plugin adds those made during collection. Outside the
stats run mutmut records no calls, and the plugin adds nothing.
"""

from __future__ import annotations

import importlib

import pytest

_imported: set[str] = set()


def _calls() -> set[str]:
    """The functions mutmut saw called since it last credited a test."""
    calls: set[str] = importlib.import_module("mutmut.state").state()._stats
    return calls


def pytest_collection_finish() -> None:
    """Every test module is imported: the calls so far were made by the imports."""
    _imported.update(_calls())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown() -> None:
    """Before mutmut's collector credits the calls to the test just run."""
    _calls().update(_imported)
