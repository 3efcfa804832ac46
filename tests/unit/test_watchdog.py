"""The watchdog exits the hub only when its loop is older than the limit."""

from __future__ import annotations

from unistack.hub.factory import Watchdog


def test_a_fresh_loop_keeps_the_hub() -> None:
    exits: list[int] = []
    Watchdog(lambda: 0.4, 5.0, exits.append).check()
    assert exits == []


def test_a_stale_loop_exits_with_a_code_supervisord_restarts() -> None:
    exits: list[int] = []
    Watchdog(lambda: 5.1, 5.0, exits.append).check()
    assert exits == [70]


def test_health_turns_503_when_the_loop_is_stale() -> None:
    from unistack.hub.api import HubApi
    from unistack.hub.events import EventLog
    from unistack.hub.metrics import HubMetrics

    age = [0.2]
    api = HubApi(status=dict, loop_age=lambda: age[0], stale_after=5.0, events=EventLog(),
                 metrics=HubMetrics(), restart=lambda name: None, token="t" * 43)
    assert api.health() == (200, {"alive": True, "loop_age": 0.2})
    age[0] = 6.0
    assert api.health() == (503, {"alive": False, "loop_age": 6.0})
