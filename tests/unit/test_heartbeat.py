"""The dead man's switch: calls while the hub is sound, none while it is not, against
a real local HTTP server standing in for the outside service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.slack import SlackStandIn
from harness.waiting import wait_for
from unistack.hub.heartbeat import Heartbeat, post


@pytest.fixture
def outside() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


def test_beats_reach_the_outside_service(outside: SlackStandIn) -> None:
    beat = Heartbeat(outside.ping_url, 0.05, alive=lambda: None)
    beat.start()
    try:
        wait_for(lambda: len(outside.calls("/ping/")) >= 3, timeout=5)
    finally:
        beat.stop()
    assert outside.calls("/ping/")[0].method == "POST"


def test_no_beat_while_the_control_plane_is_unsound(outside: SlackStandIn) -> None:
    reason: list[str | None] = ["supervisord is not running"]
    beat = Heartbeat(outside.ping_url, 10, alive=lambda: reason[0])
    assert beat.beat() is False
    assert outside.calls("/ping/", answered=None) == []
    reason[0] = None
    assert beat.beat() is True and beat.beats == 1


def test_a_refused_or_failing_call_is_survived(outside: SlackStandIn) -> None:
    beat = Heartbeat(outside.ping_url, 10, alive=lambda: None)
    outside.fail(500, count=1, path="/ping/")
    assert beat.beat() is False
    assert beat.beat() is True
    outside.down()
    assert beat.beat() is False


def test_post_returns_error_statuses(outside: SlackStandIn) -> None:
    outside.fail(503, count=1, path="/ping/")
    assert post(outside.ping_url, b"x", 2.0) == 503
    assert post(outside.ping_url, b"x", 2.0) == 200
