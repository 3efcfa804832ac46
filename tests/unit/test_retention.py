"""retention: restic's forget semantics over backup candidates, checked by behaviour.

Expected kept sets are worked out by hand from a calendar (2026-01-01 is a Thursday, so
2026 has an ISO week 53), never by re-running the algorithm.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from unistack.backup.retention import (
    NEWEST,
    UNVERIFIED,
    Candidate,
    EmptyPolicy,
    Plan,
    Policy,
    plan,
)

DAY = 86400.0


def at(when: str) -> float:
    """UTC epoch seconds of 'YYYY-MM-DD HH:MM[:SS]'."""
    fmt = "%Y-%m-%d %H:%M:%S" if when.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(when, fmt).replace(tzinfo=UTC).timestamp()


def backup(when: str, usable: bool = True) -> Candidate:
    """A candidate named after its UTC time, as the archives are."""
    return Candidate(f"b-{when}", at(when), usable)


def names(*whens: str) -> set[str]:
    return {f"b-{when}" for when in whens}


def everything(result: Plan) -> list[str]:
    return [*result.keep, *result.remove, *result.ignored]


# --- the policy record ---------------------------------------------------------------

def test_describe_lists_the_rules_in_force() -> None:
    policy = Policy(keep_last=7, keep_daily=7, keep_weekly=4, keep_monthly=6)
    assert policy.describe() == "last 7, daily 7, weekly 4, monthly 6"
    assert not policy.empty()
    assert Policy().describe() == "nothing"
    assert Policy().empty()


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_daily"):
        Policy(keep_daily=-1)


def test_an_empty_policy_is_refused_naming_the_config_keys() -> None:
    with pytest.raises(EmptyPolicy) as caught:
        plan([backup("2026-01-01 02:00")], Policy(), now=at("2026-01-02 00:00"))
    message = str(caught.value)
    assert message.startswith("refusing an empty retention policy")
    for key in ("BACKUP_KEEP_LAST", "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY",
                "BACKUP_KEEP_MONTHLY"):
        assert key in message
    assert isinstance(caught.value, ValueError)


def test_an_empty_policy_is_refused_even_with_nothing_to_remove() -> None:
    with pytest.raises(EmptyPolicy):
        plan([], Policy(), now=0.0)


# --- 400 days of daily backups ---------------------------------------------------------

def four_hundred_days() -> list[Candidate]:
    """One backup a day at 02:00 from 2025-01-01 to 2026-02-04, and a few extra ones."""
    start = datetime(2025, 1, 1, 2, tzinfo=UTC)
    days = [start + timedelta(days=i) for i in range(400)]
    daily = [backup(day.strftime("%Y-%m-%d %H:%M")) for day in days]
    extra = [backup(when) for when in ("2026-02-04 08:00", "2026-02-04 20:00",
                                       "2026-01-31 14:00", "2025-06-15 13:00")]
    return daily + extra


FULL = Policy(keep_last=7, keep_daily=7, keep_weekly=4, keep_monthly=6)
# Worked out by hand. Newest first: 02-04 20:00, 08:00, 02:00, 02-03, 02-02, 02-01,
# 01-31 14:00, 01-31 02:00, 01-30 ...
EXPECTED_REASONS = {
    # last 7: the seven newest, whatever their day.
    "b-2026-02-04 20:00": ["last 1", "daily 2026-02-04", "weekly 2026-W06", "monthly 2026-02",
                           NEWEST],
    "b-2026-02-04 08:00": ["last 2"],
    "b-2026-02-04 02:00": ["last 3"],
    "b-2026-02-03 02:00": ["last 4", "daily 2026-02-03"],
    "b-2026-02-02 02:00": ["last 5", "daily 2026-02-02"],
    # Sunday 02-01 closes week 5 (Mon 01-26 .. Sun 02-01).
    "b-2026-02-01 02:00": ["last 6", "daily 2026-02-01", "weekly 2026-W05"],
    # The newest of 01-31 is the 14:00 one; it is also January's newest.
    "b-2026-01-31 14:00": ["last 7", "daily 2026-01-31", "monthly 2026-01"],
    "b-2026-01-30 02:00": ["daily 2026-01-30"],
    "b-2026-01-29 02:00": ["daily 2026-01-29"],
    # Sundays closing weeks 4 and 3.
    "b-2026-01-25 02:00": ["weekly 2026-W04"],
    "b-2026-01-18 02:00": ["weekly 2026-W03"],
    # The last day of each earlier month, back to six months in all.
    "b-2025-12-31 02:00": ["monthly 2025-12"],
    "b-2025-11-30 02:00": ["monthly 2025-11"],
    "b-2025-10-31 02:00": ["monthly 2025-10"],
    "b-2025-09-30 02:00": ["monthly 2025-09"],
}


def test_four_hundred_days_keep_exactly_the_hand_worked_set() -> None:
    candidates = four_hundred_days()
    result = plan(candidates, FULL, now=at("2026-02-04 23:00"))
    assert result.keep == {name: EXPECTED_REASONS[name]
                           for name in sorted(EXPECTED_REASONS, key=lambda n: at(n[2:]))}
    assert set(result.keep).isdisjoint(result.remove)
    assert sorted(everything(result)) == sorted(c.name for c in candidates)
    assert result.ignored == {}
    assert len(result.remove) == 404 - 15
    assert "b-2026-01-31 02:00" in result.remove  # not the newest of its day


def test_removal_is_oldest_first() -> None:
    result = plan(four_hundred_days(), FULL, now=at("2026-02-04 23:00"))
    assert result.remove[:2] == ["b-2025-01-01 02:00", "b-2025-01-02 02:00"]
    assert result.remove == sorted(result.remove, key=lambda name: at(name[2:]))


def test_input_order_does_not_change_the_plan() -> None:
    candidates = four_hundred_days()
    shuffled = candidates[:]
    random.Random(7).shuffle(shuffled)
    now = at("2026-02-04 23:00")
    assert plan(shuffled, FULL, now) == plan(candidates, FULL, now)


# --- calendar buckets ---------------------------------------------------------------

def test_sunday_2359_and_monday_0000_are_different_weeks() -> None:
    # Sunday 2026-02-01 ends ISO week 5; Monday 2026-02-02 starts week 6.
    pair = [backup("2026-02-01 23:59"), backup("2026-02-02 00:00")]
    result = plan(pair, Policy(keep_weekly=2), now=at("2026-02-03 00:00"))
    assert result.keep == {"b-2026-02-01 23:59": ["weekly 2026-W05"],
                           "b-2026-02-02 00:00": ["weekly 2026-W06", NEWEST]}
    assert result.remove == []


def test_monday_0000_and_sunday_235959_are_one_week() -> None:
    pair = [backup("2026-01-26 00:00"), backup("2026-02-01 23:59:59")]
    result = plan(pair, Policy(keep_weekly=1), now=at("2026-02-03 00:00"))
    assert list(result.keep) == ["b-2026-02-01 23:59:59"]
    assert result.remove == ["b-2026-01-26 00:00"]


def test_iso_week_53_spans_the_new_year() -> None:
    # 2026 has 53 ISO weeks: week 53 runs Mon 2026-12-28 .. Sun 2027-01-03.
    candidates = [backup(when) for when in ("2026-12-27 02:00", "2026-12-31 02:00",
                                            "2027-01-02 02:00", "2027-01-04 02:00")]
    result = plan(candidates, Policy(keep_weekly=3), now=at("2027-01-05 00:00"))
    assert result.keep == {"b-2026-12-27 02:00": ["weekly 2026-W52"],
                           "b-2027-01-02 02:00": ["weekly 2026-W53"],
                           "b-2027-01-04 02:00": ["weekly 2027-W01", NEWEST]}
    assert result.remove == ["b-2026-12-31 02:00"]


def test_daily_keeps_the_newest_backup_of_each_day() -> None:
    candidates = [backup(when) for when in ("2026-03-01 01:00", "2026-03-01 09:00",
                                            "2026-03-01 23:30", "2026-03-02 00:10",
                                            "2026-03-02 12:00")]
    result = plan(candidates, Policy(keep_daily=2), now=at("2026-03-03 00:00"))
    assert result.keep == {"b-2026-03-01 23:30": ["daily 2026-03-01"],
                           "b-2026-03-02 12:00": ["daily 2026-03-02", NEWEST]}
    assert result.remove == ["b-2026-03-01 01:00", "b-2026-03-01 09:00", "b-2026-03-02 00:10"]


def test_hourly_and_yearly_buckets() -> None:
    candidates = [backup(when) for when in ("2024-06-01 10:00", "2025-12-31 22:15",
                                            "2025-12-31 23:05", "2025-12-31 23:55")]
    result = plan(candidates, Policy(keep_hourly=2, keep_yearly=2), now=at("2026-01-01 00:00"))
    assert result.keep == {
        "b-2024-06-01 10:00": ["yearly 2024"],
        "b-2025-12-31 22:15": ["hourly 2025-12-31 22"],
        "b-2025-12-31 23:55": ["hourly 2025-12-31 23", "yearly 2025", NEWEST],
    }
    assert result.remove == ["b-2025-12-31 23:05"]


def test_only_periods_with_a_backup_count() -> None:
    # Three backups months apart: monthly 3 reaches back over the empty months.
    candidates = [backup(when) for when in ("2025-03-10 02:00", "2025-08-10 02:00",
                                            "2026-01-10 02:00", "2024-01-10 02:00")]
    result = plan(candidates, Policy(keep_monthly=3), now=at("2026-01-11 00:00"))
    assert set(result.keep) == names("2025-03-10 02:00", "2025-08-10 02:00", "2026-01-10 02:00")
    assert result.remove == ["b-2024-01-10 02:00"]


# --- combining rules ------------------------------------------------------------------

def test_rules_are_ored_and_their_reasons_accumulate() -> None:
    candidates = [backup("2026-02-02 02:00"), backup("2026-02-03 02:00")]
    result = plan(candidates, Policy(keep_last=1, keep_daily=1, keep_monthly=2),
                  now=at("2026-02-04 00:00"))
    assert result.keep["b-2026-02-03 02:00"] == ["last 1", "daily 2026-02-03",
                                                 "monthly 2026-02", NEWEST]
    # Kept by no rule but the monthly one, which is not filled: the oldest is kept too.
    assert result.keep["b-2026-02-02 02:00"] == ["oldest (monthly 2 not filled)"]
    assert result.remove == []


def test_the_oldest_is_kept_additionally_when_a_rule_has_too_few_buckets() -> None:
    # Two weeks of backups for a weekly 4 rule.
    candidates = [backup(when) for when in ("2026-01-26 02:00", "2026-01-27 02:00",
                                            "2026-02-02 02:00")]
    result = plan(candidates, Policy(keep_weekly=4), now=at("2026-02-03 00:00"))
    assert result.keep == {"b-2026-01-26 02:00": ["oldest (weekly 4 not filled)"],
                           "b-2026-01-27 02:00": ["weekly 2026-W05"],
                           "b-2026-02-02 02:00": ["weekly 2026-W06", NEWEST]}
    assert result.remove == []


def test_no_oldest_is_kept_once_the_rule_is_filled() -> None:
    candidates = [backup(when) for when in ("2026-01-26 02:00", "2026-01-27 02:00",
                                            "2026-02-02 02:00")]
    result = plan(candidates, Policy(keep_weekly=2), now=at("2026-02-03 00:00"))
    assert result.remove == ["b-2026-01-26 02:00"]


def test_the_newest_usable_is_always_kept_and_says_so() -> None:
    candidates = [backup("2026-01-05 02:00"), backup("2026-02-03 02:00"),
                  backup("2026-02-04 02:00", usable=False), backup("2026-02-04 03:00", False)]
    result = plan(candidates, Policy(keep_monthly=1), now=at("2026-02-05 00:00"),
                  failed=["b-2026-02-04 02:00"])
    assert result.keep == {"b-2026-02-03 02:00": ["monthly 2026-02", NEWEST]}
    assert result.remove == ["b-2026-01-05 02:00", "b-2026-02-04 02:00"]


# --- failed, unverified and partial backups ----------------------------------------------

def test_failed_are_removed_unverified_ignored_and_neither_counts() -> None:
    good = [backup(f"2026-03-{day:02d} 02:00") for day in range(1, 11)]
    bad = [backup(f"2026-03-{day:02d} 02:00", usable=False) for day in range(11, 16)]
    unverified = backup("2026-03-16 02:00", usable=False)
    result = plan([*good, *bad, unverified], Policy(keep_last=2), now=at("2026-03-17 00:00"),
                  failed=[c.name for c in bad])
    assert result.keep == {"b-2026-03-09 02:00": ["last 2"],
                           "b-2026-03-10 02:00": ["last 1", NEWEST]}
    assert result.ignored == {"b-2026-03-16 02:00": UNVERIFIED}
    assert result.remove == [c.name for c in good[:8]] + [c.name for c in bad]


def test_an_unusable_backup_not_reported_failed_is_never_removed() -> None:
    partial = backup("2025-01-01 02:00", usable=False)
    result = plan([partial, backup("2026-01-01 02:00")], Policy(keep_last=1),
                  now=at("2026-01-02 00:00"))
    assert result.ignored == {partial.name: UNVERIFIED}
    assert result.remove == []


def test_a_usable_backup_listed_as_failed_still_counts() -> None:
    # Verified wins over a contradicting failure report: deleting must be certain.
    ok = backup("2026-01-01 02:00")
    result = plan([ok], Policy(keep_last=1), now=at("2026-01-02 00:00"), failed=[ok.name])
    assert result.keep == {ok.name: ["last 1", NEWEST]}


def test_duplicate_names_are_refused() -> None:
    twice = [Candidate("b", 1.0, True), Candidate("b", 2.0, True)]
    with pytest.raises(ValueError, match="duplicate"):
        plan(twice, Policy(keep_last=1), now=10.0)


# --- clock skew ---------------------------------------------------------------------

def weekly_real() -> list[Candidate]:
    """Ten real backups, one each Monday from 2026-01-05 to 2026-03-09."""
    first = datetime(2026, 1, 5, 2, tzinfo=UTC)
    return [backup((first + timedelta(weeks=i)).strftime("%Y-%m-%d %H:%M"))
            for i in range(10)]


def test_future_dated_backups_evict_no_real_one() -> None:
    now = at("2026-03-10 00:00")
    real = weekly_real()
    future = [Candidate(f"future-{i:02d}", now + 365 * DAY + i * DAY, True) for i in range(30)]
    result = plan(real + future, Policy(keep_weekly=3), now)
    assert set(result.keep) == names("2026-02-23 02:00", "2026-03-02 02:00", "2026-03-09 02:00")
    assert result.remove == [c.name for c in real[:7]]
    assert set(result.ignored) == {c.name for c in future}
    assert "365.0 d in the future" in result.ignored["future-00"]
    assert plan(real, Policy(keep_weekly=3), now).keep == result.keep


def test_a_backup_within_the_skew_window_counts() -> None:
    now = at("2026-03-10 00:00")
    soon = Candidate("soon", now + 60, True)
    result = plan([*weekly_real(), soon], Policy(keep_weekly=3), now)
    assert result.keep["soon"] == ["weekly 2026-W11", NEWEST]
    assert result.ignored == {}
    strict = plan([*weekly_real(), soon], Policy(keep_weekly=3), now, skew=0.0)
    assert "1.0 min in the future" in strict.ignored["soon"]


def test_a_future_failed_backup_is_ignored_not_removed() -> None:
    now = at("2026-03-10 00:00")
    odd = Candidate("odd", now + DAY, False)
    result = plan([odd, *weekly_real()], Policy(keep_last=1), now, failed=["odd"])
    assert "odd" in result.ignored
    assert "odd" not in result.remove


# --- properties over random sets ------------------------------------------------------

def random_case(rng: random.Random, now: float) -> tuple[list[Candidate], Policy, set[str]]:
    """Up to 40 candidates: past, within skew, far future; usable, failed or unverified."""
    candidates = []
    for i in range(rng.randrange(41)):
        ts = now + rng.choice([-rng.uniform(0, 800 * DAY), rng.uniform(0, 300),
                               rng.uniform(301, 400 * DAY), -float(rng.randrange(5)) * DAY])
        candidates.append(Candidate(f"c{i:02d}", ts, rng.random() < 0.7))
    failed = {c.name for c in candidates if rng.random() < 0.5}
    counts = [rng.randrange(4) for _ in range(6)]
    counts[rng.randrange(6)] = rng.randrange(1, 10)
    return candidates, Policy(*counts), failed


def test_properties_hold_for_random_sets_and_policies() -> None:
    rng = random.Random(20260204)
    now = at("2026-02-04 12:00")
    for _ in range(500):
        candidates, policy, failed = random_case(rng, now)
        result = plan(candidates, policy, now, failed=failed)
        by_name = {c.name: c for c in candidates}
        # keep, remove and ignored partition the input
        assert sorted(everything(result)) == sorted(by_name)
        # the newest usable, not future one is kept, and says so
        counted = [c for c in candidates if c.usable and c.ts <= now + 300]
        if counted:
            newest = max(counted, key=lambda c: (c.ts, c.name))
            assert NEWEST in result.keep[newest.name]
        removed = [by_name[name] for name in result.remove]
        # nothing future and nothing unverified is ever removed
        assert all(c.ts <= now + 300 for c in removed)
        assert all(c.usable or c.name in failed for c in removed)
        # only usable, present ones are kept, and no more than the rules allow
        assert all(by_name[name].usable and by_name[name].ts <= now + 300
                   for name in result.keep)
        rules = policy.rules()
        assert len(result.keep) <= sum(n for _, n in rules) + len(rules) + 1
        assert removed == sorted(removed, key=lambda c: (c.ts, c.name))
        shuffled = candidates[:]
        rng.shuffle(shuffled)
        assert plan(shuffled, policy, now, failed=failed) == result
