"""Fixes, each bound to the findings it repairs, idempotent, applied in dependency order:
the filesystem, then processes, then services. `fix_all` diagnoses, plans, applies (or
only shows the plan with --dry-run), diagnoses again and reports what changed and what
remains. A fix never kills a process that is not this home's."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

from unistack import processes, runtime
from unistack.config import Settings
from unistack.diagnose.findings import OK, Finding
from unistack.hub.client import HubClient, HubUnreachable

Report = Callable[[str], None]

# The order fixes run in: a service cannot start on a directory it may not write.
ORDER = ("fix.env-permissions", "fix.directories", "fix.permissions", "fix.stale-files",
         "fix.orphans", "fix.restart")


class Step(NamedTuple):
    fix: str  # e.g. "fix.restart:redis"
    findings: tuple[str, ...]  # the ids it repairs

    def rank(self) -> int:
        return ORDER.index(self.fix.split(":")[0])


def plan(findings: list[Finding]) -> list[Step]:
    """One step per fix that some open finding names, in ORDER."""
    wanted: dict[str, list[str]] = {}
    for finding in findings:
        if finding.status != OK and finding.fix and finding.fix.split(":")[0] in ORDER:
            wanted.setdefault(finding.fix, []).append(finding.id)
    return sorted((Step(fix, tuple(ids)) for fix, ids in wanted.items()), key=Step.rank)


def apply(step: Step, settings: Settings) -> str:
    """Do STEP; what was done, in a sentence."""
    kind, _, target = step.fix.partition(":")
    if kind == "fix.env-permissions":
        os.chmod(settings.env_file, 0o600)
        return f"{settings.env_file}: mode 0600"
    if kind in ("fix.directories", "fix.permissions"):
        runtime.prepare_dirs(settings)
        return "state directories created and set to their modes"
    if kind == "fix.stale-files":
        return _stale(settings)
    if kind == "fix.orphans":
        left = processes.end_orphans(settings.unistack_home, settings.stop_timeout,
                                     lambda line: None)
        return "orphans stopped" if not left else f"still running: {[p.pid for p in left]}"
    return _restart(settings, target)


def _stale(settings: Settings) -> str:
    """The pid file and the socket of a supervisord that is gone (never a live one's)."""
    if processes.supervisord_pid(settings.unistack_home):
        return "supervisord is running: nothing is stale"
    removed = []
    for path in (settings.run_dir / "supervisord.pid", settings.supervisor_socket):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return f"removed {', '.join(removed)}" if removed else "nothing stale left"


def _restart(settings: Settings, service: str) -> str:
    try:
        code, body = HubClient(settings, timeout=5).post(f"/services/{service}/restart",
                                                         actor="fix_all_container_issues")
    except HubUnreachable as exc:
        return f"restart of {service} not asked: {exc}"
    return f"restart of {service} asked (HTTP {code})" if code < 400 else \
        f"restart of {service} refused: {body.get('error', body)}"
