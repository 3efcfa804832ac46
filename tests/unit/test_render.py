"""alerts.render: notices become Slack Block Kit messages within Slack's limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unistack.alerts.records import OPENED, RESOLVED, SILENCED, UPDATED, Message, Notice
from unistack.alerts.render import (
    BLOCKS_MAX,
    FIELD_MAX,
    SECTION_MAX,
    TEXT_MAX,
    RenderConfig,
    duration,
    escape,
    fit,
    render,
)
from unistack.config import load_settings

T0 = 1_700_000_000.0
SECRET = "s3cr3t-redis-password-value"
BOT = RenderConfig("bot", {"info": "#info", "warning": "#warn", "critical": "#crit"},
                   "<!here>", (SECRET,), "unistack on box1 · /srv/unistack")
WEBHOOK = BOT._replace(mode="webhook")


def notice(kind: str = OPENED, severity: str = "critical", **fields: Any) -> Notice:
    base: dict[str, Any] = {
        "incident": "service:redis@1700000000.000", "kind": kind, "severity": severity,
        "service": "redis", "title": "redis crashed", "since": T0, "ts": T0 + 180,
        "what": ("12:00:00 redis crashed: process 42 exited",),
        "done": "supervisord respawned it",
        "next_step": "read /srv/var/log/incidents/redis-1.txt; run scripts/diagnose_container.sh",
        "incident_file": "/srv/var/log/incidents/redis-1.txt", "seq": 0}
    return Notice(**{**base, **fields})


def texts(message: Message) -> str:
    return json.dumps(message.payload)


def section_texts(message: Message) -> list[str]:
    blocks = message.payload["blocks"]
    return [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]


def test_critical_opened_is_a_top_level_post_with_a_mention() -> None:
    [message] = render(notice(), BOT)
    assert (message.key, message.channel, message.action, message.thread_of) == (
        "service:redis@1700000000.000/0", "#crit", "post", "")
    assert message.payload["text"].startswith("<!here> :red_circle: *redis crashed*")
    body = texts(message)
    for expected in ("What happened", "What the hub did", "supervisord respawned it",
                     "Next step", "`scripts/diagnose_container.sh`",
                     "`/srv/var/log/incidents/redis-1.txt`", "2023-11-14 22:13:20 UTC",
                     "for 3 min", "unistack on box1"):
        assert expected in body


@pytest.mark.parametrize(("severity", "channel"), [("warning", "#warn"), ("info", "#info")])
def test_other_severities_go_to_their_channel_without_a_mention(severity: str,
                                                                channel: str) -> None:
    [message] = render(notice(severity=severity), BOT)
    assert message.channel == channel and "<!here>" not in texts(message)


def test_mention_only_on_opened() -> None:
    for kind in (UPDATED, RESOLVED):
        assert all("<!here>" not in texts(m) for m in render(notice(kind, seq=1), BOT))
    assert "<!here>" not in texts(render(notice(resolved=True), BOT)[0])


def test_updates_reply_in_the_incident_thread() -> None:
    [message] = render(notice(UPDATED, seq=2), BOT)
    assert (message.key, message.thread_of, message.action) == (
        "service:redis@1700000000.000/2", "service:redis@1700000000.000", "post")


def test_resolved_replies_and_updates_the_parent() -> None:
    reply, update = render(notice(RESOLVED, title="redis crashed: resolved", seq=3,
                                  resolved=True), BOT)
    assert reply.thread_of == update.thread_of == "service:redis@1700000000.000"
    assert update.action == "update" and update.key == "service:redis@1700000000.000/3/update"
    assert ":white_check_mark:" in texts(update) and "resolved after 3 min" in texts(update)


def test_silence_notices_are_top_level_posts() -> None:
    [message] = render(notice(SILENCED, severity="warning", incident="silence:redis@1.000"),
                       BOT)
    assert message.thread_of == "" and ":no_bell:" in message.payload["text"]


def test_webhook_mode_posts_everything_plainly() -> None:
    for kind in (OPENED, UPDATED, RESOLVED):
        [message] = render(notice(kind, seq=1), WEBHOOK)
        assert (message.channel, message.action, message.thread_of) == ("webhook", "post", "")


def test_free_text_is_escaped_but_the_mention_is_not() -> None:
    [message] = render(notice(title="a <b> & c", what=("x <!channel> & y",)), BOT)
    body = texts(message)
    assert "a &lt;b&gt; &amp; c" in body and "x &lt;!channel&gt; &amp; y" in body
    assert "<!channel>" not in body and message.payload["text"].startswith("<!here> ")


def test_long_text_is_cut_to_slacks_limits() -> None:
    huge = notice(title="t" * 50_000, what=tuple("&" * 500 for _ in range(100)),
                  done="d" * 10_000, incident_file="/f" * 3000, service="s" * 5000)
    for message in render(huge, BOT):
        assert len(message.payload["text"]) <= TEXT_MAX
        assert len(message.payload["blocks"]) <= BLOCKS_MAX
        for text in section_texts(message):
            assert len(text) <= SECTION_MAX
        for block in message.payload["blocks"]:
            assert all(len(f["text"]) <= FIELD_MAX for f in block.get("fields", []))
    what = next(t for t in section_texts(render(huge, BOT)[0]) if "What happened" in t)
    assert what.endswith("&amp;…")


def test_fit_never_splits_an_entity() -> None:
    assert fit("ab&amp;cd", 5) == "ab…"
    assert fit("abc", 3) == "abc"
    assert escape("<&>") == "&lt;&amp;&gt;"


def test_no_secret_in_any_payload() -> None:
    leaky = notice(title=f"redis AUTH {SECRET} failed", what=(f"password={SECRET}",),
                   done="token xoxb-1234-abcdef", next_step=f"see {SECRET}",
                   incident=f"rule:X:{SECRET}", members=(SECRET,))
    for config in (BOT, WEBHOOK):
        for message in render(leaky, config):
            assert SECRET not in texts(message) and "xoxb-1234" not in texts(message)


def test_durations() -> None:
    assert [duration(s) for s in (5, 180, 3600, 7500, 90_000, 86_400)] == [
        "5 s", "3 min", "1 h", "2 h 5 min", "1 d 1 h", "1 d"]


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"UNISTACK_HOME": str(tmp_path),
                                      "SLACK_BOT_TOKEN": "xoxb-0000-secretsecret",
                                      "SLACK_CHANNEL_CRITICAL": "#pager"})
    config = RenderConfig.from_settings(settings, host="box1")
    assert config.mode == "bot" and config.channels["critical"] == "#pager"
    assert config.mention == "<!here>" and "xoxb-0000-secretsecret" in config.secrets
    assert "box1" in config.context
