"""Row 8 in the browser: with the Content-Security-Policy enforced (no inline script, no eval),
the pages work and break no rule: the review page draws its cells and its tiles, the upload,
report, models and API documentation pages load."""

from __future__ import annotations

import contextlib

from testkit.browser import browser_page, log_in, screenshot


def test_the_pages_run_under_the_content_security_policy(
    live_server, browser, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=40, seed=3)
    with browser_page(browser, enforce_csp=True) as page:
        log_in(page, live_server.url, pathologist.username)
        page.goto(f"{live_server.url}/slides/{slide.pk}/")
        page.wait_for_selector(".openseadragon-canvas canvas")
        page.wait_for_selector("#hud:has-text('40')")
        page.keyboard.press("n")  # the page's own scripts answer the keyboard
        page.wait_for_selector("#cell-detail:not([hidden])")
        screenshot(page, "csp-review.png")
        pages = (
            "/",
            "/upload/",
            f"/slides/{slide.pk}/report/",
            "/models/",
            "/accounts/two-factor/",
        )
        for path in (*pages, "/api/docs/"):
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
        page.wait_for_selector("#swagger-ui .information-container")  # the docs rendered
        assert page.csp_violations == []
        # and the check sees a violation when there is one: an inline script is refused
        page.goto(f"{live_server.url}/")
        with contextlib.suppress(Exception):  # Playwright may report the refusal itself
            page.add_script_tag(content="document.title = 'injected'")
        page.wait_for_timeout(300)
        assert page.title() != "injected"
        assert any("inline" in v for v in page.csp_violations), page.csp_violations
