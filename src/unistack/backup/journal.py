"""The restore journal: which live directories a restore is swapping, written before the
first rename, removed after the last check. A restore killed in between (kill -9, power
loss) leaves it behind; `recover` puts every live directory back as it was, so the
stack never starts on half-restored data. `start`, `backup`, `restore` and the hub
(when a restore holding its services in maintenance dies) call it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from unistack.config import Settings
from unistack.runtime import fsync_path, write_atomic

log = logging.getLogger("unistack.backup")
Report = Callable[[str], None]


class Swap(NamedTuple):
    """LIVE moves to ASIDE, then NEW (from the staging directory) moves to LIVE."""

    live: Path
    aside: Path
    new: Path


def path(settings: Settings) -> Path:
    return settings.run_dir / "restore.json"


def begin(settings: Settings, swaps: list[Swap], archive: str) -> None:
    document = {"archive": archive, "since": time.time(), "pid": os.getpid(),
                "swaps": [[str(p) for p in swap] for swap in swaps]}
    write_atomic(path(settings), json.dumps(document, indent=2) + "\n", 0o600)


def apply(swaps: list[Swap]) -> None:
    """Make the restored directories durable, then move each live directory aside and
    the restored one into its place."""
    for swap in swaps:
        _sync_tree(swap.new)
    for swap in swaps:
        if swap.live.exists():
            os.rename(swap.live, swap.aside)
        _move(swap.new, swap.live)
    for parent in {swap.live.parent for swap in swaps}:
        fsync_path(parent)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ROOT (a rename is only as durable as both)."""
    for path in [root, *root.rglob("*")]:
        fsync_path(path)


def _move(source: Path, target: Path) -> None:
    """A rename (same file system, atomic); a copy if BACKUP_DIR's staging is elsewhere."""
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(str(source), str(target))


def placed(settings: Settings) -> None:
    """Every swap is done: from here an interrupted restore keeps the restored data (it
    was verified, and Redis may already have taken writes on it) instead of undoing it."""
    journal = path(settings)
    document = json.loads(journal.read_text())
    write_atomic(journal, json.dumps({**document, "placed": True}, indent=2) + "\n", 0o600)


def done(settings: Settings) -> None:
    """The restore is over: its journal and the directories it moved aside go."""
    journal = path(settings)
    try:
        swaps = [Swap(*map(Path, swap)) for swap in json.loads(journal.read_text())["swaps"]]
    except (OSError, ValueError, KeyError, TypeError):
        swaps = []
    journal.unlink(missing_ok=True)
    for swap in swaps:
        shutil.rmtree(swap.aside, ignore_errors=True)


ROLLED_BACK, KEPT = "rolled back", "kept"


def recover(settings: Settings, report: Report = log.warning, force: bool = False) -> str:
    """Finish an interrupted restore (if its journal is there): undo its swaps, unless
    they were all done (then keep the restored data) and FORCE is not given (a restore
    whose restored data failed its checks). What it did: ROLLED_BACK, KEPT or ""."""
    journal = path(settings)
    try:
        document = json.loads(journal.read_text())
        swaps = [Swap(*map(Path, swap)) for swap in document["swaps"]]
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{journal} is unreadable ({exc}); see docs/backup.md "
                           "'An interrupted restore' to put the data back by hand") from None
    if document.get("placed") and not force:
        done(settings)
        report(f"an interrupted restore of {document.get('archive')} had placed all its "
               "data: the restored data is kept")
        return KEPT
    for swap in reversed(swaps):
        if not swap.aside.exists():
            continue  # never moved aside: the live directory is still the old one
        if swap.live.exists():
            shutil.rmtree(swap.live)  # restored data, half in place: the old data wins
        os.rename(swap.aside, swap.live)
    journal.unlink()
    report(f"an interrupted restore of {document.get('archive')} was rolled back: the data "
           "is as it was before it")
    return ROLLED_BACK
