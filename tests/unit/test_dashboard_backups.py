"""dashboard: the Backups card, as backups.py words it and as the overview page renders it
(fresh, stale, failed, running, scheduling off, no backups document), escaped."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.dashboard_fakes import HOUR, NOW, FakeHub, FakePrometheus, backups, make_app, sign_in
from unistack.dashboard import backups as card_of
from unistack.dashboard.backups import MISSING, UNKNOWN, Archive, card, of_snapshot, span
from unistack.dashboard.components import components

FAILED = {"ok": False, "ts": NOW - 600.0, "name": "unistack-20231116T000000Z.tar.zst",
          "took": 3.0, "detail": "redis BGSAVE failed: MISCONF"}


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def client(tmp_path: Path, hub: FakeHub) -> FlaskClient:
    app = make_app(tmp_path, hub, FakePrometheus())
    components(app).clock = lambda: NOW
    return app.test_client()


def shown(client: FlaskClient) -> str:
    """The Backups card of the overview page, as HTML."""
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'<article class="card [a-z]+" id="backups-card".*?</article>', page,
                      re.DOTALL)
    assert match, page
    return match.group(0)


def texts(html: str) -> str:
    """HTML as its text, one space between words."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- words ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "said"), [
    (-5, "0 s"), (0, "0 s"), (40, "40 s"), (59.6, "1 min"), (12 * 60 + 10, "12 min"),
    (3599, "1 h"), (3 * HOUR - 60, "3 h"), (47 * HOUR, "47 h"), (52 * HOUR, "2 days 4 h"),
    (72 * HOUR, "3 days"),
])
def test_a_span_is_said_to_the_nearest_unit(seconds: float, said: str) -> None:
    assert span(seconds) == said


@pytest.mark.parametrize(("value", "said"), [
    (512, "512 B"), (1536, "1.5 KiB"), (1288490189, "1.2 GiB"), (None, "\u2014"),
    ("12", "\u2014"), (True, "\u2014"), (float("nan"), "\u2014"),
])
def test_a_size_is_said_in_binary_units(value: Any, said: str) -> None:
    assert card_of.size(value) == said


# --- the card, worded ------------------------------------------------------------------


def test_a_fresh_backup_is_green_with_its_age_size_and_next_run() -> None:
    shown = card(backups(), NOW)
    assert (shown.known, shown.colour, shown.verdict) == (True, "green", "ok")
    assert shown.warnings == [] and shown.running == ""
    assert dict(shown.rows) == {
        "newest verified": "3 h ago \u00b7 1.2 GiB \u00b7 verified",
        "last run": "ok \u00b7 3 h ago \u00b7 took 14.2 s \u00b7 backup verified: 1000001 "
                    "keys, 1.2 GB, 14.2 s",
        "next backup": "in 21 h (every 24 h)", "directory": "/home/x/var/backups"}
    assert shown.archives == [
        Archive("verified", "good", "unistack-20231115T190000Z.tar.zst \u00b7 3 h ago "
                "\u00b7 1.2 GiB"),
        Archive("verified", "good", "unistack-20231114T190000Z.tar.zst \u00b7 27 h ago "
                "\u00b7 1.0 GiB")]


def test_a_stale_backup_is_red_and_says_for_how_long() -> None:
    old = {"name": "a.tar.zst", "ts": NOW - 52 * HOUR, "size": 10, "state": "verified"}
    shown = card(backups(stale=True, newest_verified=old, next_due=NOW - 60), NOW)
    assert (shown.colour, shown.verdict) == ("red", "stale")
    assert shown.warnings == ["no verified backup for 2 days 4 h"]
    assert dict(shown.rows)["next backup"] == "due now (every 24 h)"
    none_yet = card(backups(stale=True, newest_verified=None, backups=[], last=None), NOW)
    assert none_yet.warnings == ["no verified backup yet"]
    assert dict(none_yet.rows)["newest verified"] == "none"
    assert dict(none_yet.rows)["last run"] == "none yet" and none_yet.archives == []


def test_a_failed_run_is_red_and_says_why() -> None:
    entries = [{"name": "b.tar.zst", "ts": NOW - 600, "size": 0, "state": "failed"},
               {"name": "c.tar.zst", "ts": NOW - 700, "size": 2048, "state": "partial"}]
    shown = card(backups(last=FAILED, backups=entries), NOW)
    assert (shown.colour, shown.verdict) == ("red", "failed")
    assert shown.warnings == ["last backup failed: redis BGSAVE failed: MISCONF"]
    assert dict(shown.rows)["last run"] == ("failed \u00b7 10 min ago \u00b7 took 3.0 s "
                                            "\u00b7 redis BGSAVE failed: MISCONF")
    assert [(a.state, a.css) for a in shown.archives] == [("failed", "bad"), ("partial", "bad")]
    both = card(backups(last=FAILED, stale=True), NOW)
    assert both.verdict == "stale" and len(both.warnings) == 2


def test_a_running_backup_says_since_when() -> None:
    since = NOW - 185
    shown = card(backups(running=True, running_since=since), NOW)
    clock = time.strftime("%H:%M:%S", time.localtime(since))
    assert shown.running == f"backup running since {clock} (for 3 min)"
    assert (shown.colour, shown.verdict) == ("green", "running")
    assert card(backups(running=True), NOW).running == "backup running"


def test_scheduling_off_is_said_plainly() -> None:
    shown = card(backups(interval=0.0, next_due=None), NOW)
    assert (shown.colour, shown.verdict, shown.warnings) == ("grey", "off", [])
    assert dict(shown.rows)["next backup"] == "scheduling off: a backup runs only when asked for"


@pytest.mark.parametrize("document", [{}, {"backups": {}}, {"backups": None},
                                      {"backups": []}, {"backups": "x"}])
def test_no_backups_document_is_unknown(document: dict[str, Any]) -> None:
    status = {"overall": "healthy", **document}
    assert card(of_snapshot({"status": status}), NOW) == UNKNOWN
    assert of_snapshot({"hub": "unreachable", "error": "refused"}) == {}


def test_five_archives_at_most_each_with_its_state() -> None:
    entries: list[Any] = [{"name": f"n{i}", "ts": NOW - i * HOUR, "size": 1, "state": state,
                           "encrypted": state == "sealed" or i == 2}
                          for i, state in enumerate(["sealed", "unverified", "verified",
                                                     "weird", "verified", "verified"])]
    shown = card(backups(backups=["not a record", *entries]), NOW)
    assert [(a.state, a.css) for a in shown.archives] == [
        ("sealed", "good"), ("unverified", "warn-text"), ("verified", "good"), ("weird", "")]
    assert shown.archives[2].text.endswith(" \u00b7 encrypted")
    assert "encrypted" not in shown.archives[0].text  # sealed says it already


def test_the_last_run_time_for_the_confirmation() -> None:
    assert card_of.last_took(backups()) == 14.2
    assert card_of.last_took(backups(last=None)) == card_of.last_took({}) == 0.0


# --- the card on the page --------------------------------------------------------------


def test_the_page_renders_a_fresh_card_with_its_control_disabled_for_a_viewer(
    client: FlaskClient,
) -> None:
    html = shown(client)
    assert 'class="card green"' in html and 'data-verdict="ok"' in html
    words = texts(html)
    assert "newest verified 3 h ago \u00b7 1.2 GiB \u00b7 verified" in words
    assert "next backup in 21 h (every 24 h)" in words
    assert words.count("verified unistack-") == 2
    assert '<form method="post" action="/controls/backup">' in html
    assert re.search(r"<button type=\"submit\" disabled>Back up now</button>", html)
    assert "operator sign-in required" in html


def test_an_operator_gets_the_control_enabled(client: FlaskClient) -> None:
    sign_in(client)
    html = shown(client)
    assert '<button type="submit">Back up now</button>' in html
    assert "operator sign-in required" not in html


@pytest.mark.parametrize(("changes", "colour", "said"), [
    ({"stale": True, "newest_verified": {"ts": NOW - 52 * HOUR, "size": 1, "state": "verified"}},
     "red", "no verified backup for 2 days 4 h"),
    ({"last": FAILED}, "red", "last backup failed: redis BGSAVE failed: MISCONF"),
    ({"running": True, "running_since": NOW - 185}, "green", "backup running since "),
    ({"interval": 0}, "grey", "scheduling off: a backup runs only when asked for"),
])
def test_the_page_renders_each_condition(client: FlaskClient, hub: FakeHub,
                                         changes: dict[str, Any], colour: str,
                                         said: str) -> None:
    hub.status["backups"] = backups(**changes)
    html = shown(client)
    assert f'class="card {colour}"' in html and said in texts(html)


@pytest.mark.parametrize("missing", [True, False])
def test_the_page_says_when_the_hub_sends_no_backups(client: FlaskClient, hub: FakeHub,
                                                     missing: bool) -> None:
    if missing:
        del hub.status["backups"]  # an older hub
    else:
        hub.status["backups"] = {}
    html = shown(client)
    assert 'class="card grey"' in html and 'data-verdict="unknown"' in html
    assert texts(html) == f"Backups {MISSING}" and "/controls/backup" not in html


def test_an_unreachable_hub_renders_the_page_with_no_backup_information(
    client: FlaskClient, hub: FakeHub,
) -> None:
    hub.down = "connection refused"
    assert texts(shown(client)) == f"Backups {MISSING}"


def test_names_and_details_from_the_hub_are_escaped(client: FlaskClient, hub: FakeHub) -> None:
    evil = "<script>alert(1)</script>"
    hub.status["backups"] = backups(
        dir=evil, last={**FAILED, "detail": evil},
        backups=[{"name": evil, "ts": NOW, "size": 1, "state": "<b>failed</b>"}])
    html = shown(client)
    assert "<script>" not in html and "<b>" not in html
    assert "last backup failed: &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-state="&lt;b&gt;failed&lt;/b&gt;"' in html
