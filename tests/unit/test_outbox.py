"""The outbox: idempotency, order per lane, the bound and its drop notice, reopening,
file modes. Real SQLite files in tmp_path."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import pytest

from unistack.alerts.outbox import Outbox, Row
from unistack.alerts.records import Message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(key: str, channel: str = "#alerts", incident: str = "service:redis",
            action: str = "post", thread_of: str = "") -> Message:
    return Message(key, channel, incident, action, {"text": f"message {key}"}, thread_of)


def drop_notice(count: int, number: int) -> Message:
    return message(f"outbox:dropped/{number}", incident="outbox:dropped",
                   channel="#ops")._replace(payload={"text": f"{count} messages dropped"})


def open_outbox(tmp_path: Path, max_messages: int = 100) -> Outbox:
    return Outbox(tmp_path / "var" / "data" / "alerts.sqlite", max_messages, Clock(),
                  drop_notice=drop_notice)


def keys(rows: list[Row]) -> list[str]:
    return [row.message.key for row in rows]


def test_put_is_idempotent_on_the_key(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    assert outbox.put(message("a/0"))
    assert not outbox.put(message("a/0")._replace(payload={"text": "other"}))
    assert keys(outbox.pending()) == ["a/0"]
    assert outbox.pending()[0].message.payload == {"text": "message a/0"}


def test_a_sent_key_stays_sent_when_put_again(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("a/0"))
    outbox.mark_sent(outbox.pending()[0].id, "171.1")
    assert not outbox.put(message("a/0"))
    assert outbox.pending() == []
    assert outbox.counts()["sent"] == 1


def test_next_due_gives_each_lane_its_oldest_message(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    for key, channel in [("1", "#a"), ("2", "#b"), ("3", "#a"), ("4", "#b")]:
        outbox.put(message(key, channel=channel))
    assert keys(outbox.next_due(1000.0)) == ["1", "2"]
    first = outbox.next_due(1000.0)[0]
    outbox.mark_sent(first.id)
    assert keys(outbox.next_due(1000.0)) == ["2", "3"]


def test_a_deferred_head_holds_its_lane(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("1"))
    outbox.put(message("2"))
    head = outbox.next_due(1000.0)[0]
    outbox.defer(head.id, 1010.0, "HTTP 500")
    assert outbox.next_due(1005.0) == []
    assert keys(outbox.next_due(1010.0)) == ["1"]
    assert outbox.next_due(1010.0)[0].error == "HTTP 500"


def test_claim_takes_a_message_once_and_leases_it(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("1"))
    row = outbox.next_due(1000.0)[0]
    assert outbox.claim(row.id, 1000.0, 1030.0)
    assert not outbox.claim(row.id, 1000.0, 1030.0)
    assert outbox.next_due(1029.0) == []
    assert outbox.next_due(1030.0)[0].attempts == 1  # the sender died: due after the lease


def test_fail_is_final(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("1"))
    outbox.fail(outbox.pending()[0].id, "Slack error channel_not_found")
    assert outbox.pending() == []
    assert outbox.row("1") is not None
    assert outbox.row("1").error == "Slack error channel_not_found"  # type: ignore[union-attr]
    assert outbox.counts()["failed"] == 1


def test_parent_pending_until_the_first_message_is_sent(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("i/0", channel="#a", incident="i"))
    outbox.put(message("i/1", channel="#b", incident="i", thread_of="i"))
    parent, reply = outbox.pending()
    assert outbox.parent_pending(reply)
    outbox.mark_sent(parent.id, "1.0")
    assert not outbox.parent_pending(reply)


def test_threads_are_remembered_and_a_newer_post_wins(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    assert outbox.thread("i") is None
    outbox.remember_thread("i", "C1", "1.0")
    outbox.remember_thread("i", "C1", "2.0")
    assert outbox.thread("i") == ("C1", "2.0")


def test_full_outbox_drops_the_oldest_and_queues_one_notice(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_messages=3)
    for n in range(5):
        outbox.put(message(f"m/{n}"))
    # m/3 dropped m/0 and queued the notice; m/4 dropped m/1 while the notice waits
    assert keys(outbox.pending()) == ["m/2", "m/3", "outbox:dropped/1", "m/4"]
    notice = outbox.pending()[2]
    assert notice.essential
    assert notice.message.payload == {"text": "1 messages dropped"}
    assert outbox.counts()["dropped"] == 2
    assert outbox.row("m/0").state == "dropped"  # type: ignore[union-attr]


def test_drops_while_a_notice_waits_are_reported_by_the_next_one(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_messages=2)
    for n in range(6):  # 4 dropped: 1 reported by notice 1, 3 wait behind it
        outbox.put(message(f"m/{n}"))
    assert keys(outbox.pending()) == ["outbox:dropped/1", "m/4", "m/5"]
    first = outbox.pending()[0]
    outbox.mark_sent(first.id)
    notices = [row for row in outbox.pending() if row.essential]
    assert keys(notices) == ["outbox:dropped/2"]
    assert notices[0].message.payload == {"text": "3 messages dropped"}
    assert outbox.counts()["dropped_total"] == 4


def test_a_drop_notice_is_never_dropped(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_messages=1)
    for n in range(50):
        outbox.put(message(f"m/{n}"))
    pending = outbox.pending()
    assert keys(pending) == ["outbox:dropped/1", "m/49"]
    assert len(pending) <= 1 + 1  # the bound, plus at most one notice


def test_pending_survives_reopening_the_file(tmp_path: Path) -> None:
    first = open_outbox(tmp_path)
    first.put(message("1"))
    first.put(message("2"))
    first.mark_sent(first.pending()[0].id)
    first.remember_thread("service:redis", "C1", "1.0")
    # no close(): the process is killed
    second = open_outbox(tmp_path)
    assert keys(second.pending()) == ["2"]
    assert second.thread("service:redis") == ("C1", "1.0")
    assert not second.put(message("1"))


def test_files_are_private(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("1"))
    assert stat.S_IMODE(outbox.path.parent.stat().st_mode) == 0o700
    for path in outbox.path.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert (outbox.path.parent / "alerts.sqlite-wal").exists()


def test_finished_rows_are_pruned_but_pending_kept(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_messages=10)
    outbox.put(message("keep", channel="#slow"))
    for n in range(200):
        outbox.put(message(f"m/{n}"))
        outbox.mark_sent(outbox.next_due(1000.0)[-1].id)
    counts = outbox.counts()
    assert counts["sent"] <= 10 + 64
    assert counts["sent_total"] == 200
    assert keys(outbox.pending()) == ["keep"]


def test_router_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "outbox.sqlite"
    first = Outbox(path, 10)
    assert first.load_state("router") is None
    first.save_state("router", {"version": 1, "incidents": [{"id": "service:redis@1.000"}]})
    first.close()
    assert Outbox(path, 10).load_state("router") == {
        "version": 1, "incidents": [{"id": "service:redis@1.000"}]}


def test_a_message_reads_back_as_it_was_put(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    put = Message("j/1", "#ops", "j", "post", {"text": "reply", "blocks": [1]}, "i")
    outbox.put(put)
    (row,) = outbox.pending()
    assert row == Row(row.id, put, essential=False, created=1000.0, attempts=0,
                      next_attempt=1000.0, state="pending", error="")
    assert outbox.row("j/1") == row
    assert outbox.row("never-put") is None


def test_one_outbox_is_shared_by_the_hub_and_the_dispatcher_threads(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    hub = threading.Thread(target=outbox.put, args=(message("1"),))
    hub.start()
    hub.join()
    outbox.mark_sent(outbox.pending()[0].id)  # the dispatcher, on another thread
    assert outbox.counts()["sent"] == 1


def test_an_outbox_at_its_bound_drops_nothing_and_says_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = open_outbox(tmp_path, max_messages=3)
    with caplog.at_level(logging.WARNING, logger="unistack.alerts.outbox"):
        for n in range(3):
            outbox.put(message(f"m/{n}"))
    assert keys(outbox.pending()) == ["m/0", "m/1", "m/2"]
    assert outbox.counts() == {"pending": 3, "sent": 0, "failed": 0, "dropped": 0}
    assert caplog.records == []


def test_a_drop_is_logged_with_the_bound_and_the_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = open_outbox(tmp_path, max_messages=3)
    for n in range(3):
        outbox.put(message(f"m/{n}"))
    with caplog.at_level(logging.WARNING, logger="unistack.alerts.outbox"):
        outbox.put(message("m/3"))
    assert caplog.messages == ["alert outbox full (3 pending): dropped the 1 oldest messages"]
    assert outbox.counts() == {"pending": 4, "sent": 0, "failed": 0, "dropped": 1,
                               "dropped_total": 1}  # 3 and the drop notice


def test_a_message_sent_after_a_failed_attempt_keeps_no_error(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("1"))
    row = outbox.pending()[0]
    outbox.defer(row.id, 1010.0, "HTTP 500")
    outbox.mark_sent(row.id, "171.2")
    sent = outbox.row("1")
    assert sent is not None and (sent.state, sent.error) == ("sent", "")


def test_an_update_and_a_reply_from_another_incident_wait_for_the_first_post(
        tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    outbox.put(message("i/0", incident="i"))
    outbox.put(message("i/1", incident="i", action="update"))  # chat.update of i/0
    outbox.put(message("j/0", incident="j", thread_of="i"))  # j folded into i's thread
    outbox.put(message("k/0", incident="k", action="update"))  # k's first post is gone
    parent, update, reply, orphan = outbox.pending()
    assert outbox.parent_pending(update) and outbox.parent_pending(reply)
    assert not outbox.parent_pending(orphan)
    outbox.mark_sent(parent.id, "1.0")
    assert not outbox.parent_pending(update) and not outbox.parent_pending(reply)


def test_finished_rows_are_forgotten_on_every_64th_put_down_to_the_newest(
        tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path, max_messages=10)
    for n in range(63):
        outbox.put(message(f"m/{n}"))
        outbox.mark_sent(outbox.pending()[0].id)
    assert outbox.counts()["sent"] == 63  # kept until the 64th put
    outbox.put(message("m/63"))
    assert outbox.counts()["sent"] == 10
    assert outbox.row("m/52") is None and outbox.row("m/53") is not None
    assert keys(outbox.pending()) == ["m/63"]
