"""The Backups card and "Back up now" in headless Chromium, against the dashboard app served
on loopback with a stand-in hub (tests/dashboard_fakes.py): the hub's status document is
whatever the test publishes on the live stream, and the stand-in records what it was asked.
The card follows each published `backups` document without a reload, within a second,
saying what backups.py says; an operator backs up through the confirmation page."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from harness.ports import free_ports
from harness.waiting import wait_for
from tests.browser.conftest import BrowserLog, screenshot
from tests.dashboard_fakes import (
    HOUR,
    STATUS,
    TOKEN,
    FakeHub,
    FakePrometheus,
    backups,
    make_app,
    served,
    status_message,
)
from unistack.dashboard import backups as words
from unistack.dashboard.backups import MISSING
from unistack.dashboard.components import components

pytestmark = pytest.mark.browser

ON_SCREEN_WITHIN = 1.0  # seconds after the hub sent the status document (dashboard.md)
INTERVAL = 0.2  # DASHBOARD_CONTROL_INTERVAL here: a second action need not wait 10 s
ACTOR = "dashboard from 127.0.0.1"

# The card as the page shows it, in the parts backups.Card has.
SHOWN = """() => {
  const c = document.getElementById("backups-card");
  const text = (node) => (node ? node.textContent : "");
  return {colour: ["green", "amber", "red", "grey"].find((x) => c.classList.contains(x)),
          verdict: c.dataset.verdict,
          warnings: [...c.querySelectorAll("p.warning")].map(text),
          running: text(c.querySelector("p.running")),
          rows: [...c.querySelectorAll("dl.facts dt")]
            .map((dt) => [text(dt), text(dt.nextElementSibling)]),
          archives: [...c.querySelectorAll("ul.archives li[data-state]")].map(text)};
}"""

# Every change of the card's verdict, with the page's clock (Date.now(), epoch ms) taken in
# the MutationObserver's callback (the card is rebuilt on each status document).
WATCH_VERDICT = """() => {
  const box = document.getElementById("backups");
  const verdict = () => document.getElementById("backups-card").dataset.verdict;
  window.__verdicts = {list: [], last: verdict()};
  new MutationObserver(() => {
    const now = Date.now(), w = window.__verdicts;
    if (verdict() === w.last) return;
    w.last = verdict();
    w.list.push({verdict: w.last, at: now / 1000});
  }).observe(box, {childList: true, subtree: true, attributes: true});
}"""


@dataclass
class StandIn:
    url: str
    hub: FakeHub
    app: Flask


def status(absent: bool = False, **changes: Any) -> dict[str, Any]:
    """The stand-in hub's status document now, its backups document with CHANGES, or
    without one when ABSENT (an older hub)."""
    now = time.time()
    document = copy.deepcopy(STATUS) | {"ts": now, "backups": backups(now, **changes)}
    if absent:
        del document["backups"]
    return document


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    hub = FakeHub()
    hub.live = True
    hub.status = status()
    hub.chunks = [b"retry: 1000\n\n", status_message(hub.status)]  # as the hub: status first
    app = make_app(tmp_path, hub, FakePrometheus(), DASHBOARD_CONTROL_INTERVAL=str(INTERVAL))
    try:
        with served(app, free_ports(1)[0]) as url:
            yield StandIn(url, hub, app)
    finally:
        hub.ended.set()


def expected(document: dict[str, Any]) -> dict[str, Any]:
    """What backups.py says of DOCUMENT now, in SHOWN's form."""
    card = words.card(words.of_snapshot({"status": document}), time.time())
    return {"colour": card.colour, "verdict": card.verdict, "warnings": card.warnings,
            "running": card.running, "rows": [list(row) for row in card.rows],
            "archives": [f"{a.state} {a.text}" for a in card.archives]}


def publish(page: Page, stand_in: StandIn, verdict: str, **changes: Any) -> dict[str, Any]:
    """Send a status document with CHANGES; wait for the card's VERDICT; it must be on
    screen within ON_SCREEN_WITHIN of the sending. The document is returned."""
    document = status(**changes)
    sent = time.time()
    stand_in.hub.publish(document)
    shown = wait_for(lambda: [v for v in page.evaluate("window.__verdicts.list")
                              if v["verdict"] == verdict], timeout=5)
    assert shown[0]["at"] - sent <= ON_SCREEN_WITHIN, (sent, shown)
    return document


def test_the_card_follows_the_live_status_document(
    stand_in: StandIn, page: Page, artifacts: Path,
) -> None:
    page.goto(stand_in.url)
    expect(page.locator("#live")).to_have_text("live")
    card = page.locator("#backups-card")
    expect(card).to_have_attribute("data-verdict", "ok")
    assert page.evaluate(SHOWN) == expected(stand_in.hub.status)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate(WATCH_VERDICT)

    old = {"name": "<b>old</b>.tar.zst", "ts": time.time() - 52 * HOUR, "size": 5,
           "state": "verified"}
    failed = {"ok": False, "ts": time.time() - 600, "took": 2.0,
              "detail": "<script>alert(1)</script> BGSAVE failed"}
    stale = publish(page, stand_in, "stale", stale=True, newest_verified=old, last=failed,
                    backups=[{**old, "state": "partial"}])
    assert page.evaluate(SHOWN) == expected(stale)
    expect(card.locator("p.warning").first).to_have_text("no verified backup for 2 days 4 h")
    expect(card.locator("p.warning").nth(1)).to_have_text(
        "last backup failed: <script>alert(1)</script> BGSAVE failed")  # as text, not HTML
    expect(card).to_have_class("card red")
    screenshot(page, artifacts, "backups-stale")

    running = publish(page, stand_in, "running", running=True,
                      running_since=time.time() - 185)
    assert page.evaluate(SHOWN) == expected(running)
    expect(card.locator("p.running")).to_contain_text("backup running since ")
    publish(page, stand_in, "off", interval=0, next_due=None)
    expect(card.locator("dl.facts")).to_contain_text("scheduling off")
    publish(page, stand_in, "unknown", absent=True)
    expect(card).to_have_text(f"Backups{MISSING}")
    assert navigations == []


def test_an_operator_backs_up_through_the_confirmation(
    stand_in: StandIn, page: Page, browser_log: BrowserLog,
) -> None:
    page.goto(stand_in.url)
    button = page.locator("#backups-card").get_by_role("button", name="Back up now")
    expect(button).to_be_disabled()  # a viewer
    expect(page.locator("#backups-card .controls .note")).to_have_text(
        "operator sign-in required")

    page.goto(stand_in.url + "/login")
    page.locator("#token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".session .role")).to_have_text("operator")
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("h1")).to_have_text("Confirm: Back up now")
    expect(page.locator(".consequence")).to_contain_text("a Redis snapshot (BGSAVE)")
    expect(page.locator(".consequence")).to_contain_text("trial restore into a scratch Redis")
    assert stand_in.hub.posts == []  # nothing done before the confirmation

    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("h1")).to_have_text("Back up now: accepted")
    expect(page.locator(".message.good")).to_contain_text("The hub answered HTTP 202")
    assert stand_in.hub.posts == [("/backups", None, ACTOR)]

    # Again while that backup runs: the hub refuses, and says why.
    stand_in.hub.answers["/backups"] = (409, {"error": "a backup is already running "
                                                       "(since 12:00:01 UTC)"})
    ledger = components(stand_in.app).ledger
    wait_for(lambda: ledger.wait("backup", INTERVAL) == 0.0)
    page.get_by_role("link", name="Back to the overview").click()
    button.click()
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("h1")).to_have_text("Back up now: refused")
    expect(page.locator(".message.bad")).to_have_text(
        "The hub answered HTTP 409: a backup is already running (since 12:00:01 UTC)")
    assert len(stand_in.hub.posts) == 2
    # Chromium logs a page answered 409 as a console error: that one, and only that one.
    page.evaluate("0")
    assert [e for e in browser_log.errors if "409" not in e] == []
    assert len(browser_log.errors) == 1 and "/controls/backup" in browser_log.errors[0]
    browser_log.errors.clear()
