"""The Backups card: the `backups` part of the hub's status document put into words and a
colour, for the overview page as the server renders it. static/dashboard.js says the same
thing in the same words (`renderBackups`) from every live status document, so a change of
wording here is one there too. Pure: the time is passed in. Names and details come from
outside; they stay text (Jinja escapes them, the script sets them with textContent)."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple, TypeGuard

RECENT = 5  # archives listed on the card
MISSING = "no backup information from the hub"
DASH = "\u2014"
# The colour of an archive's state (a CSS class); a state not listed gets none.
STATE_CLASS = {"verified": "good", "sealed": "good", "unverified": "warn-text",
               "failed": "bad", "partial": "bad"}


class Archive(NamedTuple):
    state: str  # as the hub says it: verified, unverified, failed, partial, sealed
    css: str  # STATE_CLASS of it
    text: str  # name · age · size


class Card(NamedTuple):
    known: bool  # False: the hub sent no backups document (an older hub, or none yet)
    colour: str  # the card's: green, red, grey
    verdict: str  # stale, failed, running, off, ok or unknown (data-verdict)
    warnings: list[str]
    running: str  # "backup running since ...", or ""
    rows: list[tuple[str, str]]
    archives: list[Archive]


UNKNOWN = Card(False, "grey", "unknown", [], "", [], [])


def of_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The backups document inside a dashboard snapshot ({} when there is none)."""
    status = snapshot.get("status")
    found = status.get("backups") if isinstance(status, dict) else None
    return found if isinstance(found, dict) else {}


def card(backups: dict[str, Any], now: float) -> Card:
    """The card for BACKUPS (the hub's document) at NOW (epoch seconds)."""
    if not backups:
        return UNKNOWN
    warnings = _warnings(backups, now)
    off = _number(backups.get("interval")) == 0
    colour = "red" if warnings else "grey" if off else "green"
    return Card(True, colour, _verdict(backups, off), warnings, _running(backups, now),
                _rows(backups, now), _archives(backups.get("backups"), now))


def last_took(backups: dict[str, Any]) -> float:
    """Seconds the last backup took (0.0: not known), for the confirmation page."""
    last = backups.get("last")
    return (_number(last.get("took")) or 0.0) if isinstance(last, dict) else 0.0


# --- words ----------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A time span as an operator reads it, to the nearest unit: 40 s, 12 min, 3 h,
    2 days 4 h (from 48 h on)."""
    s = max(0.0, seconds)
    if _nearest(s) < 60:
        return f"{_nearest(s)} s"
    if _nearest(s / 60) < 60:
        return f"{_nearest(s / 60)} min"
    hours = _nearest(s / 3600)
    if hours < 48:
        return f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days" + (f" {hours} h" if hours else "")


def _nearest(x: float) -> int:
    return math.floor(x + 0.5)  # halves up, as the script's Math.round


def size(value: Any) -> str:
    """Bytes in binary units, as the script's `bytes()` writes them: 512 B, 1.2 MiB."""
    n = _number(value)
    if n is None:
        return DASH
    units, i = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return (f"{n:.1f}" if i else f"{n:g}") + " " + units[i]


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _ago(ts: Any, now: float) -> str:
    found = _number(ts)
    return DASH if found is None else span(now - found) + " ago"


def _failed(last: Any) -> TypeGuard[dict[str, Any]]:
    """LAST (a run) did not end ok: `ok` is anything but true."""
    return isinstance(last, dict) and last.get("ok") is not True


# --- the parts of the card ---------------------------------------------------------------


def _warnings(backups: dict[str, Any], now: float) -> list[str]:
    found = []
    if backups.get("stale") is True:
        newest = backups.get("newest_verified")
        ts = _number(newest.get("ts")) if isinstance(newest, dict) else None
        found.append("no verified backup yet" if ts is None
                     else f"no verified backup for {span(now - ts)}")
    last = backups.get("last")
    if _failed(last):
        detail = _text(last.get("detail"))
        found.append("last backup failed" + (f": {detail}" if detail else ""))
    return found


def _verdict(backups: dict[str, Any], off: bool) -> str:
    if backups.get("stale") is True:
        return "stale"
    if _failed(backups.get("last")):
        return "failed"
    return "running" if backups.get("running") is True else "off" if off else "ok"


def _running(backups: dict[str, Any], now: float) -> str:
    if backups.get("running") is not True:
        return ""
    since = _number(backups.get("running_since"))
    if since is None:
        return "backup running"
    clock = time.strftime("%H:%M:%S", time.localtime(since))
    return f"backup running since {clock} (for {span(now - since)})"


def _rows(backups: dict[str, Any], now: float) -> list[tuple[str, str]]:
    return [("newest verified", _newest(backups.get("newest_verified"), now)),
            ("last run", _last(backups.get("last"), now)),
            ("next backup", _next(backups, now)),
            ("directory", _text(backups.get("dir")) or DASH)]


def _newest(newest: Any, now: float) -> str:
    if not isinstance(newest, dict):
        return "none"
    return " \u00b7 ".join([_ago(newest.get("ts"), now), size(newest.get("size")),
                            _text(newest.get("state")) or DASH])


def _last(last: Any, now: float) -> str:
    if not isinstance(last, dict):
        return "none yet"
    parts = ["failed" if _failed(last) else "ok", _ago(last.get("ts"), now)]
    took = _number(last.get("took"))
    if took is not None:
        parts.append(f"took {took:.1f} s")
    if _text(last.get("detail")):
        parts.append(_text(last.get("detail")))
    return " \u00b7 ".join(parts)


def _next(backups: dict[str, Any], now: float) -> str:
    interval = _number(backups.get("interval"))
    if interval == 0:
        return "scheduling off: a backup runs only when asked for"
    due = _number(backups.get("next_due"))
    when = DASH if due is None else f"in {span(due - now)}" if due > now else "due now"
    return when + (f" (every {span(interval)})" if interval else "")


def _archives(entries: Any, now: float) -> list[Archive]:
    found = []
    for entry in (entries if isinstance(entries, list) else [])[:RECENT]:
        if not isinstance(entry, dict):
            continue
        state = _text(entry.get("state")) or "unknown"
        text = " \u00b7 ".join([_text(entry.get("name")) or DASH, _ago(entry.get("ts"), now),
                                size(entry.get("size"))])
        if entry.get("encrypted") is True and state != "sealed":
            text += " \u00b7 encrypted"
        found.append(Archive(state, STATE_CLASS.get(state, ""), text))
    return found
