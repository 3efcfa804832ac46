"""The API keys cards in headless Chromium, against the dashboard app with a stand-in hub
(tests/dashboard_fakes.py): which keys are set and each provider's last verification, from
each live status document; a value never reaches the page (the hub has none to send)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from harness.waiting import wait_for
from tests.browser.test_backups import StandIn, stand_in, status  # noqa: F401

pytestmark = pytest.mark.browser

CARDS = """() => [...document.querySelectorAll("#keys article")].map((c) => ({
  provider: c.dataset.provider, status: c.dataset.status,
  colour: ["green", "amber", "red", "grey"].find((x) => c.classList.contains(x)),
  title: c.querySelector("h3").textContent,
  rows: [...c.querySelectorAll("dl.facts dt")].map((dt) => [dt.textContent,
                                                           dt.nextElementSibling.textContent]),
  note: (c.querySelector("p.note") || {}).textContent || ""}))"""


def keys(now: float) -> dict[str, Any]:
    return {"providers": {
        "polygon": {"title": "Polygon.io", "base_url": "https://api.polygon.io",
                    "keys": {"POLYGON_API_KEY": True}, "status": "valid",
                    "detail": "GET /v1/marketstatus/now: 200, the keys work",
                    "verified": now - 120},
        "unusual_whales": {"title": "Unusual Whales", "base_url": "https://x",
                           "keys": {"UNUSUAL_WHALES_API_KEY": False}},
        "alpaca": {"title": "Alpaca", "base_url": "https://paper-api.alpaca.markets",
                   "keys": {"ALPACA_API_KEY_ID": True, "ALPACA_API_SECRET_KEY": True},
                   "status": "rejected", "verified": now - 7200,
                   "detail": "GET https://paper-api.alpaca.markets/v2/account: HTTP 401: "
                             "the provider refused the keys <b>x</b>"}}}


def test_the_cards_say_which_keys_are_set_and_how_each_provider_answered(
        stand_in: StandIn, page: Page) -> None:  # noqa: F811
    page.goto(stand_in.url)
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#keys")).to_contain_text("no key information from the hub")
    stand_in.hub.publish(status() | {"keys": keys(time.time())})
    shown = wait_for(lambda: page.evaluate(CARDS) if page.evaluate(CARDS)[0].get("provider")
                     else None, timeout=5)
    assert shown == [
        {"provider": "polygon", "status": "valid", "colour": "green", "title": "Polygon.io",
         "rows": [["POLYGON_API_KEY", "set"], ["last verified", "2 min ago · valid"]],
         "note": ""},
        {"provider": "unusual_whales", "status": "unverified", "colour": "red",
         "title": "Unusual Whales",
         "rows": [["UNUSUAL_WHALES_API_KEY", "not set"], ["last verified", "never"]],
         "note": "set it: scripts/update_api_keys.sh"},
        {"provider": "alpaca", "status": "rejected", "colour": "red", "title": "Alpaca",
         "rows": [["ALPACA_API_KEY_ID", "set"], ["ALPACA_API_SECRET_KEY", "set"],
                  ["last verified", "2 h ago · rejected"], ["endpoint", "paper"]],
         "note": "GET https://paper-api.alpaca.markets/v2/account: HTTP 401: the provider "
                 "refused the keys <b>x</b>"}]  # text, not HTML
