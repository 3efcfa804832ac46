"""Notices become Slack messages: Block Kit payloads with a `text` fallback, the channel
of the incident's severity, a mention on a critical OPENED, and (bot mode) replies in
the incident's thread plus a `chat.update` of its first message when it resolves.
Webhook mode cannot thread or update: every notice is a new post.

Pure. Free text is redacted (secret values and token patterns), then escaped as Slack
asks (&, <, >); only the configured mention stays markup. Everything is cut to Slack's
limits: text 40,000 characters, a section 3,000, a field 2,000, 50 blocks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from unistack.alerts.records import (
    DROPPED,
    OPENED,
    REMINDER,
    RESOLVED,
    SILENCE_ENDED,
    SILENCED,
    TEST,
    UPDATED,
    Message,
    Notice,
)
from unistack.config import Settings
from unistack.redaction import redact

TEXT_MAX = 40_000
SECTION_MAX = 3_000
FIELD_MAX = 2_000
BLOCKS_MAX = 50
WEBHOOK = "webhook"  # the channel of every message in webhook mode

_SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":warning:",
                   "info": ":information_source:"}
_KIND_EMOJI = {UPDATED: ":arrows_counterclockwise:", REMINDER: ":alarm_clock:",
               RESOLVED: ":white_check_mark:", SILENCED: ":no_bell:", SILENCE_ENDED: ":bell:",
               TEST: ":test_tube:", DROPPED: ":wastebasket:"}
_THREADED = frozenset({UPDATED, REMINDER, RESOLVED})  # bot mode: replies in the thread
_DIAGNOSE = "scripts/diagnose_container.sh"


class RenderConfig(NamedTuple):
    mode: str  # "bot" (threads, updates) or anything else: webhook posts
    channels: Mapping[str, str]  # severity -> channel (bot mode)
    mention: str  # e.g. "<!here>"; empty for none
    secrets: tuple[str, ...] = ()  # values no payload may contain
    context: str = "unistack"  # the stack and host, shown under every message

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None) -> RenderConfig:
        channels = {"info": settings.slack_channel_info,
                    "warning": settings.slack_channel_warning,
                    "critical": settings.slack_channel_critical}
        where = f"unistack on {host or socket.gethostname()} · {settings.unistack_home}"
        return cls(settings.slack_mode, channels, settings.slack_mention_critical,
                   settings.secret_values(), where)


def render(notice: Notice, config: RenderConfig) -> list[Message]:
    """The messages for one notice: one post, plus the parent's update for RESOLVED."""
    notice = _redacted(notice, config.secrets)
    key = f"{notice.incident}/{notice.seq}"
    payload = {"text": _fallback(notice, config), "blocks": _blocks(notice, config)}
    if config.mode != "bot":
        return [Message(key, WEBHOOK, notice.incident, "post", payload)]
    channel = config.channels.get(notice.severity) or config.channels.get("warning", "")
    thread = notice.incident if notice.kind in _THREADED else ""
    messages = [Message(key, channel, notice.incident, "post", payload, thread)]
    if notice.kind == RESOLVED:
        parent = {"text": _fallback(notice, config), "blocks": _parent_blocks(notice, config)}
        messages.append(Message(f"{key}/update", channel, notice.incident, "update", parent,
                                notice.incident))
    return messages


def _redacted(notice: Notice, secrets: tuple[str, ...]) -> Notice:
    def clean(text: str) -> str:
        return redact(text, secrets)

    return notice._replace(
        title=clean(notice.title), service=clean(notice.service), done=clean(notice.done),
        next_step=clean(notice.next_step), incident_file=clean(notice.incident_file),
        what=tuple(map(clean, notice.what)), members=tuple(map(clean, notice.members)))


def escape(text: str) -> str:
    """Slack's three control characters, as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """TEXT cut to LIMIT characters with "…", never inside an entity such as &amp;."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _mention(notice: Notice, config: RenderConfig) -> str:
    wanted = notice.kind == OPENED and notice.severity == "critical" and not notice.resolved
    return f"{config.mention} " if wanted and config.mention else ""


def _emoji(notice: Notice) -> str:
    if notice.resolved:
        return ":white_check_mark:"
    if notice.kind in _KIND_EMOJI:
        return _KIND_EMOJI[notice.kind]
    return _SEVERITY_EMOJI.get(notice.severity, ":warning:")


def _headline(notice: Notice, config: RenderConfig) -> str:
    return f"{_mention(notice, config)}{_emoji(notice)} *{escape(notice.title)}*"


def _fallback(notice: Notice, config: RenderConfig) -> str:
    text = f"{_headline(notice, config)} [{notice.severity}] {escape(notice.service)}"
    return fit(f"{text}, since {_since(notice)}", TEXT_MAX)


def _since(notice: Notice) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(notice.since))
    return f"{started} (for {duration(notice.ts - notice.since)})"


def duration(seconds: float) -> str:
    """A short human duration: "45 s", "3 min", "2 h 5 min", "1 d 3 h"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text, SECTION_MAX)}}


def _field(name: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": fit(f"*{name}*\n{value}", FIELD_MAX)}


def _fields(notice: Notice) -> dict[str, Any]:
    fields = [_field("Service", escape(notice.service)), _field("Severity", notice.severity),
              _field("Since", _since(notice))]
    if notice.members:
        fields.append(_field("Also affected", escape(", ".join(notice.members))))
    if notice.incident_file:
        fields.append(_field("Incident file", f"`{escape(notice.incident_file)}`"))
    return {"type": "section", "fields": fields}


def _context(notice: Notice, config: RenderConfig) -> dict[str, Any]:
    where = escape(redact(f"{config.context} · {notice.incident} #{notice.seq}",
                          config.secrets))
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(where, SECTION_MAX)}]}


def _next_step(notice: Notice) -> str:
    step = escape(notice.next_step)
    if notice.incident_file:
        path = escape(notice.incident_file)
        step = step.replace(path, f"`{path}`")
    return step.replace(_DIAGNOSE, f"`{_DIAGNOSE}`")


def _blocks(notice: Notice, config: RenderConfig) -> list[dict[str, Any]]:
    blocks = [_section(_headline(notice, config)), _fields(notice)]
    if notice.what:
        blocks.append(_section("*What happened*\n" + escape("\n".join(notice.what))))
    if notice.done:
        blocks.append(_section(f"*What the hub did*\n{escape(notice.done)}"))
    if notice.next_step:
        blocks.append(_section(f"*Next step*\n{_next_step(notice)}"))
    blocks.append(_context(notice, config))
    return blocks[:BLOCKS_MAX]


def _parent_blocks(notice: Notice, config: RenderConfig) -> list[dict[str, Any]]:
    """The incident's first message once it is over: marked resolved, details in thread."""
    headline = f":white_check_mark: *{escape(notice.title)}*"
    lasted = f"resolved after {duration(notice.ts - notice.since)}; details in the thread"
    return [_section(f"{headline}\n{lasted}"), _fields(notice), _context(notice, config)]
