"""The live stream of `/api/events`: the hub's server-sent events relayed byte for byte
(events, `status` documents, its `: keepalive` comments), so the page sees a change as
soon as the hub records it.

A reader thread (a daemon) reads the hub's stream into a queue; the response generator
relays the queue. So the response ends at once when the worker is stopping (a stop must
not wait for the hub's next keepalive), and the hub's stream is dropped by the reader
at its next chunk once the browser is gone (a failed write closes the generator)."""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterator

from unistack.dashboard.upstream import Hub
from unistack.hub.client import HubUnreachable

# The browser reconnects this long after the stream ends (the hub down, a restart).
RETRY_MS = 2000
POLL = 0.1  # seconds between two looks at the stopping flag
_BACKLOG = 256  # chunks held for a slow browser before the reader waits
_EVENT_ID = re.compile(r"^[0-9]{1,20}$")
_END = b""  # the hub ended its stream

Item = bytes | HubUnreachable


def event_id(header: str | None, after: str | None) -> str | None:
    """The id to resume after: the browser's Last-Event-ID (a reconnect), else the
    page's `?after=` (the newest event it already shows); anything but digits is ignored."""
    for candidate in (header, after):
        if candidate and _EVENT_ID.match(candidate.strip()):
            return candidate.strip()
    return None


def _unreachable(exc: Exception) -> bytes:
    message = json.dumps({"hub": "unreachable", "error": str(exc)})
    return f"retry: {RETRY_MS}\nevent: hub\ndata: {message}\n\n".encode()


def _put(chunks: queue.Queue[Item], item: Item, gone: threading.Event) -> None:
    while not gone.is_set():
        try:
            chunks.put(item, timeout=POLL)
            return
        except queue.Full:
            continue


def _read(hub: Hub, last_event_id: str | None, chunks: queue.Queue[Item],
          gone: threading.Event) -> None:
    """The reader thread: the hub's stream into CHUNKS until it ends or GONE is set."""
    stream: Iterator[bytes] = iter(())
    try:
        stream = hub.stream(last_event_id)
        for chunk in stream:
            if gone.is_set():
                return
            _put(chunks, chunk, gone)
        _put(chunks, _END, gone)
    except HubUnreachable as exc:
        _put(chunks, exc, gone)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # ends the hub connection


def relay(hub: Hub, last_event_id: str | None, stopping: threading.Event,
          opened: Callable[[int], None] = lambda delta: None) -> Iterator[bytes]:
    """Yield the hub's stream after LAST_EVENT_ID until it ends, the browser goes away
    or STOPPING is set; a hub that cannot be reached ends it with an `event: hub`
    message saying so (the browser retries). OPENED(+1 / -1) counts open streams."""
    opened(1)
    chunks: queue.Queue[Item] = queue.Queue(_BACKLOG)
    gone = threading.Event()
    threading.Thread(target=_read, args=(hub, last_event_id, chunks, gone),
                     name="sse-reader", daemon=True).start()
    try:
        # Sent at once, before the hub answers: the browser sees the stream open.
        yield b": relayed by the unistack dashboard\n\n"
        while not stopping.is_set():
            try:
                item = chunks.get(timeout=POLL)
            except queue.Empty:
                continue
            if isinstance(item, HubUnreachable):
                yield _unreachable(item)
                return
            if item == _END:
                return
            yield item
    finally:
        gone.set()  # the browser went away, the hub did, or the worker stops
        opened(-1)
