"""diagnose.findings: the overall verdict, the exit code, the text and the JSON schema."""

from __future__ import annotations

from unistack.diagnose.findings import EXIT_CODES, document, fail, ok, overall, text, warn


def test_the_worst_status_wins_and_sets_the_exit_code() -> None:
    assert overall([]) == "ok" and EXIT_CODES[overall([ok("a", "fine")])] == 0
    findings = [ok("a", "fine"), warn("b", "meh", "x"), ok("c", "fine")]
    assert EXIT_CODES[overall(findings)] == 1
    assert EXIT_CODES[overall([*findings, fail("d", "broken", "y")])] == 2


def test_text_lists_failures_first_with_evidence_and_the_fix() -> None:
    findings = [ok("a.ok", "fine"), warn("b.warn", "meh", "seen here", remedy="do this"),
                fail("c.fail", "broken", "line 1\nline 2", fix="fix.x", remedy="run that")]
    shown = text(findings).splitlines()
    assert shown[0] == "FAIL c.fail: broken"
    assert shown[1:4] == ["     line 1", "     line 2", "     fix: run that"]
    assert shown[4] == "WARN b.warn: meh"
    assert shown[-1] == "ok   1 checks passed: a.ok"


def test_the_json_document_has_its_schema_counts_and_every_field() -> None:
    findings = [ok("a", "fine"), fail("b", "broken", "why", fix="fix.b", remedy="run",
                                      critical=False)]
    made = document(findings, 0.1234, "/srv/home")
    assert made["schema"] == 1 and made["overall"] == "fail" and made["seconds"] == 0.123
    assert made["counts"] == {"fail": 1, "warn": 0, "ok": 1}
    assert made["findings"][1] == {"id": "b", "title": "broken", "status": "fail",
                                   "evidence": "why", "fix": "fix.b", "remedy": "run",
                                   "severity": "warning"}
