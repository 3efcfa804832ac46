"""Findings: what one check saw, with its evidence and the fix that repairs it; the
report they make (text grouped by status, a stable JSON schema, an exit code). Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (FAIL, WARN, OK)  # the order a report lists them in
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}
SCHEMA = 1  # of the --json document: bump when a field changes meaning or goes away


class Finding(NamedTuple):
    """One check's verdict. ID is stable (`area.subject`, e.g. `redis.persistence`);
    EVIDENCE is what shows it (a value, a command's answer, log lines), already redacted;
    FIX is the id of the fix that repairs it, REMEDY the command or step that does it by
    hand ("" for both when only the operator can decide)."""

    id: str
    title: str
    status: str
    evidence: str = ""
    fix: str = ""
    remedy: str = ""
    severity: str = "warning"  # what it puts at risk: critical, warning, info

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def ok(id: str, title: str, evidence: str = "") -> Finding:
    return Finding(id, title, OK, evidence, severity="info")


def warn(id: str, title: str, evidence: str, *, fix: str = "", remedy: str = "") -> Finding:
    return Finding(id, title, WARN, evidence, fix, remedy, "warning")


def fail(id: str, title: str, evidence: str, *, fix: str = "", remedy: str = "",
         critical: bool = True) -> Finding:
    return Finding(id, title, FAIL, evidence, fix, remedy, "critical" if critical else "warning")


def guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """CHECK's findings, or one saying it could not run: one broken check must never hide
    the others."""
    try:
        return check()
    except Exception as exc:
        return [fail(f"diagnose.error:{name}", f"the {name} check could not run",
                     f"{type(exc).__name__}: {exc}", critical=False)]


def overall(findings: Iterable[Finding]) -> str:
    statuses = {f.status for f in findings}
    return next((s for s in STATUSES if s in statuses), OK)


def document(findings: list[Finding], took: float, home: str) -> dict[str, Any]:
    """The --json document (schema in docs/diagnose.md)."""
    return {"schema": SCHEMA, "overall": overall(findings), "home": home,
            "seconds": round(took, 3), "counts": {s: sum(f.status == s for f in findings)
                                                  for s in STATUSES},
            "findings": [f.to_json() for f in findings]}


def text(findings: list[Finding], passed: bool = True) -> str:
    """Failures first, then warnings (each with what to do), then (PASSED) a count of the
    rest."""
    lines: list[str] = []
    for status, label in ((FAIL, "FAIL"), (WARN, "WARN")):
        for finding in (f for f in findings if f.status == status):
            lines.append(f"{label} {finding.id}: {finding.title}")
            lines += [f"     {line}" for line in finding.evidence.splitlines()[:12]]
            if finding.remedy:
                lines.append(f"     fix: {finding.remedy}")
    if passed:
        ids = [f.id for f in findings if f.status == OK]
        lines.append(f"ok   {len(ids)} checks passed" + (f": {', '.join(ids)}" if ids else ""))
    return "\n".join(lines)
