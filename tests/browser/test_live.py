"""Live updates in headless Chromium: a kill -9 turns the card red and back to green on
the open page, without a reload, within a second of the hub's record; a hung service's
incident file is one click away from its card."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from playwright.sync_api import Page, expect

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.browser.conftest import (
    dashboard_url,
    events_after,
    last_event_id,
    screenshot,
    services,
)
from tests.chaos.test_chaos import settle_past_startsecs

pytestmark = pytest.mark.browser

ON_SCREEN_WITHIN = 1.0  # seconds after the hub's record (dashboard.md)

# Every change of a card's data-state, with the page's clock (Date.now(), epoch ms) taken
# in the MutationObserver's callback: the microtask right after the DOM changed.
WATCH_STATES = """service => {
  const card = document.querySelector(`[data-service="${service}"]`);
  window.__watched = {service, states: [], last: card.dataset.state};
  new MutationObserver(() => {
    const now = Date.now(), w = window.__watched;
    if (card.dataset.state === w.last) return;
    w.last = card.dataset.state;
    const colour = ["green", "amber", "red", "grey"].find(c => card.classList.contains(c));
    w.states.push({state: card.dataset.state, colour, at: now / 1000});
  }).observe(card, {attributes: true, attributeFilter: ["data-state", "class"]});
}"""


def watched(page: Page) -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = page.evaluate("window.__watched.states")
    return states


def open_live(page: Page, stack: Stack, service: str) -> None:
    page.goto(dashboard_url(stack))
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator(f'[data-service="{service}"]')).to_have_attribute("data-state", "READY")
    page.evaluate(WATCH_STATES, service)


def calm(stack: Stack, service: str) -> int:
    """SERVICE's pid once it is past startsecs with no incident open: a fault then opens
    a new incident, which the hub announces with an event (a relapse has none)."""
    wait_for(lambda: not services(stack)[service]["incident"], timeout=30)
    return settle_past_startsecs(stack, service)


def away_and_back(page: Page) -> list[dict[str, Any]] | None:
    states = watched(page)
    if any(s["state"] != "READY" for s in states) and states[-1]["state"] == "READY":
        return states
    page.wait_for_timeout(20)
    return None


def test_a_killed_service_turns_red_and_green_again_without_a_reload(
    page: Page, dashboard_stack: Stack,
) -> None:
    open_live(page, dashboard_stack, "redis")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    pid = calm(dashboard_stack, "redis")
    after = last_event_id(dashboard_stack)
    killed = time.time()
    os.kill(pid, signal.SIGKILL)

    states = wait_for(lambda: away_and_back(page), timeout=15)
    [crashed] = wait_for(lambda: events_after(dashboard_stack, after, "crashed", "redis"))
    away, back = states[0], states[-1]
    assert away["state"] == "RESTARTING" and away["colour"] == "red", states
    assert killed <= crashed["ts"] <= away["at"] + 0.002  # Date.now() counts whole ms
    assert away["at"] - crashed["ts"] <= ON_SCREEN_WITHIN, (crashed, states)
    # Back to READY, which no event marks (the incident resolves seconds later): the hub's
    # record of it is the status document's `since`, sent on the change itself.
    redis = wait_for(lambda: (r := services(dashboard_stack)["redis"])["ready"] and r)
    assert redis["pid"] != pid
    assert back["colour"] == "green"
    assert redis["since"] <= back["at"] + 0.002
    assert back["at"] - redis["since"] <= ON_SCREEN_WITHIN, (redis["since"], states)
    assert navigations == [] and page.evaluate("window.__watched.states.length") == len(states)


def test_a_hung_service_links_its_incident_file(
    page: Page, dashboard_stack: Stack, artifacts: Path,
) -> None:
    open_live(page, dashboard_stack, "prometheus")
    pid = calm(dashboard_stack, "prometheus")
    after = last_event_id(dashboard_stack)
    os.kill(pid, signal.SIGSTOP)
    try:
        [hung] = wait_for(lambda: events_after(dashboard_stack, after, "hung", "prometheus"),
                          timeout=15)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):  # the hub killed it, or we do
            psutil.Process(pid).resume()
            psutil.Process(pid).kill()
    name = os.path.basename(hung["incident"])
    card = page.locator('[data-service="prometheus"]')
    link = card.locator(f'a[href="/incidents/{name}"]')
    expect(link).to_have_text(name)
    expect(page.locator("#events")).to_contain_text("prometheus hung")
    link.click()
    expect(page).to_have_url(dashboard_url(dashboard_stack, f"/incidents/{name}"))
    expect(page.locator("h1")).to_have_text(f"Incident file {name}")
    text = page.locator("pre.incident").inner_text()
    assert text.startswith("incident: prometheus at ") and "verdict: liveness failed" in text
    screenshot(page, artifacts, "incident")
    wait_for(lambda: services(dashboard_stack)["prometheus"]["ready"], timeout=15)
