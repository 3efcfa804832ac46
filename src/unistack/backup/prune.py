"""Pruning BACKUP_DIR by the retention policy in config.env (unistack.backup.retention
decides; this module only lists and deletes): only verified backups count, failed ones
and the leftovers of dead writers (.partial, sidecars without an archive) go, unverified,
sealed (encrypted) and future-dated ones stay, and the newest verified one always stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from unistack.backup import catalog
from unistack.backup.retention import Candidate, Plan, Policy, plan
from unistack.config import Settings

Report = Callable[[str], None]


class Pruned(NamedTuple):
    policy: str
    plan: Plan
    leftovers: list[Path]  # partial archives and orphaned sidecars
    dry_run: bool


def policy_of(settings: Settings) -> Policy:
    return Policy(keep_last=settings.backup_keep_last, keep_hourly=settings.backup_keep_hourly,
                  keep_daily=settings.backup_keep_daily, keep_weekly=settings.backup_keep_weekly,
                  keep_monthly=settings.backup_keep_monthly,
                  keep_yearly=settings.backup_keep_yearly)


def prune(settings: Settings, report: Report, dry_run: bool = False) -> Pruned:
    """Apply the policy (EmptyPolicy if it keeps nothing); the caller holds the backup lock."""
    policy = policy_of(settings)
    directory = settings.backups_dir
    backups = catalog.scan(directory)
    complete = [b for b in backups if b.state != catalog.PARTIAL]
    decided = plan([Candidate(b.name, b.ts, b.state == catalog.VERIFIED) for b in complete],
                   policy, time.time(),
                   failed=[b.name for b in complete if b.state == catalog.FAILED])
    # A .partial is a dead writer's; an archive whose .sha256 is missing stays (listed).
    leftovers = [b.path for b in backups if b.path.name.endswith(".partial")]
    leftovers += catalog.orphans(directory)
    verb = "would remove" if dry_run else "removing"
    for name in decided.remove:
        report(f"{verb} {name}")
        if not dry_run:
            _remove(directory / name)
    for path in leftovers:
        report(f"{verb} {path.name} (left by a backup that did not finish)")
        if not dry_run:
            path.unlink(missing_ok=True)
    return Pruned(policy.describe(), decided, leftovers, dry_run)


def _remove(path: Path) -> None:
    """The archive first: without it, its sidecars are orphans the next prune removes."""
    path.unlink(missing_ok=True)
    for suffix in (".sha256", ".json"):
        catalog.sidecar(path, suffix).unlink(missing_ok=True)
