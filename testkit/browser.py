"""Helpers for the browser tests: Debian's headless Chromium driven by Playwright (never a
downloaded browser), logged in through the real login page of pytest-django's live server."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PAPREVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "tests" / "_artifacts"
PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


def launch(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (make browser)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still
    # plain synchronous code between browser steps.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = launch(playwright)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextlib.contextmanager
def browser_page(browser: Any, *, enforce_csp: bool = False) -> Iterator[Any]:
    """A page in its own browser context (own cookies: one person); fails on JavaScript errors.

    The app's Content-Security-Policy forbids evaluating strings, which Playwright's
    `wait_for_function("...")` does in the page: tests bypass it, except those that check the
    policy itself (`enforce_csp`, where every violation is recorded in `page.csp_violations`)."""
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, device_scale_factor=1, bypass_csp=not enforce_csp
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    page.csp_violations = violations = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with browser_page(browser) as page:
        yield page


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")


def open_review(page: Any, base_url: str, username: str, slide_id: int) -> None:
    """Log in as `username`, open the slide's review page and wait until its cells are drawn."""
    log_in(page, base_url, username)
    page.goto(f"{base_url}/slides/{slide_id}/")
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def wait_saved(pg: Any) -> None:
    """Until the review page has no save in flight."""
    pg.wait_for_function("window.__review && window.__review.inFlight === 0")


def wait_viewer_still(pg: Any) -> None:
    """Until the viewer's pan/zoom animation has ended (current view == target view)."""
    pg.wait_for_function(
        """(() => { const v = window.__review.viewer.viewport;
        return Math.abs(v.getZoom(true) - v.getZoom(false)) < 1e-9
            && v.getCenter(true).distanceTo(v.getCenter(false)) < 1e-9; })()"""
    )
    # the overlay drawn in full at this view (while the view moves it may only follow it)
    pg.wait_for_function(
        """(() => { const o = window.__review.overlay;
        return !o || (!o.pending && !o.stale && !o.canvas.style.transform); })()"""
    )


def state_when_still(pg: Any, script: str) -> Any:
    """The page's `script` evaluated once the viewer has stopped and the overlay has redrawn."""
    pg.wait_for_timeout(300)  # a zoom started just before may not have begun animating yet
    wait_viewer_still(pg)
    return pg.evaluate(script)
