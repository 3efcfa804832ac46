"""The hub's tenure record: a killed predecessor is told apart from a clean stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unistack.hub.tenure import Predecessor, Tenure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_hub_has_no_predecessor(tmp_path: Path) -> None:
    assert Tenure(tmp_path / "hub.json", 600, Clock()).begin(10) is None
    assert json.loads((tmp_path / "hub.json").read_text())["pid"] == 10


def test_clean_stop_is_not_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = Tenure(tmp_path / "hub.json", 600, clock)
    first.begin(10)
    first.end()
    clock.now += 5
    assert Tenure(tmp_path / "hub.json", 600, clock).begin(11) is None


def test_killed_hub_is_reported_and_counted_across_hubs(tmp_path: Path) -> None:
    clock = Clock()
    Tenure(tmp_path / "hub.json", 600, clock).begin(10)  # killed: never ends
    clock.now += 5
    second = Tenure(tmp_path / "hub.json", 600, clock).begin(11)
    assert second == Predecessor(10, 1000.0, (1005.0,))
    clock.now += 5
    third = Tenure(tmp_path / "hub.json", 600, clock).begin(12)
    assert third is not None and third.pid == 11 and third.restarts == (1005.0, 1010.0)


def test_restarts_older_than_the_window_are_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    Tenure(tmp_path / "hub.json", 60, clock).begin(10)
    clock.now += 5
    Tenure(tmp_path / "hub.json", 60, clock).begin(11)
    clock.now += 100
    later = Tenure(tmp_path / "hub.json", 60, clock).begin(12)
    assert later is not None and later.restarts == (1105.0,)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupt_record_is_unknown_not_fatal(tmp_path: Path, content: str) -> None:
    (tmp_path / "hub.json").write_text(content)
    assert Tenure(tmp_path / "hub.json", 600, Clock()).begin(10) is None
    assert json.loads((tmp_path / "hub.json").read_text())["pid"] == 10


def test_an_unwritable_record_does_not_raise(tmp_path: Path) -> None:
    tenure = Tenure(tmp_path / "missing-dir" / "hub.json", 600, Clock())
    assert tenure.begin(10) is None
    tenure.end()
