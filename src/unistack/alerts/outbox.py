"""The durable alert outbox: every Slack message waits here, in a SQLite file, until sent.

SQLite and not Redis, because the outbox must keep working while Redis is the thing that
is down. One row per message, keyed by its idempotency key (putting a key twice is a
no-op, so a restarted hub re-emitting the same notices sends nothing twice), ordered by
an autoincrement id. A "lane" is a Message.channel: the dispatcher delivers each lane's
oldest pending message first, so messages of a lane are delivered in put order.

Durability: WAL with synchronous=NORMAL. A commit is in the WAL (the OS page cache) when
put() returns, so it survives the hub being killed or crashing, which is the failure
this outbox exists for; only a power loss can lose the last commits before a
checkpoint. FULL would add one fsync to every put(), on the hub's reconcile loop.

Bounded: at most `max_messages` pending messages. When a put goes over, the OLDEST
pending messages are dropped (the newest say what is true now, e.g. "resolved"); the
records carry no severity, so the order of the queue is the only policy. Every drop is
reported by one "N messages dropped" message made by `drop_notice`; that message is
"essential": never dropped, not counted in the bound, and at most one is pending at a
time (drops while it waits are reported by the next one, after it is delivered).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from unistack.alerts.records import Message

log = logging.getLogger(__name__)

PENDING = "pending"
SENT = "sent"
FAILED = "failed"  # a permanent Slack error; not retried
DROPPED = "dropped"  # the outbox was full
STATES = (PENDING, SENT, FAILED, DROPPED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    incident TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    thread_of TEXT NOT NULL DEFAULT '',
    essential INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    ts TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    finished REAL
);
CREATE INDEX IF NOT EXISTS messages_lane ON messages (state, channel, id);
CREATE INDEX IF NOT EXISTS messages_incident ON messages (incident, state);
CREATE TABLE IF NOT EXISTS threads (
    incident TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, document TEXT NOT NULL);
"""
_SELECT = ("SELECT id, key, channel, incident, action, payload, thread_of, essential, "
           "created, attempts, next_attempt, state, error FROM messages ")
_HEADS = ("WHERE id IN (SELECT min(id) FROM messages WHERE state = 'pending' "
          "GROUP BY channel) ORDER BY id")
_PRUNE_EVERY = 64  # puts between two prunes of finished rows

DropNotice = Callable[[int, int], Message]  # (messages dropped, notice number) -> Message


class Thread(NamedTuple):
    """Where an incident's first Slack message is: bot-mode replies and updates go there."""

    channel: str  # the channel id Slack answered with (chat.update needs the id)
    ts: str


class Row(NamedTuple):
    """One message in the outbox and its delivery state."""

    id: int
    message: Message
    essential: bool
    created: float
    attempts: int
    next_attempt: float
    state: str
    error: str


def _row(values: tuple[Any, ...]) -> Row:
    (id_, key, channel, incident, action, payload, thread_of, essential, created,
     attempts, next_attempt, state, error) = values
    message = Message(key, channel, incident, action, json.loads(payload), thread_of)
    return Row(id_, message, bool(essential), created, attempts, next_attempt, state, error)


def _prepare(path: Path) -> None:
    """Create the parent directory 0700 and the database file 0600 before SQLite opens it.

    SQLite gives its -wal and -shm files the mode of the database file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


class Outbox:
    """The SQLite file of pending and recent Slack messages, and incident -> thread."""

    def __init__(self, path: Path, max_messages: int, clock: Callable[[], float] = time.time,
                 drop_notice: DropNotice | None = None) -> None:
        _prepare(path)
        self.path = path
        self._max = max_messages
        self._clock = clock
        self._drop_notice = drop_notice
        self._lock = threading.Lock()  # one connection shared by the hub and the dispatcher
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so that a second process waits, not fails."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- putting ---------------------------------------------------------------------

    def put(self, message: Message) -> bool:
        """Queue MESSAGE; False when its key is already in the outbox (nothing changes)."""
        with self._write() as db:
            if not self._insert(db, message, essential=False):
                return False
            dropped = self._enforce_bound(db)
            if dropped:
                self._report_drops(db)
            row_id = db.execute("SELECT max(id) FROM messages").fetchone()[0]
            if row_id % _PRUNE_EVERY == 0:
                self._prune(db)
        if dropped:
            log.warning("alert outbox full (%d pending): dropped the %d oldest messages",
                        self._max, dropped)
        return True

    def _insert(self, db: sqlite3.Connection, message: Message, essential: bool) -> bool:
        now = self._clock()
        cursor = db.execute(
            "INSERT OR IGNORE INTO messages (key, channel, incident, action, payload, "
            "thread_of, essential, created, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message.key, message.channel, message.incident, message.action,
             json.dumps(message.payload), message.thread_of, int(essential), now, now))
        return cursor.rowcount == 1

    def _enforce_bound(self, db: sqlite3.Connection) -> int:
        """Drop the oldest pending messages over the bound; return how many."""
        (count,) = db.execute("SELECT count(*) FROM messages WHERE state = 'pending' "
                              "AND essential = 0").fetchone()
        excess = int(count) - self._max
        if excess <= 0:
            return 0
        db.execute(
            "UPDATE messages SET state = 'dropped', error = 'outbox full', finished = ? "
            "WHERE id IN (SELECT id FROM messages WHERE state = 'pending' AND essential = 0 "
            "ORDER BY id LIMIT ?)", (self._clock(), excess))
        self._add_meta(db, "unreported_drops", excess)
        self._add_meta(db, "dropped_total", excess)
        return excess

    def _report_drops(self, db: sqlite3.Connection) -> None:
        """Queue one drop notice for the unreported drops, unless one is still pending."""
        unreported = self._meta(db, "unreported_drops")
        if self._drop_notice is None or not unreported:
            return
        if db.execute("SELECT 1 FROM messages WHERE state = 'pending' AND essential = 1"
                      ).fetchone():
            return
        number = self._add_meta(db, "drop_notices", 1)
        self._insert(db, self._drop_notice(unreported, number), essential=True)
        self._add_meta(db, "unreported_drops", -unreported)

    def _prune(self, db: sqlite3.Connection) -> None:
        """Forget finished rows past the newest `max_messages` (their keys stay unique
        for that long), and the threads of incidents no kept row mentions."""
        db.execute("DELETE FROM messages WHERE state != 'pending' AND id NOT IN (SELECT id "
                   "FROM messages WHERE state != 'pending' ORDER BY id DESC LIMIT ?)",
                   (self._max,))
        db.execute("DELETE FROM threads WHERE incident NOT IN "
                   "(SELECT incident FROM messages) AND incident NOT IN "
                   "(SELECT thread_of FROM messages)")

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str) -> int:
        found = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(found[0]) if found else 0

    def _add_meta(self, db: sqlite3.Connection, name: str, delta: int) -> int:
        value = self._meta(db, name) + delta
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
        return value

    # -- delivering ------------------------------------------------------------------

    def heads(self) -> list[Row]:
        """The oldest pending message of every lane (due or not), in id order."""
        return [_row(values) for values in self._read(_SELECT + _HEADS)]

    def next_due(self, now: float) -> list[Row]:
        """The head of every lane whose next attempt is due at NOW, in id order."""
        return [row for row in self.heads() if row.next_attempt <= now]

    def claim(self, row_id: int, now: float, until: float) -> bool:
        """Take a due message for one attempt: it is not due again before UNTIL (a lease:
        if this process dies mid-send, the message is retried after it). False when
        another sender took it first or it is no longer pending."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt = ? "
                "WHERE id = ? AND state = 'pending' AND next_attempt <= ?",
                (until, row_id, now))
            return cursor.rowcount == 1

    def mark_sent(self, row_id: int, ts: str | None = None) -> None:
        """pending -> sent (TS: Slack's message ts, when it gave one)."""
        self._finish(row_id, SENT, "", ts or "")

    def fail(self, row_id: int, error: str) -> None:
        """pending -> failed: a permanent error; ERROR says why."""
        self._finish(row_id, FAILED, error, "")

    def _finish(self, row_id: int, state: str, error: str, ts: str) -> None:
        with self._write() as db:
            db.execute("UPDATE messages SET state = ?, error = ?, ts = ?, finished = ? "
                       "WHERE id = ?", (state, error, ts, self._clock(), row_id))
            self._add_meta(db, f"{state}_total", 1)
            # If this was the pending drop notice, report the drops made while it waited.
            self._report_drops(db)

    def defer(self, row_id: int, until: float, error: str) -> None:
        """Try ROW_ID again at UNTIL; ERROR is why the last attempt failed."""
        with self._write() as db:
            db.execute("UPDATE messages SET next_attempt = ?, error = ? WHERE id = ? "
                       "AND state = 'pending'", (until, error, row_id))

    def parent_pending(self, row: Row) -> bool:
        """Whether ROW's thread parent (the first message of the incident it replies to or
        updates) is still waiting in the outbox ahead of it."""
        incident = row.message.thread_of or row.message.incident
        return bool(self._read(
            "SELECT 1 FROM messages WHERE state = 'pending' AND incident = ? AND "
            "thread_of = '' AND action = 'post' AND id < ? LIMIT 1", incident, row.id))

    # -- threads ---------------------------------------------------------------------

    def thread(self, incident: str) -> Thread | None:
        found = self._read("SELECT channel, ts FROM threads WHERE incident = ?", incident)
        return Thread(*found[0]) if found else None

    def remember_thread(self, incident: str, channel: str, ts: str) -> None:
        """INCIDENT's thread is now message TS in CHANNEL (a newer top-level post wins)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO threads (incident, channel, ts, created) "
                       "VALUES (?, ?, ?, ?)", (incident, channel, ts, self._clock()))

    # -- state of the alert router (open incidents, silences) --------------------------

    def save_state(self, name: str, document: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO state (name, document) VALUES (?, ?)",
                       (name, json.dumps(document)))

    def load_state(self, name: str) -> dict[str, Any] | None:
        found = self._read("SELECT document FROM state WHERE name = ?", name)
        return dict(json.loads(found[0][0])) if found else None

    # -- reading ---------------------------------------------------------------------

    def pending(self) -> list[Row]:
        """Every pending message, in id order."""
        rows = self._read(_SELECT + "WHERE state = 'pending' ORDER BY id")
        return [_row(values) for values in rows]

    def row(self, key: str) -> Row | None:
        """The message put under idempotency KEY, if the outbox still has it."""
        found = self._read(_SELECT + "WHERE key = ?", key)
        return _row(found[0]) if found else None

    def counts(self) -> dict[str, int]:
        """Rows by state now, and totals since the file was created (`sent_total`, ...)."""
        counts = dict.fromkeys(STATES, 0)
        counts.update(dict(self._read("SELECT state, count(*) FROM messages GROUP BY state")))
        for name, value in self._read("SELECT name, value FROM meta WHERE name LIKE "
                                      "'%_total'"):
            counts[name] = value
        return counts
