"""All the checks in order, each isolated (a check that breaks is itself a finding, never
the end of the diagnosis), every evidence redacted; the `diagnose` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from unistack import stack
from unistack.config import Settings, load_settings
from unistack.diagnose import bundle, drift, files, fixes, readiness, running
from unistack.diagnose.findings import (
    EXIT_CODES,
    OK,
    Finding,
    document,
    fail,
    guarded,
    overall,
    text,
)
from unistack.policy import DEGRADED, FAILED, LOOPING, MAINTENANCE


def diagnose(settings: Settings) -> list[Finding]:
    """Every finding about this home, files first, then what runs. Changes nothing."""
    findings = guarded("configuration", lambda: files.configuration(settings))
    findings += guarded("env", lambda: [files.env_file(settings)])
    findings += guarded("state directories", lambda: files.state_dirs(settings))
    findings += guarded("supervisord.conf", lambda: drift.supervisord_conf(settings))
    findings += guarded("container files", lambda: drift.container_files(settings.root))
    checked, supervised = running.programs(settings)
    findings += checked
    findings += guarded("stale files",
                         lambda: files.stale_files(settings, supervised is not None))
    findings += guarded("orphans", lambda: running.orphans(settings, supervised))
    findings += guarded("ports", lambda: running.ports(settings, supervised))
    if supervised is not None:
        findings += guarded("running configuration", lambda: drift.running(settings))
        findings += guarded("services", lambda: running.services(settings))
    findings += guarded("disk", lambda: files.disk(settings))
    findings += guarded("models", lambda: files.models(settings))
    findings += guarded("backups", lambda: [files.backups(settings)])
    findings += guarded("host", files.host)
    return [f._replace(evidence=settings.redact(f.evidence)) for f in findings]


def cmd_diagnose(settings: Settings, args: argparse.Namespace) -> int:
    begun = time.monotonic()
    findings = diagnose(settings)
    took = time.monotonic() - begun
    if args.bundle is not None:
        path = bundle.write(Path(args.bundle) if args.bundle else bundle.default_path(),
                            settings, findings, took)
        print(f"support bundle (secrets masked): {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(document(findings, took, str(settings.unistack_home)), indent=2))
    else:
        print(text(findings))
        print(f"diagnosed {settings.unistack_home} in {took:.2f} s: {overall(findings)}")
    return EXIT_CODES[overall(findings)]


def add_parser(commands: Any) -> None:
    """Add `diagnose` to the CLI's subparsers."""
    diagnose_parser = commands.add_parser(
        "diagnose", help="read-only checks: each finding with its evidence and its fix; "
        "exit 0 ok, 1 warnings, 2 failures")
    diagnose_parser.add_argument("--json", action="store_true",
                                 help="one JSON document (schema: docs/diagnose.md)")
    diagnose_parser.add_argument(
        "--bundle", nargs="?", const="", metavar="PATH",
        help="also write a support tarball (findings, log tails, config and versions, "
        "secrets masked) to PATH (default: ./unistack-support-<time>.tar.gz)")
    fix = commands.add_parser(
        "fix", help="diagnose, apply every fix the findings name (filesystem, processes, "
        "services), diagnose again; exit as diagnose")
    fix.add_argument("--dry-run", action="store_true", help="only show the plan")
    ready = commands.add_parser(
        "readiness", help="before a deploy: files, configuration, strong secrets, no drift, "
        "linters and promtool, backups, Slack, GPU; exit as diagnose")
    ready.add_argument("--json", action="store_true", help="one JSON document")
    fix.add_argument("--only", metavar="WORD", help="only the fixes of findings whose id "
                     "holds WORD (e.g. dashboard)")


def cmd_fix(settings: Settings, args: argparse.Namespace) -> int:
    """Diagnose, apply the fixes the findings name in order (or show them), diagnose again."""
    before = diagnose(settings)
    only = (args.only or "").lower()  # `dashboard` is also port.foreign:DASHBOARD_PORT
    steps = [s for s in fixes.plan(before) if any(only in f.lower() for f in s.findings)]
    if not steps:
        print(f"nothing to fix{f' for {args.only}' if args.only else ''}: "
              f"{overall(before)} ({len(before)} findings)")
        left = [f for f in before if f.status != OK and only in f.id.lower()]
        if left:  # what only the operator can do, and how
            print("remains:\n" + text(left, passed=False))
        return EXIT_CODES[overall(before)]
    for step in steps:
        if args.dry_run:
            print(f"would run {step.fix} for {', '.join(step.findings)}")
            continue
        print(f"{step.fix}: {fixes.apply(step, settings, _progress)}", flush=True)
        settings = load_settings(lenient=True)  # the next step sees what this one fixed
    if args.dry_run:
        return EXIT_CODES[overall(before)]
    if any(s.rank() >= fixes.ORDER.index("fix.runtime-config") for s in steps):
        _settle(settings)
    after = diagnose(settings)
    return _changes(before, after)


# States a service stays in however long the fix waits: for the diagnosis to report.
_SETTLED = (DEGRADED, FAILED, LOOPING, MAINTENANCE)


def _settle(settings: Settings) -> None:
    """After a restart, until every service is ready or stuck in a state waiting will not
    change (a dependent reconnecting to a restarted Redis takes a moment): the diagnosis
    after the fixes is of a settled stack. At most START_TIMEOUT."""
    deadline = time.monotonic() + settings.start_timeout
    while time.monotonic() < deadline:
        try:
            if all(s["ready"] or s["state"] in _SETTLED
                   for s in stack.status(settings)["services"]):
                return
        except (OSError, ValueError, stack.StackError):
            return  # nothing to wait for: what is down is for the diagnosis to say
        time.sleep(0.2)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _changes(before: list[Finding], after: list[Finding]) -> int:
    was = {f.id for f in before if f.status != "ok"}
    still = [f for f in after if f.status != "ok"]
    fixed = sorted(was - {f.id for f in still})
    print(f"fixed: {', '.join(fixed) or 'nothing'}")
    if still:
        print("remains:\n" + text(still, passed=False))
    return EXIT_CODES[overall(after)]


def cmd_ready(settings: Settings, args: argparse.Namespace) -> int:
    """verify_production_readiness.sh: the checkout and the home before a deploy."""
    from unistack.ml import capability  # noqa: PLC0415 (GPU libraries: only when asked)

    def gpu_usable() -> bool:
        return bool(capability.probe_capabilities().gpu_usable)

    begun = time.monotonic()
    findings = readiness.readiness(settings, gpu_usable)
    took = time.monotonic() - begun
    if args.json:
        print(json.dumps(document(findings, took, str(settings.unistack_home)), indent=2))
    else:
        print(text(findings))
        print(f"production readiness of {settings.root} ({settings.unistack_home}) in "
              f"{took:.1f} s: {overall(findings)}")
    return EXIT_CODES[overall(findings)]


def cmd_docker_diagnose(argv: list[str]) -> int:
    """`--docker diagnose [--json]`: the engine's view of the unified container, then
    `unistack diagnose --json` inside it when it runs."""
    from unistack.container import ContainerError, Unified  # noqa: PLC0415 (the SDK)
    from unistack.diagnose import docker as docker_checks  # noqa: PLC0415

    begun = time.monotonic()
    try:
        unified = Unified()
    except ContainerError as exc:
        findings = [docker_checks.engine_finding(str(exc))]
        project = os.environ.get("COMPOSE_PROJECT_NAME", "unistack")
    else:
        project = unified.project
        findings = docker_checks.container_findings(unified)
        if any(f.id == "docker.container" and f.status == "ok" for f in findings):
            findings += _inside(unified)
    took = time.monotonic() - begun
    if "--json" in argv:
        print(json.dumps(document(findings, took, f"container of {project}"), indent=2))
    else:
        print(text(findings))
        print(f"diagnosed the container of {project} in {took:.2f} s: {overall(findings)}")
    return EXIT_CODES[overall(findings)]


def _inside(unified: Any) -> list[Finding]:
    from unistack.container import ContainerError  # noqa: PLC0415

    try:
        _, output = unified.run(["diagnose", "--json"])
        return [Finding(**f) for f in json.loads(output)["findings"]]
    except (ContainerError, ValueError, KeyError, TypeError) as exc:
        return [fail("diagnose.error:inside", "diagnose inside the container could not run",
                     f"{type(exc).__name__}: {exc}", critical=False)]
