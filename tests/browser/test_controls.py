"""Control actions in headless Chromium: a viewer cannot restart anything (the control is
disabled and a POST is refused, with no audit at the hub); an operator signs in with
the token from .env, confirms, and the hub restarts the service and audits who asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from harness.stacks import Stack
from harness.waiting import wait_for
from tests.browser.conftest import (
    dashboard_url,
    events_after,
    last_event_id,
    operator_token,
    screenshot,
    services,
)

pytestmark = pytest.mark.browser

SERVICE = "prometheus"  # quick to restart, and nothing waits on it
ACTOR = "dashboard from 127.0.0.1"


def test_a_viewer_cannot_restart(page: Page, dashboard_stack: Stack) -> None:
    page.goto(dashboard_url(dashboard_stack))
    card = page.locator(f'[data-service="{SERVICE}"]')
    button = card.locator(f'form[action="/controls/restart/{SERVICE}"] button')
    expect(button).to_have_text("Restart")
    expect(button).to_be_disabled()
    expect(card.locator(".controls .note")).to_have_text("operator sign-in required")
    expect(page.locator(".session .role")).to_have_text("read-only viewer")

    before, after = services(dashboard_stack)[SERVICE]["pid"], last_event_id(dashboard_stack)
    # The POST the form would send, in this viewer's session with its CSRF token.
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post(dashboard_url(dashboard_stack, f"/controls/restart/{SERVICE}"),
                               form={"csrf_token": csrf or ""}, max_redirects=0)
    assert answer.status == 403
    assert "operator sign-in required" in answer.text() and "Nothing was done" in answer.text()
    page.wait_for_timeout(500)  # an audit, had there been one, is recorded at once
    assert events_after(dashboard_stack, after, "audit") == []
    assert services(dashboard_stack)[SERVICE]["pid"] == before


def test_an_operator_restarts_after_signing_in_and_confirming(
    page: Page, dashboard_stack: Stack, artifacts: Path,
) -> None:
    page.goto(dashboard_url(dashboard_stack, "/login"))
    expect(page.locator("h1")).to_have_text("Operator sign-in")
    screenshot(page, artifacts, "login")
    page.locator("#token").fill(operator_token(dashboard_stack))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(dashboard_url(dashboard_stack))
    expect(page.locator(".session .role")).to_have_text("operator")
    card = page.locator(f'[data-service="{SERVICE}"]')
    expect(card.locator(".controls .note")).to_have_count(0)
    button = card.locator(f'form[action="/controls/restart/{SERVICE}"] button')
    expect(button).to_be_enabled()

    wait_for(lambda: services(dashboard_stack)[SERVICE]["ready"], timeout=15)
    before, after = services(dashboard_stack)[SERVICE]["pid"], last_event_id(dashboard_stack)
    button.click()
    expect(page.locator("h1")).to_have_text(f"Confirm: Restart {SERVICE}")
    expect(page.locator(".consequence")).to_contain_text(
        f"The hub stops {SERVICE} through supervisord")
    expect(page.locator(".audit")).to_contain_text("from the dashboard at 127.0.0.1")
    screenshot(page, artifacts, "confirmation")
    assert events_after(dashboard_stack, after, "audit") == []  # nothing done yet

    page.get_by_role("button", name=f"Restart {SERVICE}").click()
    expect(page.locator("h1")).to_have_text(f"Restart {SERVICE}: accepted")
    expect(page.locator(".message.good")).to_contain_text("The hub answered HTTP 202")
    screenshot(page, artifacts, "result")
    [audit] = wait_for(lambda: events_after(dashboard_stack, after, "audit"), timeout=5)
    assert audit["service"] == SERVICE and audit["actor"] == ACTOR
    assert audit["detail"] == f"restart of {SERVICE} by {ACTOR}: done"
    wait_for(lambda: (s := services(dashboard_stack)[SERVICE])["ready"]
             and s["pid"] not in (0, before), timeout=15)

    page.get_by_role("link", name="Back to the overview").click()
    expect(page.locator("#events")).to_contain_text(f"restart of {SERVICE} by {ACTOR}: done")
