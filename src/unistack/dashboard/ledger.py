"""The control ledger: one-time confirmation nonces and the time of each service's last
control action. gunicorn runs several worker processes and a confirmation may reach
another worker than the request it confirms, so the ledger is a small SQLite file in
var/run/ (0600) that every worker shares, not memory."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NONCE_TTL = 300.0  # seconds a confirmation page stays valid

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    digest TEXT PRIMARY KEY, owner TEXT NOT NULL, action TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS actions (service TEXT PRIMARY KEY, at REAL NOT NULL);
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path, self._clock = path, clock
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, timeout=5.0)
        try:
            db.executescript(_SCHEMA)  # commits by itself
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: workers queue, never race)."""
        db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def issue(self, owner: str, action: dict[str, Any]) -> str:
        """A nonce that confirms ACTION once, for the session OWNER, within NONCE_TTL."""
        nonce = secrets.token_urlsafe(24)
        now = self._clock()
        with self._transaction() as db:
            db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            db.execute("INSERT INTO nonces VALUES (?, ?, ?, ?)",
                       (_digest(nonce), _digest(owner), json.dumps(action), now + NONCE_TTL))
        return nonce

    def redeem(self, nonce: str, owner: str) -> dict[str, Any] | None:
        """The action NONCE confirms, spent now; None when it is unknown, spent, expired
        or issued to another session."""
        with self._transaction() as db:
            row = db.execute("SELECT owner, action, expires FROM nonces WHERE digest = ?",
                             (_digest(nonce),)).fetchone()
            db.execute("DELETE FROM nonces WHERE digest = ?", (_digest(nonce),))
        if row is None or row[0] != _digest(owner) or row[2] < self._clock():
            return None
        action: dict[str, Any] = json.loads(row[1])
        return action

    def wait(self, service: str, interval: float) -> float:
        """Seconds until SERVICE may be acted on again (0.0: now)."""
        with self._transaction() as db:
            return self._wait(db, service, interval)

    def claim(self, service: str, interval: float) -> float:
        """Record an action on SERVICE now if none was in the last INTERVAL seconds and
        return 0.0; else record nothing and return the seconds left to wait."""
        with self._transaction() as db:
            left = self._wait(db, service, interval)
            if not left:
                db.execute("INSERT OR REPLACE INTO actions VALUES (?, ?)",
                           (service, self._clock()))
            return left

    def _wait(self, db: sqlite3.Connection, service: str, interval: float) -> float:
        row = db.execute("SELECT at FROM actions WHERE service = ?", (service,)).fetchone()
        return 0.0 if row is None else max(0.0, row[0] + interval - self._clock())
