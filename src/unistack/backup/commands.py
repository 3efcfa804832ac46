"""The backup subcommands of `python -m unistack` (scripts/manage_production.sh):
backup, backups, verify, restore and prune, each with --help and --json.

Exit codes: 0 done; 1 failed; 2 bad arguments or configuration (or a restore without
--yes where nobody can be asked); 3 busy: another backup, prune or restore holds the
backup lock (or a start/stop holds the control lock); 4 an archive failed verification
(corrupt, truncated, unsafe; nothing live was touched); 5 not enough disk space.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unistack.backup import archive, catalog, create, prune, redisdata, restore, verify
from unistack.backup.progress import Meter
from unistack.backup.retention import EmptyPolicy, span
from unistack.config import Settings
from unistack.lock import Busy

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_CORRUPT, EXIT_SPACE = 1, 2, 3, 4, 5
Command = Callable[[Settings, argparse.Namespace], int]


def _out(args: argparse.Namespace) -> Callable[[str], None]:
    """Human lines: stdout normally, stderr with --json (stdout holds the one document)."""
    stream = sys.stderr if args.json else sys.stdout
    return lambda text: print(text, file=stream, flush=True)


def _identities(args: argparse.Namespace) -> list[Any] | None:
    if not getattr(args, "identity", None):
        return None
    from pyrage import x25519  # noqa: PLC0415 -- only encrypted archives need it

    try:
        lines = [line.strip() for line in Path(args.identity).read_text().splitlines()]
        keys = [line for line in lines if line.startswith("AGE-SECRET-KEY-")]
        return [x25519.Identity.from_str(key) for key in keys] or _no_identity(args.identity)
    except OSError as exc:
        raise ValueError(f"--identity {args.identity}: {exc.strerror or exc}") from None


def _no_identity(path: str) -> list[Any]:
    raise ValueError(f"--identity {path} holds no AGE-SECRET-KEY- line: expected an age "
                     "identity file (age-keygen's output)")


def _guarded(command: Command) -> Command:
    """Domain errors to exit codes, with one line saying why (and a JSON error)."""
    def run(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return command(settings, args)
        except Busy as exc:
            return _fail(args, settings, str(exc), EXIT_BUSY)
        except verify.VerifyError as exc:
            return _fail(args, settings, str(exc), EXIT_CORRUPT)
        except (create.NoSpace, archive.NoRoom) as exc:
            return _fail(args, settings, str(exc), EXIT_SPACE)
        except (EmptyPolicy, ValueError) as exc:
            return _fail(args, settings, str(exc), EXIT_USAGE)
        except (create.BackupError, restore.RestoreError, redisdata.RedisDataError,
                archive.ArchiveError, OSError, RuntimeError) as exc:
            return _fail(args, settings, str(exc), EXIT_FAILED)
    return run


def _fail(args: argparse.Namespace, settings: Settings, why: str, code: int) -> int:
    why = settings.redact(why)
    print(f"unistack {args.command}: {why}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"ok": False, "error": why, "exit": code}), flush=True)
    return code


@_guarded
def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    say = _out(args)
    taken = create.take(settings, say, Meter(enabled=not args.json),
                        include_secrets=args.include_secrets, identities=_identities(args))
    pruned = None
    if args.prune and taken.backup.state == catalog.VERIFIED:
        with create.backup_lock(settings, "prune", say):
            pruned = prune.prune(settings, say)
    if args.json:
        print(json.dumps({"ok": True, "backup": taken.backup.to_json(),
                          "seconds": round(taken.seconds, 3),
                          "verify_seconds": round(taken.verification.seconds, 3)
                          if taken.verification else None,
                          "pruned": pruned.plan.remove if pruned else []}), flush=True)
    else:
        say(f"backup {taken.backup.state}: {taken.backup.path}")
    return 0


@_guarded
def cmd_backups(settings: Settings, args: argparse.Namespace) -> int:
    backups = catalog.scan(settings.backups_dir)
    if args.json:
        print(json.dumps([b.to_json() for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no backups in {settings.backups_dir}; take one with `backup`")
        return 0
    now = time.time()
    print(f"{'NAME':<52} {'AGE':>8} {'SIZE':>10} {'KEYS':>9}  STATE")
    for b in backups:
        keys = "-" if b.keys is None else str(b.keys)
        age = span(now - b.ts) if b.ts <= now else "future"
        print(f"{b.name:<52} {age:>8} {_size(b.size):>10} {keys:>9}  {b.state}"
              + (f" ({b.detail})" if b.state in (catalog.FAILED, catalog.PARTIAL) else ""))
    return 0


def _size(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _archive(settings: Settings, given: str | None) -> Path:
    """The archive named on the command line (a path, or a name in BACKUP_DIR), or the
    newest complete one."""
    if given:
        path = Path(given)
        if not path.exists() and (settings.backups_dir / given).exists():
            path = settings.backups_dir / given
        if not path.is_file():
            raise ValueError(f"no archive {given!r} (neither a file nor a name in "
                             f"{settings.backups_dir}; `backups` lists them)")
        return path
    newest = next((b for b in catalog.scan(settings.backups_dir)
                   if b.state != catalog.PARTIAL), None)
    if newest is None:
        raise ValueError(f"no backups in {settings.backups_dir} to verify")
    return newest.path


@_guarded
def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    say = _out(args)
    path = _archive(settings, args.archive)
    with create.backup_lock(settings, "verify", say):
        result = verify.verify(settings, path, Meter(enabled=not args.json), say,
                               identities=_identities(args))
    if args.json:
        print(json.dumps({"ok": True, "archive": str(path), "keys": result.keys,
                          "seconds": round(result.seconds, 3),
                          "load_seconds": round(result.load_seconds, 3)}), flush=True)
    return 0


@_guarded
def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    say = _out(args)
    path = _archive(settings, args.archive)
    if not args.yes and not _confirmed(settings, path):
        return _fail(args, settings, "restore replaces Redis's data, the models and the "
                     "market data of this home: add --yes (or run it on a terminal and "
                     "confirm)", EXIT_USAGE)
    done = restore.restore(settings, path, say, Meter(enabled=not args.json),
                           identities=_identities(args), with_config=args.with_config)
    safety = done.safety.path if done.safety else None
    if args.json:
        print(json.dumps({"ok": True, "archive": str(path), "keys": done.keys,
                          "seconds": round(done.seconds, 3), "online": done.online,
                          "safety_backup": str(safety) if safety else None,
                          "safety_seconds": round(done.safety_seconds, 3),
                          "notes": done.notes}), flush=True)
        return 0
    say(f"restored {path.name}: {done.keys} keys, in {done.seconds:.1f} s"
        + (f" (plus {done.safety_seconds:.1f} s for the safety backup {safety})"
           if safety else ""))
    for note in done.notes:
        say(f"  note: {note}")
    return 0


def _confirmed(settings: Settings, path: Path) -> bool:
    if not sys.stdin.isatty():
        return False
    print(f"Restore {path.name} into {settings.unistack_home}? Redis's data, the models "
          "and the market data are replaced (a safety backup is taken first if the "
          "stack runs). Type 'restore' to go on: ", end="", flush=True)
    return sys.stdin.readline().strip() == "restore"


@_guarded
def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    say = _out(args)
    with create.backup_lock(settings, "prune", say):
        done = prune.prune(settings, say, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"ok": True, "policy": done.policy, "dry_run": done.dry_run,
                          "keep": done.plan.keep, "remove": done.plan.remove,
                          "ignored": done.plan.ignored,
                          "leftovers": [str(p) for p in done.leftovers]}, indent=2))
        return 0
    say(f"policy: {done.policy}; {len(done.plan.keep)} kept, {len(done.plan.remove)} "
        f"{'would be ' if done.dry_run else ''}removed, {len(done.plan.ignored)} left alone")
    for name, why in done.plan.ignored.items():
        say(f"  left alone: {name}: {why}")
    return 0


def add_parsers(commands: Any) -> None:
    """Add the backup subcommands to the CLI's subparsers (HANDLERS runs them)."""
    backup = commands.add_parser("backup", help="take a verified backup (Redis snapshot, "
                                 "models, market data, config.env) into BACKUP_DIR")
    backup.add_argument("--include-secrets", action="store_true",
                        help="also archive .env; the archive is encrypted to BACKUP_RECIPIENT")
    backup.add_argument("--prune", action="store_true",
                        help="apply the retention policy once the backup is verified")
    listing = commands.add_parser("backups", help="the backups: age, size, keys, verified state")
    check = commands.add_parser("verify", help="verify an archive: sha256, every file, "
                                "redis-check-rdb and a trial restore")
    check.add_argument("archive", nargs="?", help="a path or a name (default: the newest)")
    back = commands.add_parser("restore", help="verify, then restore an archive into this "
                               "home (running or not); rolls back on any failure")
    back.add_argument("archive", help="a path or a name in BACKUP_DIR")
    back.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    back.add_argument("--with-config", action="store_true",
                      help="also replace config.env with the archived one")
    trim = commands.add_parser("prune", help="delete backups the retention policy "
                               "(BACKUP_KEEP_*) no longer keeps")
    trim.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    for parser in (backup, check, back):
        parser.add_argument("--identity", metavar="FILE",
                            help="an age identity file, for archives made with --include-secrets")
    for parser in (backup, listing, check, back, trim):
        parser.add_argument("--json", action="store_true", help="print one JSON document")


HANDLERS: dict[str, Command] = {"backup": cmd_backup, "backups": cmd_backups,
                                "verify": cmd_verify, "restore": cmd_restore,
                                "prune": cmd_prune}
