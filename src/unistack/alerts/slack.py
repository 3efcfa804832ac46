"""Slack transports: send one outbox Message with slack-sdk and say what happened.

Two modes, chosen by Settings.slack_mode:
- bot (SLACK_BOT_TOKEN): chat.postMessage to the message's channel; a message with
  `thread_of` is a reply in the incident's thread; an "update" is chat.update of the
  incident's first message. A reply or update whose parent is unknown (dropped, failed)
  is posted as a new message, so nothing is lost.
- webhook (SLACK_WEBHOOK_URL): every message, "update" included, is a new message in
  the webhook's channel (webhooks return no ts: no threads, no edits).

slack-sdk's own retry handlers are turned off (`retry_handlers=[]`; None would mean its
default ConnectionErrorRetryHandler, and its 429 handler would time.sleep on our
thread): the outbox owns retrying. Every outcome is classified into one `Result`.
Error texts are redacted: no token or webhook URL ever reaches a Result or a log line.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient, WebhookResponse

from unistack.alerts.outbox import Thread
from unistack.alerts.records import Message
from unistack.config import Settings

SENT = "sent"
RETRY_AFTER = "retry_after"  # 429: wait `retry_after` seconds, then the same again
TRANSIENT = "transient"  # 5xx, timeout, connection refused/reset: back off and retry
PERMANENT = "permanent"  # retrying cannot help: give up and report

# Slack `ok: false` errors that mean "try again later"; every other error is permanent
# (channel_not_found, not_in_channel, is_archived, invalid_auth, not_authed,
# token_revoked, account_inactive, missing_scope, msg_too_long, invalid_blocks,
# no_text, message_not_found, cant_update_message, ...): the same request fails again.
_TRANSIENT_ERRORS = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "team_added_to_org", "ratelimited",
})
_DEFAULT_RETRY_AFTER = 1.0  # a 429 without a usable Retry-After header

Redact = Callable[[str], str]


class Result(NamedTuple):
    """What one attempt to send a message came to."""

    outcome: str  # SENT, RETRY_AFTER, TRANSIENT or PERMANENT
    ts: str = ""  # SENT in bot mode: the message's ts
    channel: str = ""  # SENT in bot mode: the channel id Slack put it in
    retry_after: float = 0.0  # RETRY_AFTER: seconds
    error: str = ""  # why it was not sent (redacted)


class Transport(Protocol):
    """Sends one message; never raises for a Slack or network failure."""

    threads: bool  # replies and updates go to the incident's first message

    def send(self, message: Message, parent: Thread | None) -> Result: ...


def retry_after_seconds(headers: Mapping[str, Any]) -> float:
    """The Retry-After of a 429 in seconds (Slack sends whole seconds)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                break
    return _DEFAULT_RETRY_AFTER


def classify_http(status: int, headers: Mapping[str, Any], body: str) -> Result:
    """Result of an HTTP answer that is not a success."""
    if status == 429:
        return Result(RETRY_AFTER, retry_after=retry_after_seconds(headers),
                      error="HTTP 429 rate limited")
    error = f"HTTP {status} {body[:200]}".strip()
    if status >= 500 or status == 408:
        return Result(TRANSIENT, error=error)
    return Result(PERMANENT, error=error)


def classify_exception(error: Exception, redact: Redact) -> Result:
    """Result of a failure to talk to Slack at all."""
    text = redact(f"{type(error).__name__}: {error}")
    if isinstance(error, OSError | http.client.HTTPException):
        return Result(TRANSIENT, error=text)  # refused, reset, timed out, cut short
    return Result(PERMANENT, error=text)  # e.g. SlackRequestError: a bad request of ours


def scrub(value: Any, redact: Redact) -> Any:
    """VALUE (a Slack payload) with every string redacted: no secret leaves in a message."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [scrub(item, redact) for item in value]
    if isinstance(value, dict):
        return {key: scrub(item, redact) for key, item in value.items()}
    return value


class _Redacting(logging.Filter):
    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        return True


def sdk_logger(name: str, redact: Redact) -> logging.Logger:
    """The logger handed to slack-sdk: quiet, and redacting.

    Its DEBUG lines carry the webhook URL, and its ERROR line on a failed request
    repeats what the dispatcher logs once, redacted; so only CRITICAL passes.
    """
    logger = logging.getLogger(f"unistack.alerts.sdk.{name}")
    logger.setLevel(logging.CRITICAL)
    if not logger.filters:
        logger.addFilter(_Redacting(redact))
    return logger


class WebhookTransport:
    """Incoming-webhook mode: every message is a new message in the webhook's channel."""

    threads = False

    def __init__(self, url: str, timeout: float, redact: Redact) -> None:
        self._redact = redact
        # urllib takes float seconds; slack-sdk's hint says int.
        self._client = WebhookClient(url, timeout=timeout,  # type: ignore[arg-type]
                                     retry_handlers=[], logger=sdk_logger("webhook", redact))

    def send(self, message: Message, parent: Thread | None) -> Result:
        try:
            response: WebhookResponse = self._client.send_dict(
                scrub(message.payload, self._redact))
        except Exception as error:  # every failure becomes a Result
            return classify_exception(error, self._redact)
        if response.status_code == 200:
            return Result(SENT)
        body = self._redact(str(response.body or ""))
        return classify_http(response.status_code, response.headers, body)


class BotTransport:
    """Bot-token mode: chat.postMessage, thread replies, chat.update of the parent."""

    threads = True

    def __init__(self, token: str, api_url: str, timeout: float, redact: Redact) -> None:
        self._redact = redact
        self._client = WebClient(token=token, base_url=api_url,
                                 timeout=timeout,  # type: ignore[arg-type]  # float is fine
                                 retry_handlers=[], logger=sdk_logger("web", redact))

    def send(self, message: Message, parent: Thread | None) -> Result:
        payload = scrub(message.payload, self._redact)
        try:
            response = self._call(message, parent, payload)
        except SlackApiError as error:
            return self._classify(error.response)
        except Exception as error:  # every failure becomes a Result
            return classify_exception(error, self._redact)
        return Result(SENT, ts=str(response.get("ts", "")),
                      channel=str(response.get("channel", "")))

    def _call(self, message: Message, parent: Thread | None,
              payload: dict[str, Any]) -> SlackResponse:
        if parent is None:  # a first message, or a reply/update whose parent was lost
            return self._client.chat_postMessage(channel=message.channel, **payload)
        if message.action == "update":
            return self._client.chat_update(channel=parent.channel, ts=parent.ts, **payload)
        return self._client.chat_postMessage(channel=parent.channel, thread_ts=parent.ts,
                                             **payload)

    def _classify(self, response: SlackResponse) -> Result:
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error", ""))
        if response.status_code == 200 and error:
            if error == "ratelimited":
                return Result(RETRY_AFTER, retry_after=retry_after_seconds(response.headers),
                              error="ratelimited")
            outcome = TRANSIENT if error in _TRANSIENT_ERRORS else PERMANENT
            return Result(outcome, error=f"Slack error {self._redact(error)}")
        body = error or str(response.data or "")
        return classify_http(response.status_code, response.headers, self._redact(body))


def build_transport(settings: Settings) -> Transport | None:
    """The transport of SETTINGS.slack_mode; None when Slack is off."""
    if settings.slack_mode == "bot":
        return BotTransport(settings.slack_bot_token, settings.slack_api_url,
                            settings.slack_timeout, settings.redact)
    if settings.slack_mode == "webhook":
        return WebhookTransport(settings.slack_webhook_url, settings.slack_timeout,
                                settings.redact)
    return None

