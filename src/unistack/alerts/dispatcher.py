"""The dispatcher: one daemon thread that moves messages from the outbox to Slack.

It owns when a message is tried: each lane (a Message.channel) sends its oldest pending
message first, at most one message per `channel_interval` per lane; a 429 holds the
lane for its Retry-After; 5xx, timeouts and connection errors back off exponentially,
jittered, capped at `retry_max`; a permanent error fails the message and reports it.
In bot mode a reply or an update waits until its incident's first message has a ts.
The hub never waits for it: `wake()` only sets an event. `deliver_once(now)` is one
pass, so unit tests drive it with a fake clock and no thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from unistack.alerts.outbox import Outbox, Row, Thread
from unistack.alerts.slack import PERMANENT, RETRY_AFTER, SENT, Result, Transport
from unistack.config import Settings

log = logging.getLogger(__name__)

OnFailed = Callable[[Row, str], None]


class DispatchConfig(NamedTuple):
    """Delivery timings (seconds), built from Settings only (dispatch_config)."""

    channel_interval: float  # Slack: about 1 message per second per channel
    retry_max: float  # the backoff cap
    retry_initial: float  # the first backoff
    jitter: float  # backoff spread, a fraction either way
    lease: float  # a claimed message is due again after this if we died mid-send
    poll: float  # longest sleep: another process may have put messages


def dispatch_config(settings: Settings) -> DispatchConfig:
    # The lease outlives the slowest attempt (slack-sdk's timeout is per socket operation).
    return DispatchConfig(channel_interval=settings.alert_channel_interval,
                          retry_max=settings.alert_retry_max,
                          retry_initial=min(1.0, settings.alert_retry_max), jitter=0.2,
                          lease=max(30.0, 4 * settings.slack_timeout), poll=5.0)


class DeliveryStatus(NamedTuple):
    """For the dashboard and /status: how delivery to Slack is doing."""

    pending: int
    failed: int
    dropped: int
    last_success: float | None  # epoch seconds of the last message Slack accepted
    last_error: str  # the last failure (redacted), "" after a success


class Dispatcher:
    """Delivers the outbox's due messages in order, rate-limited, retried."""

    def __init__(self, outbox: Outbox, transport: Transport,
                 config: DispatchConfig,
                 clock: Callable[[], float] = time.time,
                 on_failed: OnFailed | None = None) -> None:
        self._outbox = outbox
        self._transport = transport
        self._config = config
        self._clock = clock
        self._on_failed = on_failed
        self._rng: Callable[[], float] = random.random
        self._lane_free: dict[str, float] = {}  # lane -> earliest next attempt
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_success: float | None = None
        self.last_error = ""

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slack-dispatcher",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something was put: look now (never blocks)."""
        self._wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the attempt in flight (at most one transport timeout)."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()  # before the pass: a wake() during it is not lost
            try:
                now = self._clock()
                self.deliver_once(now)
                delay = self.next_delay(self._clock())
            except Exception:  # a broken disk must not kill delivery for good
                log.exception("alert dispatcher pass failed")
                delay = self._config.poll
            self._wakeup.wait(delay)

    # -- one pass --------------------------------------------------------------------

    def deliver_once(self, now: float) -> int:
        """Try the due head of every free lane once; return how many were tried."""
        tried = 0
        for row in self._outbox.next_due(now):
            if self._lane_free.get(row.message.channel, 0.0) > now or self._waits(row):
                continue
            if not self._outbox.claim(row.id, now, now + self._config.lease):
                continue  # another sender (a second hub) took it
            self._lane_free[row.message.channel] = now + self._config.channel_interval
            self._attempt(row)
            tried += 1
        return tried

    def next_delay(self, now: float) -> float:
        """Seconds until some lane may send, at most `poll`.

        A reply waiting for its parent is left out: it can go only after the parent's
        lane sends, which wakes the loop anyway (counting it would spin the loop)."""
        times = [max(row.next_attempt, self._lane_free.get(row.message.channel, 0.0))
                 for row in self._outbox.heads() if not self._waits(row)]
        return max(0.0, min([*times, now + self._config.poll]) - now)

    def status(self) -> DeliveryStatus:
        counts = self._outbox.counts()
        return DeliveryStatus(counts["pending"], counts["failed"], counts["dropped"],
                              self.last_success, self.last_error)

    def _waits(self, row: Row) -> bool:
        """A bot-mode reply or update waits while its thread parent is still pending."""
        return (self._transport.threads and self._needs_parent(row)
                and self._outbox.parent_pending(row))

    @staticmethod
    def _needs_parent(row: Row) -> bool:
        return bool(row.message.thread_of) or row.message.action == "update"

    def _parent(self, row: Row) -> Thread | None:
        if not (self._transport.threads and self._needs_parent(row)):
            return None
        return self._outbox.thread(row.message.thread_of or row.message.incident)

    def _attempt(self, row: Row) -> None:
        parent = self._parent(row)
        result = self._transport.send(row.message, parent)
        done = self._clock()  # the attempt may have taken a whole timeout
        # Slack counts arrivals: the interval runs from the answer, so no two requests
        # of a lane can arrive closer than channel_interval, whatever the latency.
        lane = row.message.channel
        self._lane_free[lane] = max(self._lane_free[lane], done + self._config.channel_interval)
        if result.outcome == SENT:
            self._sent(row, result, parent, done)
        elif result.outcome == PERMANENT:
            self._failed(row, result.error)
        elif result.outcome == RETRY_AFTER:
            self._hold(row, result, done + result.retry_after)
        else:
            self._hold(row, result, done + self.backoff(row.attempts + 1))

    # -- outcomes --------------------------------------------------------------------

    def _sent(self, row: Row, result: Result, parent: Thread | None, done: float) -> None:
        # A new top-level message becomes the incident's thread; remembered before
        # pending -> sent, so a reply never sees its parent sent with no thread known.
        if result.ts and parent is None:
            incident = row.message.thread_of or row.message.incident
            self._outbox.remember_thread(incident, result.channel or row.message.channel,
                                         result.ts)
        self._outbox.mark_sent(row.id, result.ts or None)
        self.last_success, self.last_error = done, ""

    def _failed(self, row: Row, reason: str) -> None:
        # pending -> failed: the same request would fail again
        self._outbox.fail(row.id, reason)
        self.last_error = reason
        log.error("Slack message %s failed for good: %s", row.message.key, reason)
        if self._on_failed is not None:
            self._on_failed(row, reason)

    def _hold(self, row: Row, result: Result, until: float) -> None:
        # pending -> pending, due at UNTIL; the lane waits behind it to keep the order
        self._outbox.defer(row.id, until, result.error)
        lane = row.message.channel
        self._lane_free[lane] = max(self._lane_free.get(lane, 0.0), until)
        self.last_error = result.error
        log.warning("Slack message %s not sent (%s, attempt %d): retry in %.1f s",
                    row.message.key, result.error, row.attempts + 1, until - self._clock())

    def backoff(self, attempt: int) -> float:
        """Delay after failed ATTEMPT (1, 2, ...): doubling, jittered, capped at retry_max."""
        config = self._config
        base = config.retry_initial * 2.0 ** min(attempt - 1, 64)
        spread = 1 + config.jitter * (2 * self._rng() - 1)
        return float(min(config.retry_max, base * spread))
