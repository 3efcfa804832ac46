"""The dispatcher's timing and ordering, driven by a fake clock and a fake transport over
a real outbox file: rate limit, Retry-After, capped backoff, threads, permanent errors,
and a compressed 10-minute Slack outage."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from harness.waiting import wait_for
from unistack.alerts.dispatcher import DispatchConfig, Dispatcher
from unistack.alerts.outbox import Outbox, Thread
from unistack.alerts.records import Message
from unistack.alerts.slack import PERMANENT, RETRY_AFTER, SENT, TRANSIENT, Result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Call(NamedTuple):
    at: float
    key: str
    parent: Thread | None
    result: Result


Responder = Callable[[Message, Thread | None], Result]


class FakeTransport:
    """Answers with RESPOND (default: sent, with a fresh ts) and records every call."""

    def __init__(self, clock: Clock, threads: bool = True) -> None:
        self.threads = threads
        self.calls: list[Call] = []
        self.respond: Responder = self.ok
        self._clock = clock

    def ok(self, message: Message, parent: Thread | None) -> Result:
        if not self.threads:
            return Result(SENT)
        return Result(SENT, ts=f"{len(self.calls)}.0", channel=f"C-{message.channel}")

    def send(self, message: Message, parent: Thread | None) -> Result:
        result = self.respond(message, parent)
        self.calls.append(Call(self._clock(), message.key, parent, result))
        return result

    def sent(self) -> list[Call]:
        return [call for call in self.calls if call.result.outcome == SENT]


class Rig(NamedTuple):
    clock: Clock
    outbox: Outbox
    transport: FakeTransport
    dispatcher: Dispatcher
    failed: list[tuple[str, str]]

    def put(self, key: str, channel: str = "#a", incident: str = "", action: str = "post",
            thread_of: str = "") -> None:
        incident = incident or key.partition("/")[0]
        self.outbox.put(Message(key, channel, incident, action, {"text": key}, thread_of))

    def run(self, seconds: float, step: float = 0.05) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.dispatcher.deliver_once(self.clock.now)
            self.clock.now += step


def make_rig(tmp_path: Path, threads: bool = True, retry_max: float = 10.0) -> Rig:
    clock = Clock()
    outbox = Outbox(tmp_path / "alerts.sqlite", 1000, clock)
    transport = FakeTransport(clock, threads)
    failed: list[tuple[str, str]] = []
    config = DispatchConfig(channel_interval=1.0, retry_max=retry_max, retry_initial=1.0,
                            jitter=0.2, lease=30.0, poll=5.0)
    dispatcher = Dispatcher(outbox, transport, config, clock,
                            on_failed=lambda row, why: failed.append((row.message.key, why)))
    dispatcher._rng = lambda: 0.5  # no jitter: exact backoff in the assertions
    return Rig(clock, outbox, transport, dispatcher, failed)


def gaps(calls: list[Call]) -> list[float]:
    return [round(b.at - a.at, 2) for a, b in itertools.pairwise(calls)]


def test_at_most_one_message_per_second_per_channel(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    for n in range(4):
        rig.put(f"a{n}/0", "#a")
        rig.put(f"b{n}/0", "#b")
    rig.run(5)
    for lane in "ab":
        calls = [c for c in rig.transport.calls if c.key.startswith(lane)]
        assert [c.key for c in calls] == [f"{lane}{n}/0" for n in range(4)]
        assert min(gaps(calls)) >= 1.0
    assert rig.transport.calls[0].at == rig.transport.calls[1].at  # lanes run side by side


def test_retry_after_holds_the_channel(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.transport.respond = lambda m, p: (
        Result(RETRY_AFTER, retry_after=7, error="HTTP 429")
        if m.key == "a/0" and len(rig.transport.calls) == 0 else rig.transport.ok(m, p))
    rig.put("a/0", "#a")
    rig.put("a/1", "#a")
    rig.put("b/0", "#b")
    rig.run(12)
    by_key = {c.key: c.at for c in rig.transport.sent()}
    assert by_key["b/0"] == 1000.0  # another channel is not held
    assert by_key["a/0"] >= 1007.0
    assert by_key["a/1"] >= by_key["a/0"] + 1.0


def test_transient_errors_back_off_doubling_to_the_cap(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, retry_max=10)
    rig.transport.respond = lambda m, p: Result(TRANSIENT, error="HTTP 503")
    rig.put("a/0")
    rig.run(60)
    observed = gaps(rig.transport.calls)
    assert observed[:4] == pytest.approx([1, 2, 4, 8], abs=0.06)
    assert observed[4:] and max(observed) <= 10.06
    assert rig.outbox.pending()[0].error == "HTTP 503"


def test_backoff_jitter_stays_under_the_cap(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, retry_max=10)
    for value in (0.0, 0.999):
        rig.dispatcher._rng = lambda v=value: v  # type: ignore[misc]
        assert [rig.dispatcher.backoff(n) <= 10 for n in range(1, 30)] == [True] * 29
    assert rig.dispatcher.backoff(1) != rig.dispatcher.backoff(2)


def test_a_thread_reply_waits_for_its_parent(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    attempts = {"n": 0}

    def parent_fails_twice(m: Message, p: Thread | None) -> Result:
        if m.key == "inc/0" and attempts["n"] < 2:
            attempts["n"] += 1
            return Result(TRANSIENT, error="timed out")
        return rig.transport.ok(m, p)

    rig.transport.respond = parent_fails_twice
    rig.put("inc/0", "#a")
    rig.put("inc/1", "#b", thread_of="inc")  # another lane: only the thread orders it
    rig.put("inc/2", "#b", action="update")
    rig.run(10)
    sent = rig.transport.sent()
    assert [c.key for c in sent] == ["inc/0", "inc/1", "inc/2"]
    parent = Thread("C-#a", sent[0].result.ts)
    assert sent[1].parent == parent and sent[2].parent == parent
    assert rig.outbox.thread("inc") == parent


def test_webhook_mode_sends_updates_as_new_messages_without_waiting(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, threads=False)
    rig.put("inc/0", "webhook")
    rig.put("inc/1", "webhook", thread_of="inc")
    rig.put("inc/2", "webhook", action="update")
    rig.run(4)
    assert [(c.key, c.parent) for c in rig.transport.sent()] == [
        ("inc/0", None), ("inc/1", None), ("inc/2", None)]
    assert rig.outbox.thread("inc") is None


def test_a_permanent_error_is_not_retried_and_is_reported(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.transport.respond = lambda m, p: (
        Result(PERMANENT, error="Slack error channel_not_found") if m.key == "bad/0"
        else rig.transport.ok(m, p))
    rig.put("bad/0")
    rig.put("good/0")
    rig.run(30)
    assert [c.key for c in rig.transport.calls] == ["bad/0", "good/0"]
    assert rig.failed == [("bad/0", "Slack error channel_not_found")]
    assert rig.outbox.counts()["failed"] == 1
    assert rig.dispatcher.status().failed == 1


def test_a_reply_whose_parent_failed_becomes_the_thread(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.transport.respond = lambda m, p: (
        Result(PERMANENT, error="msg_too_long") if m.key == "inc/0" else rig.transport.ok(m, p))
    rig.put("inc/0")
    rig.put("inc/1", thread_of="inc")
    rig.put("inc/2", thread_of="inc")
    rig.run(4)
    sent = rig.transport.sent()
    assert [(c.key, c.parent) for c in sent] == [
        ("inc/1", None), ("inc/2", Thread("C-#a", sent[0].result.ts))]


def test_a_ten_minute_outage_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, retry_max=60)
    down_until = rig.clock.now + 600
    rig.transport.respond = lambda m, p: (
        Result(TRANSIENT, error="ConnectionRefusedError") if rig.clock.now < down_until
        else rig.transport.ok(m, p))
    put_order: dict[str, list[str]] = {"#a": [], "#b": [], "#c": []}
    for n in range(40):  # every 15 s an incident opens, and the one before gets a reply
        lane = "#" + "abc"[n % 3]
        rig.put(f"i{n}/0", lane)
        put_order[lane].append(f"i{n}/0")
        if n:
            rig.put(f"i{n - 1}/1", lane, thread_of=f"i{n - 1}")
            put_order[lane].append(f"i{n - 1}/1")
        rig.run(15, step=0.5)
    rig.run(120, step=0.1)
    sent = rig.transport.sent()
    assert len(sent) == len({c.key for c in sent}) == 79  # every one, none twice
    assert rig.outbox.pending() == []
    assert sent[0].at < down_until + 60 + 1  # recovery noticed within the backoff cap
    for lane, keys in put_order.items():
        assert [c.key for c in sent if c.key in keys] == keys, lane
    positions = {c.key: i for i, c in enumerate(sent)}
    assert all(positions[f"i{n}/0"] < positions[f"i{n}/1"] for n in range(39))
    assert all(c.parent is not None for c in sent if c.key.endswith("/1"))


def test_next_delay_is_when_a_lane_may_send(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.dispatcher.next_delay(rig.clock.now) == 5.0  # idle: poll
    rig.put("a/0")
    rig.put("a/1")
    assert rig.dispatcher.next_delay(rig.clock.now) == 0.0
    rig.dispatcher.deliver_once(rig.clock.now)
    assert rig.dispatcher.next_delay(rig.clock.now) == pytest.approx(1.0)


def test_a_reply_waiting_for_its_parent_does_not_spin_the_loop(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.transport.respond = lambda m, p: Result(TRANSIENT, error="HTTP 502")
    rig.put("inc/0", "#a")
    rig.put("inc/1", "#b", thread_of="inc")
    rig.dispatcher.deliver_once(rig.clock.now)  # the parent fails: back off 1 s
    assert rig.dispatcher.next_delay(rig.clock.now) == pytest.approx(1.0)


class BlockingTransport(FakeTransport):
    """Sends only once `release` is set, as a hung Slack would."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.release = threading.Event()

    def send(self, message: Message, parent: Thread | None) -> Result:
        self.release.wait(10)
        return super().send(message, parent)


def test_the_thread_never_blocks_the_caller(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "alerts.sqlite", 100)
    transport = BlockingTransport(Clock())
    dispatcher = Dispatcher(outbox, transport, DispatchConfig(
        channel_interval=0.01, retry_max=60.0, retry_initial=1.0, jitter=0.2, lease=30.0,
        poll=5.0))
    dispatcher.start()
    try:
        started = time.monotonic()
        for n in range(20):
            outbox.put(Message(f"m/{n}", "#a", "m", "post", {"text": "x"}))
            dispatcher.wake()
        assert time.monotonic() - started < 1.0  # while the first send hangs
        transport.release.set()
        wait_for(lambda: len(transport.calls) == 20, timeout=5)
        wait_for(lambda: outbox.pending() == [], timeout=5)
    finally:
        transport.release.set()
        dispatcher.stop()
    assert [c.key for c in transport.calls] == [f"m/{n}" for n in range(20)]
