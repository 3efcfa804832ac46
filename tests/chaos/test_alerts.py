"""Slack alerts from the whole stack, against the local Slack stand-in: one message per
incident and one resolved update, bursts and dependents folded in, the outbox surviving
a Slack outage and a killed hub, silences, `alert-test`, and no secret in any request."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.slack import SlackStandIn
from harness.stacks import Stack, write_env_file
from harness.waiting import wait_for
from tests.chaos.test_chaos import FAULT_TRIALS, events, services, settle_past_startsecs, start
from unistack.config import load_settings

pytestmark = pytest.mark.chaos


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


def with_webhook(stack: Stack, slack: SlackStandIn) -> None:
    """The operator's step: the webhook URL (a secret) goes into .env, mode 0600."""
    write_env_file(stack.home, SLACK_WEBHOOK_URL=slack.webhook_url)
    start(stack, **FAULT_TRIALS)
    wait_for(lambda: about(slack, "startup complete"), timeout=10)  # one message per start


def failures(slack: SlackStandIn) -> list[str]:
    """Messages that open an incident (not its resolution, not the startup notice)."""
    return [t for t in texts(slack) if not any(
        word in t.lower() for word in ("resolved", "recovered", "startup complete"))]


def texts(slack: SlackStandIn) -> list[str]:
    return [str(r.body.get("text", "")) for r in slack.calls("/webhook/")
            if isinstance(r.body, dict)]


def about(slack: SlackStandIn, word: str) -> list[str]:
    return [text for text in texts(slack) if word in text]


def over(text: str) -> bool:
    """A message saying the incident is over (marked ✅): its resolution, or its first
    message when the service was back inside the 0.5 s group window ("..., recovered")."""
    return ":white_check_mark:" in text


def test_a_crash_is_one_message_then_one_resolved_update(stack: Stack,
                                                         slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    pid = settle_past_startsecs(stack, "prometheus")
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    first = wait_for(lambda: about(slack, "prometheus"), timeout=10)
    arrived = next(r.monotonic for r in slack.calls("/webhook/")
                   if "prometheus" in str(r.body.get("text", "")))
    assert arrived - killed < 2.0
    assert "crashed" in first[0]
    wait_for(lambda: any(over(t) for t in about(slack, "prometheus")), timeout=20)
    slack.quiet_for(3)
    messages = about(slack, "prometheus")
    # The crash, then its resolution; or one message saying both when prometheus was
    # ready again inside the group window.
    assert len(messages) in (1, 2) and over(messages[-1]), messages
    assert len(messages) == 1 or not over(messages[0]), messages
    assert len(texts(slack)) == 1 + len(messages)  # the startup notice: nothing per probe


def test_a_burst_of_failures_is_one_message(stack: Stack, slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    pids = [settle_past_startsecs(stack, name) for name in ("prometheus", "ml_engine")]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: failures(slack) or [t for t in texts(slack) if over(t)], timeout=10)
    slack.quiet_for(3)
    told = [t for t in texts(slack) if "startup complete" not in t.lower()]
    # One incident: its first message names both (it may already say it is over), then
    # at most its resolution.
    assert "prometheus" in told[0] and "ml_engine" in told[0], told
    assert len(told) <= 2 and all(over(t) for t in told[1:]), told


def test_redis_down_is_one_incident_with_its_dependents(stack: Stack,
                                                       slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    engine = settle_past_startsecs(stack, "ml_engine")
    pid = settle_past_startsecs(stack, "redis")
    os.kill(pid, signal.SIGSTOP)  # hung: the hub kills it
    try:
        wait_for(lambda: services(stack)["redis"]["incident"], timeout=10)
        os.kill(engine, signal.SIGKILL)  # a dependent fails while Redis's incident is open
        wait_for(lambda: about(slack, "redis"), timeout=15)
    finally:
        _continue(pid)
    wait_for(lambda: services(stack)["redis"]["ready"] and services(stack)["ml_engine"]["ready"],
             timeout=30)
    slack.quiet_for(4)
    assert not [t for t in texts(slack) if "*ml_engine " in t], texts(slack)  # no own incident
    assert len([t for t in failures(slack) if "affected too" not in t]) == 1, texts(slack)
    assert "redis hung" in failures(slack)[0]
    # Named in redis's incident: "Also affected" when the engine failed inside the
    # grouping window, else an update "ml_engine affected too".
    assert any("ml_engine" in json.dumps(r.body) for r in slack.calls("/webhook/")), (
        texts(slack), (stack.home / "var/log/hub.log").read_text()[-6000:])


def test_messages_wait_out_a_slack_outage_and_a_killed_hub(stack: Stack,
                                                          slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    slack.down()
    pid = settle_past_startsecs(stack, "prometheus")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: services(stack)["prometheus"]["ready"], timeout=15)
    hub = services(stack)["hub"]["pid"]
    wait_for(lambda: _pending(stack) >= 1, timeout=10)  # queued while Slack is down
    os.kill(hub, signal.SIGKILL)
    wait_for(lambda: _hub_pid(stack) not in (None, hub), timeout=20)
    slack.up()
    wait_for(lambda: any(over(t) for t in about(slack, "prometheus")), timeout=60)
    slack.quiet_for(3)
    messages = about(slack, "prometheus")
    # The crash and its recovery, each exactly once (one message when it was back inside
    # the group window).
    assert len(messages) in (1, 2) and len(set(messages)) == len(messages), messages
    assert "crashed" in messages[0] and over(messages[-1]), messages


def test_a_silence_holds_messages_and_is_announced(stack: Stack, slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    done = stack.cli("silence", "prometheus", "1m", "--reason", "planned upgrade")
    assert done.returncode == 0, done.stderr
    assert "prometheus silenced until" in done.stdout
    wait_for(lambda: about(slack, "planned upgrade"), timeout=10)
    os.kill(settle_past_startsecs(stack, "prometheus"), signal.SIGKILL)
    wait_for(lambda: events(stack, "recovered", "prometheus"), timeout=10)  # over, untold
    slack.quiet_for(3)
    assert [t for t in about(slack, "prometheus") if "crashed" in t] == []
    shown = stack.cli("alerts")
    assert shown.returncode == 0 and "Silenced: prometheus" in shown.stdout
    assert stack.cli("silence", "prometheus", "--end").returncode == 0
    wait_for(lambda: about(slack, "prometheus silence lifted"), timeout=10)
    again = stack.cli("silence", "prometheus", "--end")
    assert again.returncode == 1 and "prometheus is not silenced: nothing to end" in again.stderr
    bad = stack.cli("silence", "prometheus", "soon", "--reason", "x")
    assert bad.returncode == 2 and "expected a duration like 30m" in bad.stderr


def test_alert_test_reports_what_slack_said(stack: Stack, slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    done = stack.cli("alert-test")
    assert done.returncode == 0, done.stderr
    assert "Slack accepted the test message" in done.stdout
    assert about(slack, "test alert")
    slack.fail(403, count=1)  # a webhook Slack no longer knows: permanent
    refused = stack.cli("alert-test")
    assert refused.returncode == 1 and "Slack did not accept" in refused.stderr


def test_no_secret_reaches_slack_or_the_logs(stack: Stack, slack: SlackStandIn) -> None:
    with_webhook(stack, slack)
    os.kill(settle_past_startsecs(stack, "prometheus"), signal.SIGKILL)
    wait_for(lambda: about(slack, "prometheus"), timeout=10)
    settings = load_settings(environ=stack.env)
    secrets = [*settings.secret_values(), slack.webhook_url.rsplit("/", 1)[-1]]
    recorded = " ".join(r.raw for r in slack.requests)
    logs = " ".join(path.read_text(errors="replace")
                    for path in (stack.home / "var" / "log").rglob("*.log"))
    for secret in secrets:
        assert secret not in recorded
        assert secret not in logs


def test_without_slack_incidents_are_recorded_and_the_hub_says_so_once(stack: Stack) -> None:
    start(stack, **FAULT_TRIALS)
    os.kill(settle_past_startsecs(stack, "prometheus"), signal.SIGKILL)
    wait_for(lambda: events(stack, "recovered", "prometheus"), timeout=10)
    assert events(stack, "crashed", "prometheus")
    shown = stack.cli("alerts")
    assert "Slack: off" in shown.stdout
    log = (stack.home / "var" / "log" / "hub.log").read_text()
    assert log.count("Slack alerts are off") == 1
    test = stack.cli("alert-test")
    assert test.returncode == 1 and "Slack is off" in test.stderr


def _continue(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _alerts(stack: Stack) -> dict[str, Any]:
    done = stack.cli("alerts", "--json")
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def _pending(stack: Stack) -> int:
    return int(_alerts(stack).get("outbox", {}).get("counts", {}).get("pending", 0))


def _hub_pid(stack: Stack) -> int | None:
    try:
        return int(services(stack)["hub"]["pid"])
    except Exception:
        return None
