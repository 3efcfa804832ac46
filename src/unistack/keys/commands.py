"""`keys show|set|setup|update|verify`, and the scripts that call them (setup_env.sh,
update_api_keys.sh, verify_api_keys.py). A key's value is read from a terminal without
echo or from stdin, never from the command line (where `ps` would show it), and is
never printed: `show` masks it as every secret is masked.

Each `set`, `update` and `verify` leaves a record in var/run/keys.json (0600, no key in
it): which keys are set and each provider's last verification. The hub serves it to the
dashboard; `verify` also reports its results to the hub as events (a rejected key is a
warning alert naming the provider)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from unistack.config import Settings, load_settings
from unistack.configkeys import GENERATED_KEYS
from unistack.credentials import ensure_secrets
from unistack.hub.client import HubClient, HubUnreachable
from unistack.keys import providers, store
from unistack.keys.providers import BY_NAME, KEY_NAMES, PROVIDERS, Result
from unistack.runtime import write_atomic

EXIT = {providers.VALID: 0, providers.MISSING: 1, providers.RATE_LIMITED: 1,
        providers.UNREACHABLE: 1, providers.REJECTED: 2, providers.MALFORMED: 2}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the record -------------------------------------------------------------------------


def record_path(settings: Settings) -> Path:
    return settings.run_dir / "keys.json"


def read_record(settings: Settings) -> dict[str, Any]:
    try:
        record = json.loads(record_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(settings: Settings, results: list[Result] | None = None) -> dict[str, Any]:
    """The record with which keys are set now and, for RESULTS' providers, their outcome."""
    record = read_record(settings)
    known = record.get("providers", {})
    for provider in PROVIDERS:
        entry = known.get(provider.name, {})
        entry.update(title=provider.title, base_url=str(settings.value(provider.base_key)),
                     keys={key: bool(settings.value(key)) for key in provider.keys})
        known[provider.name] = entry
    for result in results or []:
        known[result.provider].update(status=result.status, detail=result.detail,
                                      verified=time.time())
    record = {"providers": known, "updated": time.time()}
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(record_path(settings), json.dumps(record, indent=2) + "\n", 0o600)
    return record


# --- show -------------------------------------------------------------------------------


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    record = read_record(settings).get("providers", {})
    sources = dict(settings.secret_sources)
    rows = []
    for provider in PROVIDERS:
        last = record.get(provider.name, {})
        for key in provider.keys:
            value = str(settings.value(key))
            rows.append({"provider": provider.name, "key": key, "set": bool(value),
                         "shown": store.masked(value), "from": sources.get(key, ""),
                         "status": last.get("status", ""),
                         "verified": last.get("verified"),
                         "base_url": str(settings.value(provider.base_key))})
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["verified"])) \
            if row["verified"] else "never"
        origin = f"({row['from']})" if row["from"] else ""
        print(f"{row['key']:<24} {row['shown']:<10} {origin:<18} last verified {when}"
              + (f": {row['status']}" if row["status"] else ""))
    print(f"Alpaca: {settings.alpaca_base_url} "
          f"({'paper' if 'paper-api.' in settings.alpaca_base_url else 'LIVE'})")
    return 0


# --- set, setup, update -----------------------------------------------------------------


def _read_value(prompt: str, stdin: TextIO) -> str:
    """A value from the terminal without echo, or one line of stdin when it is piped."""
    if stdin.isatty():
        return getpass.getpass(prompt)
    line = stdin.readline()
    return line.rstrip("\r\n")


def _checked(key: str, value: str, force: bool) -> str:
    """The format check of KEY's provider; a refusal names the key, never the value."""
    provider = next(p for p in PROVIDERS if key in p.keys)
    wanted = provider.formats[key]
    if not force and not re.fullmatch(wanted.pattern, value):
        raise ValueError(f"{key} (value hidden, {len(value)} characters) is not "
                         f"{wanted.described}; nothing written (--force writes it anyway)")
    return value


def _write(settings: Settings, updates: dict[str, str]) -> Settings:
    store.update(settings.unistack_home, settings.env_file, updates, _say)
    fresh = load_settings()
    _write_record(fresh)
    return fresh


def cmd_set(settings: Settings, args: argparse.Namespace) -> int:
    value = _read_value(f"{args.key} (input hidden): ", sys.stdin)
    if not value:
        print(f"keys set: no value read for {args.key}; nothing written", file=sys.stderr)
        return 1
    fresh = _write(settings, {args.key: _checked(args.key, value, args.force)})
    print(f"{args.key} = {store.masked(str(fresh.value(args.key)))} in {settings.env_file} "
          f"(the previous file: {store.backup_path(settings.env_file)}); check it with "
          "`keys verify`")
    _overridden(fresh, [args.key])
    return 0


def _overridden(settings: Settings, keys: list[str]) -> None:
    """A key the environment or a _FILE sets wins over .env: say so."""
    for key, where in settings.secret_sources:
        if key in keys and not where.startswith(".env"):
            print(f"note: {key} comes from {where}, which wins over .env", file=sys.stderr)


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    """.env (0600) with the generated internal secrets, then the API keys: asked for on a
    terminal (Enter keeps the current one), or taken from the environment."""
    settings = ensure_secrets(settings)
    print(f"{settings.env_file}: 0600, with {', '.join(GENERATED_KEYS)} (generated)")
    interactive = not args.non_interactive and sys.stdin.isatty()
    if not interactive and not args.non_interactive:
        print("keys setup: stdin is not a terminal: pass --non-interactive to take the keys "
              "from the environment", file=sys.stderr)
        return 2
    updates = _asked(settings, KEY_NAMES, args.force) if interactive \
        else _from_environment(settings, args.force)
    if updates:
        settings = _write(settings, updates)
    else:
        _write_record(settings)
    missing = [key for key in KEY_NAMES if not settings.value(key)]
    for key in KEY_NAMES:
        print(f"  {key:<24} {store.masked(str(settings.value(key)))}")
    if missing:
        print(f"not set: {', '.join(missing)} (scripts/update_api_keys.sh sets them)")
    return 0


def _from_environment(settings: Settings, force: bool) -> dict[str, str]:
    """The keys the environment sets that .env does not hold yet (or holds otherwise)."""
    stored = store.values(settings.env_file, KEY_NAMES)
    found = {key: os.environ[key] for key in KEY_NAMES if os.environ.get(key)}
    return {key: _checked(key, value, force) for key, value in found.items()
            if value != stored[key]}


def _ask(settings: Settings, key: str, force: bool) -> str:
    """KEY's new value, format-checked, asked for showing the current one masked ("":
    Enter, keep it)."""
    value = _read_value(f"{key} [{store.masked(str(settings.value(key)))}; Enter keeps it]: ",
                        sys.stdin)
    return _checked(key, value, force) if value else ""


def _asked(settings: Settings, keys: tuple[str, ...], force: bool) -> dict[str, str]:
    answers = {key: _ask(settings, key, force) for key in keys}
    return {key: value for key, value in answers.items() if value}


def cmd_update(settings: Settings, args: argparse.Namespace) -> int:
    """Each key (or KEYS) shown masked and replaced one at a time: every answer is written
    at once, atomically, the file before it kept as .env.bak."""
    unknown = [key for key in args.keys if key not in KEY_NAMES]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not an API key; expected some of "
                         f"{', '.join(KEY_NAMES)}")
    chosen = tuple(args.keys) or KEY_NAMES
    written = []
    for key in chosen:
        current = store.masked(str(settings.value(key)))
        value = _ask(settings, key, args.force)
        if not value:
            print(f"{key}: kept {current}")
            continue
        settings = _write(settings, {key: value})
        written.append(key)
        print(f"{key}: {current} -> {store.masked(str(settings.value(key)))}")
    if written:
        print(f"written to {settings.env_file}; the file before the last change is "
              f"{store.backup_path(settings.env_file)} (0600). Check them: `keys verify`")
        _overridden(settings, written)
    return 0


# --- verify -----------------------------------------------------------------------------


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    names = tuple(args.providers)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a provider; expected some of "
                         f"{', '.join(BY_NAME)}")
    timeout = args.timeout or settings.keys_verify_timeout
    results = providers.verify_all(settings, names, timeout)
    _write_record(settings, results)
    told = _tell_hub(settings, results)
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results], "hub": told}, indent=2))
    else:
        for result in results:
            print(f"{result.title:<16} {result.status:<13} {result.detail}")
        print(f"hub: {told}")
    return max(EXIT[result.status] for result in results)


def _tell_hub(settings: Settings, results: list[Result]) -> str:
    """The results as events (a rejected key a warning alert); what the hub said."""
    try:
        code, body = HubClient(settings, timeout=5).post(
            "/keys/verified", {"results": [r.to_json() for r in results]},
            actor="keys verify")
    except HubUnreachable:
        return "not running: the results are in var/run/keys.json only"
    return "told" if code < 300 else f"refused (HTTP {code}): {body.get('error', body)}"


# --- the parser -------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="the trading API keys (Polygon.io, Unusual "
                               "Whales, Alpaca): show masked, set, verify")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="each key masked (its last 4 characters), where it "
                          "comes from, when it was last verified")
    show.add_argument("--json", action="store_true", help="one JSON document")
    one = sub.add_parser("set", help="set KEY from the terminal (no echo) or one line of "
                         "stdin; never from the command line")
    one.add_argument("key", choices=KEY_NAMES, metavar="KEY", help=", ".join(KEY_NAMES))
    setup = sub.add_parser("setup", help="create .env (0600) with the internal secrets, then "
                           "ask for the API keys")
    setup.add_argument("--non-interactive", action="store_true",
                       help="take the API keys from the environment, ask nothing")
    update = sub.add_parser("update", help="show each key masked and replace it (Enter keeps "
                            "it); the previous .env kept as .env.bak")
    update.add_argument("keys", nargs="*", metavar="KEY",
                        help=f"only these keys (of {', '.join(KEY_NAMES)})")
    for parser in (one, setup, update):
        parser.add_argument("--force", action="store_true",
                            help="write a value that fails its provider's format check")
    verify = sub.add_parser("verify", help="format check, then one cheap authenticated "
                            "request per provider: valid, rejected, rate-limited, unreachable")
    verify.add_argument("providers", nargs="*", metavar="PROVIDER",
                        help=f"only these (of {', '.join(BY_NAME)})")
    verify.add_argument("--timeout", type=float, default=0.0,
                        help="seconds per request (default KEYS_VERIFY_TIMEOUT)")
    verify.add_argument("--json", action="store_true", help="one JSON document")


HANDLERS = {"show": cmd_show, "set": cmd_set, "setup": cmd_setup, "update": cmd_update,
            "verify": cmd_verify}


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    return HANDLERS[args.keys_command](settings, args)
