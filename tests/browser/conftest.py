"""Fixtures of the browser tests: one real stack and one headless Chromium (Debian's,
driven by Playwright through its executable_path: no browser is downloaded) for the
whole package. Every test gets a fresh browser context (its own cookies, so a viewer
and an operator never share a session); each context records its console errors,
uncaught exceptions and requests, and is checked for them when its test ends."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from harness.stacks import Stack, make_home, stack_environment

LOOPBACK = "127.0.0.1"
# Chromium's own background traffic off (the machine has no network); any host name but
# the loopback address fails to resolve, so a page that needs a CDN would break here.
LAUNCH_ARGS = ["--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-quic", f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOOPBACK}"]
ACTION_TIMEOUT_MS = 10_000
ARTIFACTS = pytest.StashKey[Path]()


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed: scripts/bootstrap.sh --test-tools "
                    "(run by scripts/run_tests.sh) installs it", pytrace=False)
    return found


# --- the stack --------------------------------------------------------------------


@pytest.fixture(scope="package")
def dashboard_stack() -> Iterator[Stack]:
    """One stack for every browser test (a start costs about 5 s). FLAP_RESTARTS is
    raised so that the tests' kills and restarts never make a service LOOPING."""
    home = make_home()
    running = Stack(home, stack_environment(home) | {"FLAP_RESTARTS": "1000"})
    try:
        started = running.cli("start", timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        running.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def dashboard_url(stack: Stack, path: str = "/") -> str:
    return f"http://{LOOPBACK}:{stack.port('DASHBOARD_PORT')}{path}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def dashboard_json(stack: Stack, path: str) -> Any:
    return get_json(dashboard_url(stack, path))


def hub(stack: Stack, path: str) -> Any:
    return get_json(f"http://{LOOPBACK}:{stack.port('HUB_PORT')}{path}")


def services(stack: Stack) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in hub(stack, "/status")["services"]}


def events_after(stack: Stack, after: int, kind: str | None = None,
                 service: str | None = None) -> list[dict[str, Any]]:
    """The hub's events newer than id AFTER (of KIND and SERVICE when given)."""
    found: list[dict[str, Any]] = hub(stack, f"/events?after={after}")["events"]
    return [e for e in found if e["id"] > after and (kind is None or e["kind"] == kind)
            and (service is None or e["service"] == service)]


def last_event_id(stack: Stack) -> int:
    found = hub(stack, "/events")["events"]
    return int(found[-1]["id"]) if found else 0


def operator_token(stack: Stack) -> str:
    for line in (stack.home / ".env").read_text().splitlines():
        if line.startswith("UNISTACK_OPERATOR_TOKEN="):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise AssertionError(f"no UNISTACK_OPERATOR_TOKEN in {stack.home / '.env'}")


# --- the browser ------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium, once for the package. Its HOME and XDG dirs are a temp dir:
    Chromium writes crash reports and caches there even with a temp profile."""
    executable = chromium_path()
    home = tmp_path_factory.mktemp("chromium-home")
    env: dict[str, str | float | bool] = {
        **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache")}
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS,
                                              env=env)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class BrowserLog:
    """What the pages of one browser context did: console errors, uncaught exceptions,
    every request (URL) and every failed one."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def request(self, request: Request) -> None:
        self.requests.append(request.url)

    def request_failed(self, request: Request) -> None:
        self.failed.append(f"{request.url}: {request.failure}")

    def foreign(self) -> list[str]:
        """Requests that did not go to the loopback address (data: URLs stay inside)."""
        return [url for url in self.requests if urllib.parse.urlsplit(url).scheme != "data"
                and urllib.parse.urlsplit(url).hostname != LOOPBACK]

    def watch(self, page: Page) -> None:
        page.on("console", self.console)
        page.on("pageerror", self.page_error)
        page.on("request", self.request)
        page.on("requestfailed", self.request_failed)


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(browser: Browser, browser_log: BrowserLog) -> Iterator[Page]:
    """A page in a fresh context. When the test ends, the context must have logged no
    console error and no uncaught exception, and sent nothing off the loopback address."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.on("page", browser_log.watch)
    opened = context.new_page()
    try:
        yield opened
        for still_open in context.pages:
            still_open.evaluate("0")  # a round trip: every event sent before it is handled
        assert browser_log.errors == [], "console errors or uncaught exceptions"
        assert browser_log.foreign() == [], "requests off the loopback address"
    finally:
        context.close()


# --- screenshots --------------------------------------------------------------------


@pytest.fixture(scope="package")
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              ) -> Path:
    """Where the screenshots go: UNISTACK_ARTIFACTS, or browser-artifacts under pytest's
    basetemp. The path is printed at the end of the run."""
    chosen = os.environ.get("UNISTACK_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "browser-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    request.config.stash[ARTIFACTS] = path
    return path


def screenshot(page: Page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = config.stash.get(ARTIFACTS, None)
    if path is not None:
        shots = sorted(p.name for p in path.glob("*.png"))
        terminalreporter.write_line(f"browser artifacts: {path} ({', '.join(shots)})")
