"""unistack.event: the one event record, its kinds and how stored events are read back."""

from __future__ import annotations

import json

from unistack.event import Kind, Severity, event, parse


def test_an_event_is_json_with_its_kind_as_a_string() -> None:
    record = event("redis", Kind.HUNG, Severity.CRITICAL, "liveness failed", 1.5, onset=1.0)
    assert json.loads(json.dumps(record)) == {
        "ts": 1.5, "service": "redis", "kind": "hung", "severity": "critical",
        "detail": "liveness failed", "onset": 1.0}


def test_a_stored_event_reads_back_with_kind_and_severity_as_members() -> None:
    stored = json.loads(json.dumps(event("redis", Kind.CRASHED, Severity.WARNING, "x", 2.0,
                                         id=7, cause="redis")))
    back = parse(stored)
    assert back is not None
    assert back["kind"] is Kind.CRASHED and back["severity"] is Severity.WARNING
    assert back["id"] == 7 and back["cause"] == "redis"


def test_what_is_not_an_event_is_skipped_not_trusted() -> None:
    good = {"ts": 1, "service": "redis", "kind": "ready", "severity": "info", "detail": "ok"}
    assert parse(good) is not None
    assert parse({**good, "kind": "exploded"}) is None
    assert parse({**good, "severity": "fatal"}) is None
    assert parse({**good, "ts": "yesterday"}) is None
    assert parse({k: v for k, v in good.items() if k != "detail"}) is None
    assert parse(["not", "a", "dict"]) is None
