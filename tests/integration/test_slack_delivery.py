"""Delivery end to end: the real slack-sdk transports, a real outbox file and the
dispatcher thread, against the local Slack stand-in (src/harness/slack.py)."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from harness.slack import WEBHOOK_PATH, Recorded, SlackStandIn, channel_id
from harness.waiting import wait_for
from tests.conftest import ROOT
from unistack.alerts.dispatcher import DispatchConfig, Dispatcher, OnFailed
from unistack.alerts.outbox import Outbox
from unistack.alerts.records import Message
from unistack.alerts.slack import BotTransport, WebhookTransport, build_transport
from unistack.config import Settings, load_settings

pytestmark = pytest.mark.integration

TOKEN = "xoxb-4242-standin-secret-token"
FAST = DispatchConfig(channel_interval=0.05, retry_max=0.3, retry_initial=0.05, jitter=0.2,
                      lease=2, poll=0.2)


class Delivery(NamedTuple):
    settings: Settings
    outbox: Outbox
    dispatcher: Dispatcher

    def put(self, key: str, action: str = "post", thread_of: str = "",
            channel: str = "#alerts", text: str = "") -> None:
        channel = channel if self.settings.slack_mode == "bot" else "webhook"
        payload = {"text": text or f"text of {key}",
                   "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": key}}]}
        self.outbox.put(Message(key, channel, key.partition("/")[0], action, payload, thread_of))
        self.dispatcher.wake()

    def delivered(self) -> bool:
        return not self.outbox.pending()


Start = Callable[..., Delivery]


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


def settings_for(home: Path, slack: SlackStandIn, mode: str, timeout: float) -> Settings:
    environ = {"UNISTACK_HOME": str(home), "SLACK_TIMEOUT": str(timeout),
               "SLACK_API_URL": slack.api_url}
    environ["SLACK_BOT_TOKEN" if mode == "bot" else "SLACK_WEBHOOK_URL"] = (
        TOKEN if mode == "bot" else slack.webhook_url)
    return load_settings(environ)


@pytest.fixture
def start(tmp_path: Path, slack: SlackStandIn,
          caplog: pytest.LogCaptureFixture) -> Iterator[Start]:
    """Start delivery in MODE; afterwards, check that no secret left in any request or log."""
    caplog.set_level(logging.DEBUG)
    running: list[Delivery] = []

    def begin(mode: str, timeout: float = 0.5, on_failed: OnFailed | None = None) -> Delivery:
        settings = settings_for(tmp_path, slack, mode, timeout)
        transport = build_transport(settings)
        assert transport is not None
        outbox = Outbox(settings.alerts_db, settings.alert_outbox_max)
        dispatcher = Dispatcher(outbox, transport, FAST, on_failed=on_failed)
        dispatcher.start()
        running.append(Delivery(settings, outbox, dispatcher))
        return running[-1]

    yield begin
    for delivery in running:
        delivery.dispatcher.stop()
    assert_no_secrets(slack.requests, caplog.text)


def assert_no_secrets(requests: list[Recorded], logs: str) -> None:
    secrets = (TOKEN, WEBHOOK_PATH.rsplit("/", 1)[-1])
    for request in requests:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        seen = request.raw + str(headers) + request.path.removeprefix(WEBHOOK_PATH)
        assert not any(secret in seen for secret in secrets), request
    assert not any(secret in logs for secret in secrets)


def test_webhook_mode_posts_every_message_in_order(start: Start, slack: SlackStandIn) -> None:
    delivery = start("webhook")
    delivery.put("inc/0")
    delivery.put("inc/1", thread_of="inc")
    delivery.put("inc/2", action="update", text=f"resolved; the hook is {slack.webhook_url}")
    wait_for(delivery.delivered, timeout=5)
    calls = slack.calls(WEBHOOK_PATH)
    assert [c.body["blocks"][0]["text"]["text"] for c in calls] == ["inc/0", "inc/1", "inc/2"]
    assert "****" in calls[2].body["text"]  # a secret in a payload is redacted
    assert isinstance(build_transport(delivery.settings), WebhookTransport)


def test_bot_mode_threads_replies_and_updates_the_parent(start: Start,
                                                         slack: SlackStandIn) -> None:
    delivery = start("bot")
    delivery.put("inc/0")
    delivery.put("inc/1", thread_of="inc", text=f"token {TOKEN} must not leak")
    delivery.put("inc/2", thread_of="inc")
    delivery.put("inc/3", action="update")
    wait_for(delivery.delivered, timeout=5)
    first, reply, reply2 = slack.calls("/api/chat.postMessage")
    (update,) = slack.calls("/api/chat.update")
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.body["channel"] == "#alerts" and "thread_ts" not in first.body
    parent = delivery.outbox.thread("inc")
    assert parent is not None and parent.channel == channel_id("#alerts")
    assert reply.body["thread_ts"] == reply2.body["thread_ts"] == parent.ts
    assert reply.body["channel"] == channel_id("#alerts")
    assert "****" in reply.body["text"]
    assert (update.body["channel"], update.body["ts"]) == parent
    arrivals = [r.monotonic for r in (first, reply, reply2, update)]
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.05  # channel_interval


def test_slack_sdk_retries_nothing_itself(start: Start) -> None:
    for mode in ("bot", "webhook"):
        transport = build_transport(start(mode).settings)
        assert isinstance(transport, BotTransport | WebhookTransport)
        assert transport._client.retry_handlers == []


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_a_429_retry_after_is_honoured(start: Start, slack: SlackStandIn, mode: str) -> None:
    delivery = start(mode)
    slack.rate_limit(1)
    delivery.put("inc/0")
    wait_for(delivery.delivered, timeout=5)
    limited, accepted = slack.calls(answered=None)
    assert limited.status == 429 and accepted.status == 200
    assert accepted.monotonic - limited.monotonic >= 1.0


def test_server_errors_then_success_deliver_once(start: Start, slack: SlackStandIn) -> None:
    delivery = start("webhook")
    slack.fail(500, count=3)
    delivery.put("inc/0")
    delivery.put("inc/1")
    wait_for(delivery.delivered, timeout=5)
    assert [c.status for c in slack.calls(answered=None)] == [500, 500, 500, 200, 200]
    assert delivery.outbox.counts()["sent"] == 2


def test_a_permanent_slack_error_is_reported_not_retried(start: Start,
                                                         slack: SlackStandIn) -> None:
    failed: list[str] = []
    delivery = start("bot", on_failed=lambda row, why: failed.append(why))
    slack.api_error("channel_not_found")
    delivery.put("bad/0")
    delivery.put("good/0")
    wait_for(delivery.delivered, timeout=5)
    assert [c.body["text"] for c in slack.calls("/api/")] == ["text of bad/0", "text of good/0"]
    assert failed == ["Slack error channel_not_found"]
    assert delivery.outbox.row("bad/0").state == "failed"  # type: ignore[union-attr]


def test_a_hung_slack_times_out_and_is_retried(start: Start, slack: SlackStandIn,
                                              caplog: pytest.LogCaptureFixture) -> None:
    delivery = start("bot", timeout=0.3)
    slack.hang(10, count=1)
    put_at = time.monotonic()  # before the first send: the stand-in may note it late
    delivery.put("inc/0")
    wait_for(delivery.delivered, timeout=5)
    hung, answered = slack.calls(answered=None)
    assert hung.status == 0 and answered.status == 200
    assert answered.monotonic - put_at >= 0.3  # retried after the timeout, not at once
    assert "timed out" in caplog.text


def test_an_outage_delays_but_loses_nothing(start: Start, slack: SlackStandIn) -> None:
    delivery = start("bot")
    slack.down()
    for n in range(5):
        delivery.put(f"i{n}/0")
        delivery.put(f"i{n}/1", thread_of=f"i{n}")
    wait_for(lambda: "Connection refused" in delivery.dispatcher.last_error, timeout=5)
    slack.up()
    wait_for(delivery.delivered, timeout=10)
    texts = [c.body["blocks"][0]["text"]["text"] for c in slack.calls("/api/")]
    assert texts == [f"i{n}/{k}" for n in range(5) for k in (0, 1)]


ABANDONED_HUB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from unistack.alerts.dispatcher import DispatchConfig, Dispatcher, OnFailed
    from unistack.alerts.outbox import Outbox
    from unistack.alerts.records import Message
    from unistack.alerts.slack import WebhookTransport
    outbox = Outbox(Path(sys.argv[1]), 100)
    config = DispatchConfig(channel_interval=0.05, retry_max=0.3, retry_initial=0.05,
                            jitter=0.2, lease=1, poll=5.0)
    dispatcher = Dispatcher(outbox, WebhookTransport(sys.argv[2], 0.5, str), config)
    for n in range(5):
        outbox.put(Message(f"m/{n}", "webhook", "m", "post", {"text": f"m/{n}"}))
    dispatcher.start()
    while not dispatcher.last_error:
        time.sleep(0.01)
    print("attempted", flush=True)
    time.sleep(60)
""")


def test_the_next_hub_delivers_what_a_killed_hub_left(start: Start, slack: SlackStandIn,
                                                      tmp_path: Path) -> None:
    db = tmp_path / "var" / "data" / "alerts" / "outbox.sqlite"
    slack.down()
    hub = subprocess.Popen([sys.executable, "-c", ABANDONED_HUB, str(db), slack.webhook_url],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert hub.stdout is not None and hub.stdout.readline() == "attempted\n"
    finally:
        hub.kill()
        hub.wait(5)
    slack.up()
    delivery = start("webhook")
    assert delivery.settings.alerts_db == db
    wait_for(delivery.delivered, timeout=10)
    assert [c.body["text"] for c in slack.calls(WEBHOOK_PATH)] == [f"m/{n}" for n in range(5)]
