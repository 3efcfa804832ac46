"""Retention: which backups to keep and which to delete, with restic's `forget` semantics.

Pure: no I/O and no clock reads (the caller passes `now`); standard library only. The
caller lists its archives as `Candidate`s and deletes exactly `Plan.remove`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import NamedTuple

NEWEST = "newest verified"
UNVERIFIED = "not verified yet: run `verify`"

# Calendar buckets on natural UTC boundaries. Weeks are ISO weeks, Monday 00:00 to Sunday
# 23:59:59, keyed by ISO year so that 31 Dec can belong to week 1 of the next year.
_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda when: when.strftime("%Y-%m-%d %H"),
    "daily": lambda when: when.strftime("%Y-%m-%d"),
    "weekly": lambda when: when.strftime("%G-W%V"),
    "monthly": lambda when: when.strftime("%Y-%m"),
    "yearly": lambda when: when.strftime("%Y"),
}


@dataclass(frozen=True)
class Policy:
    """How many of the newest backups, and of the newest hours, days ... to keep."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        negative = [f.name for f in fields(self) if getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"retention counts cannot be negative: {', '.join(negative)}")

    def rules(self) -> list[tuple[str, int]]:
        """The rules in force, as (rule, count): ("last", 7), ("daily", 7) ..."""
        counts = ((f.name.removeprefix("keep_"), getattr(self, f.name)) for f in fields(self))
        return [(rule, count) for rule, count in counts if count]

    def empty(self) -> bool:
        return not self.rules()

    def describe(self) -> str:
        return ", ".join(f"{rule} {count}" for rule, count in self.rules()) or "nothing"


class Candidate(NamedTuple):
    name: str  # archive name, unique
    ts: float  # UTC epoch seconds of the backup (from its manifest or name)
    usable: bool  # complete and verified; False for failed or unverified ones


class Plan(NamedTuple):
    keep: dict[str, list[str]]  # name -> reasons kept, oldest first
    remove: list[str]  # names to delete, oldest first
    ignored: dict[str, str]  # name -> why neither counted nor removed, oldest first


class EmptyPolicy(ValueError):
    """An empty policy would keep nothing: refused rather than removing every backup."""


_KEYS = ", ".join(f"BACKUP_{f.name.upper()}" for f in fields(Policy))
_EMPTY = (f"refusing an empty retention policy: set at least one of {_KEYS} "
          "(restic refuses one too)")


def plan(candidates: Iterable[Candidate], policy: Policy, now: float,
         failed: Iterable[str] = (), skew: float = 300.0) -> Plan:
    """Split CANDIDATES into kept (with reasons), removed and ignored under POLICY."""
    # An empty policy would remove everything: refuse it, as restic does.
    if policy.empty():
        raise EmptyPolicy(_EMPTY)
    # Newest first; equal timestamps are ordered by name so the plan is deterministic.
    ordered = sorted(candidates, key=lambda c: (c.ts, c.name), reverse=True)
    _require_unique(ordered)
    ignored = _ignored(ordered, now, skew, set(failed))
    # Only usable ones count: a partial or unverified backup is no restore point. USABLE
    # wins over FAILED: a verified archive is never deleted on a contradicting report.
    counted = [c for c in ordered if c.usable and c.name not in ignored]
    reasons = _reasons(counted, policy)
    oldest_first = ordered[::-1]
    return Plan(
        keep={c.name: reasons[c.name] for c in oldest_first if c.name in reasons},
        # Failed ones are removed too: they were never counted, so no rule keeps them.
        remove=[c.name for c in oldest_first if c.name not in reasons and c.name not in ignored],
        ignored={c.name: ignored[c.name] for c in oldest_first if c.name in ignored},
    )


def _require_unique(ordered: list[Candidate]) -> None:
    """Names are keys of the plan: a duplicate would make one archive's fate ambiguous."""
    counts = Counter(c.name for c in ordered)
    duplicates = sorted(name for name, seen in counts.items() if seen > 1)
    if duplicates:
        raise ValueError(f"duplicate archive names: {', '.join(duplicates)}")


def _ignored(ordered: list[Candidate], now: float, skew: float,
             failed: set[str]) -> dict[str, str]:
    """Candidates that neither count toward a rule nor may be removed, with why."""
    ignored: dict[str, str] = {}
    for candidate in ordered:
        ahead = candidate.ts - now
        if ahead > skew:
            # A future date would take the newest buckets and evict real backups (restic
            # ignores them for duration rules): a crafted timestamp must not delete real
            # ones, so they are kept out of the rules and never removed either.
            ignored[candidate.name] = (f"dated {span(ahead)} in the future, beyond the "
                                       f"{skew:g} s clock skew allowed")
        elif not candidate.usable and candidate.name not in failed:
            # Unverified may still turn out good: never counted, never deleted.
            ignored[candidate.name] = UNVERIFIED
    return ignored


def span(seconds: float) -> str:
    """A duration for a person: 365.0 d, 2.5 h, 12.0 min or 40 s."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _reasons(counted: list[Candidate], policy: Policy) -> dict[str, list[str]]:
    """Name -> why kept, for the usable candidates COUNTED (newest first)."""
    reasons: dict[str, list[str]] = {}
    # Rules are ORed: kept by any rule means kept, and the reasons accumulate.
    for rule, count in policy.rules():
        for name, reason in _rule(counted, rule, count).items():
            reasons.setdefault(name, []).append(reason)
    # The newest verified backup is kept whatever the policy: it is the one to restore.
    if counted:
        reasons.setdefault(counted[0].name, []).append(NEWEST)
    return reasons


def _rule(counted: list[Candidate], rule: str, count: int) -> dict[str, str]:
    """What one rule keeps among COUNTED (newest first): name -> reason."""
    if rule == "last":
        # keep_last n keeps the n newest usable ones.
        kept = {c.name: f"last {i}" for i, c in enumerate(counted[:count], 1)}
    else:
        kept = _newest_per_bucket(counted, rule, count)
    # Too few buckets to fill the rule: the oldest is kept additionally (restic).
    if len(kept) < count and counted and counted[-1].name not in kept:
        kept[counted[-1].name] = f"oldest ({rule} {count} not filled)"
    return kept


def _newest_per_bucket(counted: list[Candidate], rule: str, count: int) -> dict[str, str]:
    """The newest candidate of each of the COUNT newest RULE buckets that hold one."""
    kept: dict[str, str] = {}
    previous = None
    for candidate in counted:
        if len(kept) == count:
            break
        bucket = _BUCKETS[rule](datetime.fromtimestamp(candidate.ts, UTC))
        # Newest first, so buckets only move back in time: a new key is a new period,
        # and only periods that hold a backup count (restic).
        if bucket != previous:
            kept[candidate.name] = f"{rule} {bucket}"
            previous = bucket
    return kept
