"""The hub's alerting: events and Prometheus alerts in, Slack messages out, never blocking.

`Alerts.on_event` is an EventLog subscriber: it only enqueues. One thread ("alerts")
feeds the router, renders what is due into the outbox and wakes the dispatcher; it
sleeps exactly until the router's next wakeup or the next event. A second thread polls
Prometheus's firing alerts (an HTTP call may take its whole timeout). The router's
state (open incidents, silences) is saved in the outbox's SQLite file after every
change, so a new hub goes on where the old one stopped; a notice re-made after a crash
has the same idempotency key, so it is never sent twice.

With Slack off (no webhook, no bot token), incidents are still routed and shown by
`alerts`; nothing is queued, and the hub says so once at start.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from unistack.alerts.dispatcher import Dispatcher, dispatch_config
from unistack.alerts.outbox import Outbox, Row
from unistack.alerts.prom_alerts import SOURCE_FINGERPRINT, PrometheusAlerts
from unistack.alerts.records import DROPPED, TEST, Message, Notice
from unistack.alerts.render import RenderConfig, render
from unistack.alerts.router import Router, RouterConfig
from unistack.alerts.slack import build_transport
from unistack.config import Settings
from unistack.event import Event, Kind, Severity

log = logging.getLogger("unistack.alerts")

_STATE = "router"
_IDLE = 60.0  # longest sleep with nothing scheduled
_HELD_RETRY = 1.0  # seconds between two tries of a full outbox
_HELD_MAX = 1000  # messages held in memory while the outbox cannot be written
_RESYNC_AFTER = 10.0  # answered polls before alerts left open by an earlier hub are checked


class Alerts:
    """Router + outbox + dispatcher + Prometheus poller of one hub."""

    def __init__(self, settings: Settings, prometheus_ready: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self._settings, self._clock = settings, clock
        self._prometheus_ready = prometheus_ready
        self._render = RenderConfig.from_settings(settings)
        self.outbox = Outbox(settings.alerts_db, settings.alert_outbox_max, clock,
                             drop_notice=self._drop_notice)
        config = RouterConfig.from_settings(settings)
        saved = self.outbox.load_state(_STATE)
        self.router = Router.restore(config, saved) if saved else Router(config)
        transport = build_transport(settings)
        self.dispatcher = Dispatcher(self.outbox, transport, dispatch_config(settings), clock,
                                     on_failed=self._failed) if transport else None
        self._prometheus = PrometheusAlerts(f"http://{settings.prometheus_host}:{settings.prometheus_port}",
                                            timeout=min(2.0, settings.alert_prometheus_poll))
        self._inbox: queue.Queue[Event | None] = queue.Queue()
        self._held: list[Message] = []  # rendered, not in the outbox yet (a full disk)
        self.held_since = 0.0
        self._lock = threading.Lock()  # the router: alert thread vs API calls
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def slack_mode(self) -> str:
        return self._settings.slack_mode if self.dispatcher else "off"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self.dispatcher is None:
            log.warning("Slack alerts are off: set SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN in %s;"
                        " incidents are still recorded (`manage_production.sh alerts`)",
                        self._settings.env_file)
        else:
            log.info("Slack alerts on (%s mode)", self._settings.slack_mode)
            self.dispatcher.start()
        for target, name in ((self._route_loop, "alerts"), (self._poll_loop, "prom-alerts")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Briefly: supervisord gives the hub 1 s after SIGTERM. Everything queued is in
        the outbox already (committed), and the next hub sends what is left; the file is
        not closed under a send that may still be in flight."""
        self._stop.set()
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(0.3)
        if self.dispatcher is not None:
            self.dispatcher.stop(0.3)

    def on_event(self, event: Event) -> None:
        """EventLog subscriber: called on the emitting thread, so it only enqueues."""
        self._inbox.put(event)

    # --- the alert thread ------------------------------------------------------------

    def _route_loop(self) -> None:
        while not self._stop.is_set():
            event = self._next_event()
            try:
                with self._lock:
                    if event is not None:
                        self.router.handle(event, self._clock())
                    self._flush()
            except Exception:  # a full disk must not end alerting for good
                log.exception("alert routing failed")

    def _next_event(self) -> Event | None:
        with self._lock:
            wakeup = self.router.next_wakeup(self._clock())
        timeout = _IDLE if wakeup is None else max(0.0, wakeup - self._clock())
        if self._held:
            timeout = min(timeout, _HELD_RETRY)  # try the outbox again soon
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _flush(self) -> None:
        """Queue every notice due now; save the router's state (with the lock held)."""
        now = self._clock()
        notices: list[Notice] = []
        while True:
            due = self.router.due(now)
            if not due:
                break
            notices += due
        for notice in notices:
            self._queue(notice)
        if self._put_held():
            try:
                self.outbox.save_state(_STATE, self.router.snapshot())
            except (sqlite3.Error, OSError) as exc:
                log.error("alert state not saved (%s); saved once the disk takes writes", exc)

    def _queue(self, notice: Notice) -> None:
        log.info("alert %s: %s (%s)", notice.kind, notice.title, notice.severity)
        if self.dispatcher is None:
            return
        self._held += render(notice, self._render)
        self._put_held()
        self.dispatcher.wake()

    def _put_held(self) -> bool:
        """Put messages held in memory into the outbox, in order; on a full disk they stay
        held (the newest _HELD_MAX) and go in, once each, when it takes writes again.
        True when nothing is held."""
        while self._held:
            try:
                self.outbox.put(self._held[0])
            except (sqlite3.Error, OSError) as exc:
                if not self.held_since:
                    log.error("alert outbox not writable (%s); messages held in memory", exc)
                    self.held_since = self._clock()
                del self._held[:-_HELD_MAX]
                return False
            self._held.pop(0)
        if self.held_since:
            log.info("alert outbox writable again; held messages queued")
        self.held_since = 0.0
        return True

    # --- Prometheus ------------------------------------------------------------------

    def _poll_loop(self) -> None:
        """Poll while the prometheus service is READY: when it is not, the hub's own
        incident for it says so, and its alerts keep their state meanwhile."""
        interval, answered_since = self._settings.alert_prometheus_poll, 0.0
        while not self._stop.wait(interval):
            if not self._prometheus_ready():
                continue
            now = self._clock()
            for event in self._prometheus.poll(now):
                self._inbox.put(event)
            answered_since = answered_since or now
            if answered_since and now - answered_since >= _RESYNC_AFTER:
                self._resync_rules(now)
                answered_since = -1.0  # once per hub

    def _resync_rules(self, now: float) -> None:
        """Close what an earlier hub left open that Prometheus no longer fires: this hub's
        poller never saw those alerts fire, so it would never see them resolve."""
        firing = {alert.fingerprint for alert in self._prometheus.tracker.firing}
        with self._lock:
            stale = [(fp, service) for fp, service in self.router.open_parts("rule:")
                     if fp not in firing]
            stale += self.router.open_parts(SOURCE_FINGERPRINT)
        for fingerprint, service in stale:
            kind = Kind.ALERT_SOURCE_UP if fingerprint == SOURCE_FINGERPRINT \
                else Kind.ALERT_RESOLVED
            self._inbox.put({"ts": now, "service": service, "kind": kind,
                             "severity": Severity.INFO,
                             "detail": "no longer firing", "fingerprint": fingerprint})

    # --- operator actions ------------------------------------------------------------

    def silence(self, service: str, seconds: float, reason: str, quiet: bool = False) -> float:
        """Silence SERVICE for SECONDS; returns when it ends (epoch seconds)."""
        now = self._clock()
        with self._lock:
            self.router.silence(service, now + seconds, reason, now, quiet)
            self._flush()
        return now + seconds

    def unsilence(self, service: str) -> bool:
        """Lift SERVICE's silence; False when it had none."""
        with self._lock:
            lifted = self.router.unsilence(service, self._clock())
            self._flush()
        return lifted

    def test(self) -> str:
        """Queue a test message; its idempotency key (to follow it in `status`)."""
        now = self._clock()
        notice = Notice(f"test@{now:.3f}", TEST, "info", "stack", "test alert from unistack",
                        now, now, ("`manage_production.sh alert-test` was run",))
        key = render(notice, self._render)[0].key
        self._queue(notice)
        return key

    def status(self) -> dict[str, Any]:
        """Open incidents, silences and the outbox, for `alerts` and the dashboard."""
        with self._lock:
            incidents = [view._asdict() for view in self.router.open_incidents()]
            silences = [dataclasses.asdict(silence) for silence in self.router.silences()]
        pending = [_row_summary(row) for row in self.outbox.pending()]
        delivery = self.dispatcher.status()._asdict() if self.dispatcher else {}
        return {"slack": self.slack_mode, "incidents": incidents, "silences": silences,
                "outbox": {"counts": self.outbox.counts(), "pending": pending,
                           "held_in_memory": len(self._held)},
                "delivery": delivery}

    def message(self, key: str) -> dict[str, Any] | None:
        row = self.outbox.row(key)
        return _row_summary(row) if row else None

    # --- outbox callbacks ------------------------------------------------------------

    def _drop_notice(self, count: int, number: int) -> Message:
        now = self._clock()
        notice = Notice(f"outbox:dropped@{number}", DROPPED, "warning", "hub",
                        f"{count} alert messages dropped: the outbox was full", now, now,
                        (f"more than ALERT_OUTBOX_MAX={self._settings.alert_outbox_max} "
                         "messages were waiting for Slack",))
        return render(notice, self._render)[0]

    def _failed(self, row: Row, error: str) -> None:
        log.error("Slack refused alert message %s for good: %s", row.message.key, error)


def _row_summary(row: Row) -> dict[str, Any]:
    return {"key": row.message.key, "channel": row.message.channel, "state": row.state,
            "attempts": row.attempts, "error": row.error, "created": row.created,
            "text": str(row.message.payload.get("text", ""))[:200]}
