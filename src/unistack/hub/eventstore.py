"""Durable events: every event is appended to a capped Redis stream when Redis is up,
and a new hub reads the stream back, so the history survives a hub restart.

Writes happen in a thread of their own from a bounded buffer: the reconcile loop never
waits for Redis, and events raised while Redis is down are written once it is back.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from unistack.config import Settings
from unistack.event import Event, Kind, Severity, parse
from unistack.hub.events import EventLog

log = logging.getLogger("unistack.hub")

STREAM = "unistack:events"
_BUFFER = 10000  # events kept while Redis is down; the oldest go first
_FLUSH_INTERVAL = 0.5  # retry interval while Redis is not there yet
_HISTORY = 1000  # events read back at start


def connect(settings: Settings) -> redis.Redis:
    """A client for short calls: its own timeouts, no retries hidden inside one call."""
    return redis.Redis(host=settings.redis_host, port=settings.redis_port,
                       password=settings.redis_password, socket_timeout=0.5,
                       socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


class EventStore:
    def __init__(self, settings: Settings, events: EventLog,
                 client: Callable[[], redis.Redis] | None = None) -> None:
        self._maxlen = settings.events_stream_maxlen
        self._events = events
        self._client = client or (lambda: connect(settings))
        self._pending: deque[Event] = deque(maxlen=_BUFFER)
        self._dropped = 0
        self._loaded = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-store", daemon=True)
        events.subscribe(self._enqueue)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=1.0)

    def _enqueue(self, event: Event) -> None:
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append(event)
        self._wake.set()

    def _run(self) -> None:
        client = self._client()
        while True:
            with self._lock:
                idle = self._loaded and not self._pending
            # Idle: sleep until an event arrives. Otherwise retry until Redis takes them.
            self._wake.wait(None if idle else _FLUSH_INTERVAL)
            self._wake.clear()
            try:
                if not self._loaded:
                    self._load(client)
                self._flush(client)
            except (redis.RedisError, OSError) as exc:
                log.debug("events not persisted yet (Redis unavailable: %s)", exc)
            if self._stop.is_set():
                return

    def _load(self, client: redis.Redis) -> None:
        entries: Any = client.xrevrange(STREAM, count=_HISTORY)
        stored = (parse(json.loads(fields[b"json"])) for _, fields in reversed(entries))
        self._events.preload([e for e in stored if e is not None])
        self._loaded = True

    def _flush(self, client: redis.Redis) -> None:
        with self._lock:
            batch, dropped = list(self._pending), self._dropped
        if not batch and not dropped:
            return
        pipe = client.pipeline(transaction=False)
        for event in batch:
            pipe.xadd(STREAM, {"json": json.dumps(event)}, maxlen=self._maxlen, approximate=True)
        pipe.execute()
        with self._lock:
            for _ in batch:
                self._pending.popleft()
            self._dropped -= dropped
        if dropped:
            self._events.emit("hub", Kind.EVENTS_DROPPED, Severity.WARNING,
                              f"{dropped} events were not persisted: Redis was down and the "
                              f"buffer of {_BUFFER} was full")
