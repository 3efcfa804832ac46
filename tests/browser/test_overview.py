"""The overview page in headless Chromium against a real stack: a card per registry
service with its state, a history chart drawn from Prometheus's data, nothing fetched
from anywhere but the dashboard, and no console error."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.browser.conftest import (
    BrowserLog,
    dashboard_json,
    dashboard_url,
    screenshot,
    services,
)
from unistack.services import REGISTRY

pytestmark = pytest.mark.browser

STATE_COLOURS = {"READY": "green", "STARTING": "amber", "DEGRADED": "amber",
                 "UNHEALTHY": "amber", "RESTARTING": "red", "LOOPING": "red",
                 "FAILED": "red", "STOPPED": "red"}
GROUPS = ["infrastructure", "ml", "frontend"]  # dashboard.js GROUP_ORDER
CHART = "memory"  # per service, in Prometheus from the hub's first scrape on
SERIES_COLOURS = ((0x7C, 0xB7, 0xFF), (0x3F, 0xB9, 0x50), (0xD8, 0xA0, 0x29),
                  (0xF0, 0x55, 0x4D), (0xC2, 0x97, 0xFF))  # dashboard.js PALETTE


def open_overview(page: Page, stack: Stack) -> None:
    page.goto(dashboard_url(stack))
    expect(page.locator("#live")).to_have_text("live")  # the relayed stream is open
    expect(page.locator("#services [data-service]")).to_have_count(len(REGISTRY))


def cards(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#services [data-service]",
        """cards => cards.map(c => ({name: c.dataset.service, state: c.dataset.state,
              badge: c.querySelector('.badge').textContent, classes: [...c.classList],
              group: c.closest('section').dataset.group}))""")
    return found


def test_a_card_for_every_registry_service_with_its_state(
    page: Page, dashboard_stack: Stack,
) -> None:
    wait_for(lambda: all(s["ready"] for s in services(dashboard_stack).values()), timeout=30)
    open_overview(page, dashboard_stack)
    shown = cards(page)
    # One section per group (dashboard.md's order), the registry's order inside each.
    expected = sorted(REGISTRY, key=lambda spec: GROUPS.index(spec.group))
    assert [c["name"] for c in shown] == [spec.name for spec in expected]
    hub_says = services(dashboard_stack)
    for card in shown:
        assert card["state"] == card["badge"] == hub_says[card["name"]]["state"] == "READY"
        assert STATE_COLOURS[card["state"]] in card["classes"], card
        assert card["group"] == hub_says[card["name"]]["group"]
    expect(page.locator("#overall")).to_have_text("healthy")


def chart_has_points(stack: Stack) -> bool:
    """Prometheus has scraped what the chart shows (asked as the page asks)."""
    document = dashboard_json(stack, f"/api/history/{CHART}?range=15m")
    return any(p[1] is not None for s in document.get("series", []) for p in s["points"])


def drawn_pixels(page: Page, selector: str) -> int:
    """Pixels of the chart's canvas in one of the series colours (anti-aliasing aside)."""
    counted: int = page.eval_on_selector(selector, """(canvas, colours) => {
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] < 200) continue;
          if (colours.some(([r, g, b]) => Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
                                          + Math.abs(data[i + 2] - b) < 30)) n += 1;
        }
        return n;
      }""", [list(c) for c in SERIES_COLOURS])
    return counted


def test_a_history_chart_shows_points(
    page: Page, dashboard_stack: Stack, artifacts: Path,
) -> None:
    wait_for(lambda: chart_has_points(dashboard_stack), timeout=40, interval=0.5)
    with page.expect_response(lambda r: f"/api/history/{CHART}?" in r.url) as answered:
        open_overview(page, dashboard_stack)
    document = answered.value.json()
    series = [s for s in document["series"] if any(p[1] is not None for p in s["points"])]
    assert document["available"] is True and series
    box = page.locator(f'.chart[data-metric="{CHART}"]')
    expect(box.locator(".note")).to_have_text(
        f"{len(document['series'])} series, one point every {document['step']:g} s")
    canvas = f'.chart[data-metric="{CHART}"] .plot canvas'
    expect(page.locator(canvas)).to_have_count(1)
    assert drawn_pixels(page, canvas) > 20  # the lines are drawn, not just the axes
    legend = box.locator(".u-legend .u-series .u-label").all_text_contents()
    names = {s["labels"].get("service") for s in document["series"]}
    assert names <= set(legend) and "redis" in names  # one line per service, named
    expect(page.locator(".chart .note").first).not_to_have_text("loading")
    screenshot(page, artifacts, "overview")


def test_everything_the_page_loads_comes_from_the_dashboard(
    page: Page, dashboard_stack: Stack, browser_log: BrowserLog,
) -> None:
    open_overview(page, dashboard_stack)
    page.goto(dashboard_url(dashboard_stack, "/login"))
    page.go_back()
    expect(page.locator("#live")).to_have_text("live")
    paths = {urllib.parse.urlsplit(url).path for url in browser_log.requests}
    assert {"/", "/login", "/static/dashboard.js", "/static/dashboard.css",
            "/static/vendor/uPlot.iife.min.js", "/static/vendor/uPlot.min.css",
            "/api/status", "/api/events", "/api/events/recent", "/api/ml",
            f"/api/history/{CHART}"} <= paths
    port = dashboard_stack.port("DASHBOARD_PORT")
    assert all(urllib.parse.urlsplit(url).netloc == f"127.0.0.1:{port}"
               for url in browser_log.requests), browser_log.requests
    assert browser_log.foreign() == []
    # The page drew its charts with the vendored uPlot, not one from a CDN.
    assert page.evaluate("typeof window.uPlot") == "function"
    assert [f for f in browser_log.failed if "/api/events" not in f] == []


def test_no_console_error_on_the_live_page_and_the_check_sees_them(
    page: Page, dashboard_stack: Stack, browser_log: BrowserLog,
) -> None:
    open_overview(page, dashboard_stack)
    expect(page.locator(".chart .note").first).not_to_have_text("loading")
    page.wait_for_timeout(2500)  # a few live status documents, ML figures and polls
    assert browser_log.errors == []
    # The check is not blind: a console error and an uncaught exception are both caught.
    with page.expect_console_message(lambda m: m.type == "error"):
        page.evaluate("console.error('probe: console')")
    with page.expect_event("pageerror"):
        page.evaluate("setTimeout(() => { throw new Error('probe: uncaught'); }, 0)")
    assert len(browser_log.errors) == 2
    assert re.match(r"console: probe: console", browser_log.errors[0])
    assert "probe: uncaught" in browser_log.errors[1]
    browser_log.errors.clear()
