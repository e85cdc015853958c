"""The interpretation panel in real Chromium: a cytotechnologist refers a slide with a reason, a
pathologist finds it in the queue, reads the reason and signs it out with a structured report;
and a draft edited in two places at once is not overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus
from papreview.workflow.models import InterpretationDraft, SlideEvent
from papreview.workflow.services import interpretation_draft_save
from testkit.browser import ARTIFACTS, browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REASON = "Atypical cells with high N:C ratio in the upper left field; HSIL not excluded."


@pytest.fixture
def second_page(browser: Any) -> Iterator[Any]:
    """A second person's browser (its own context: own cookies, own login)."""
    with browser_page(browser) as other:
        yield other


def _open_review(pg: Any, url: str) -> None:
    pg.goto(url)
    pg.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    pg.wait_for_selector("#interp[data-loaded]", state="attached")  # the panel has its state


def _wait_draft_saved(pg: Any) -> None:
    pg.wait_for_function(
        "document.getElementById('draft-state').textContent.startsWith('Draft saved')"
    )


def test_refer_then_pathologist_signs_out(
    live_server, page, second_page, cytotech, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=40, seed=7)
    # A flagged SCC cell nobody has decided: a less severe sign-out must wait for it.
    scc = Cell.objects.filter(slide=slide).first()
    assert scc is not None
    probabilities = {c: 0.01 for c in scc.probabilities} | {"SCC": 0.95}
    Cell.objects.filter(pk=scc.pk).update(
        predicted_class="SCC", current_class="SCC", probabilities=probabilities
    )
    Cell.objects.filter(slide=slide, predicted_class="SCC").exclude(pk=scc.pk).update(
        predicted_class="HSIL", current_class="HSIL"
    )

    # The cytotechnologist refers the slide to the pathologist, with the reason.
    log_in(page, live_server.url, cytotech.username)
    _open_review(page, f"{live_server.url}/slides/{slide.pk}/")
    refer = page.get_by_role("button", name="Refer to pathologist")
    assert refer.is_visible()
    refer.click()
    dialog = page.locator("#refer-dialog")
    assert dialog.is_visible()
    dialog.get_by_role("button", name="Refer").click()  # no reason yet: refused in place
    assert "why" in page.locator("#refer-error").inner_text().lower()
    page.get_by_label("Reason for referral").fill(REASON)
    page.wait_for_function("document.getElementById('refer-pathologist').options.length > 1")
    page.get_by_label("Pathologist", exact=True).select_option(str(pathologist.pk))
    dialog.get_by_role("button", name="Refer").click()
    page.wait_for_selector("#referral:not([hidden])")
    assert not dialog.is_visible()
    assert REASON in page.locator("#referral").inner_text()
    assert not page.get_by_role("button", name="Refer to pathologist").is_visible()
    assert page.locator("#signout-btn").is_disabled()
    slide.refresh_from_db()
    assert slide.status == SlideStatus.REFERRED and slide.assigned_reviewer == pathologist
    (event,) = SlideEvent.objects.filter(slide=slide, kind="referred")
    assert event.reason == REASON and event.by == cytotech

    # The pathologist finds it among the referred slides and opens it.
    pg = second_page
    log_in(pg, live_server.url, pathologist.username)
    pg.goto(f"{live_server.url}/?status=referred")
    row = pg.locator(f"#queue tr[data-slide='{slide.pk}']")
    assert "Referred" in row.inner_text()
    row.get_by_role("link", name=slide.original_filename).click()
    pg.wait_for_url(f"{live_server.url}/slides/{slide.pk}/")
    pg.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    pg.wait_for_selector("#referral:not([hidden])")
    assert pg.locator("#referral-reason").inner_text() == REASON
    assert cytotech.username in pg.locator("#referral").inner_text()
    assert not pg.get_by_role("button", name="Refer to pathologist").is_visible()

    # ... fills in the structured report (kept as the draft) ...
    pg.get_by_label("Bethesda category").select_option("HSIL")
    pg.get_by_label("Specimen type").select_option("liquid_based")
    pg.locator("details[data-group=adequacy] > summary").click()
    pg.get_by_label("Transformation zone").select_option("present")
    pg.locator("details[data-group=findings] > summary").click()
    pg.get_by_label("Trichomonas vaginalis").check()
    pg.get_by_label("Glandular cells", exact=True).select_option("agc_nos")
    pg.locator("details[data-group=follow-up] > summary").click()
    pg.get_by_label("HPV test").select_option("positive_16")
    pg.get_by_label("Recommendation").fill("Colposcopy.")
    _wait_draft_saved(pg)
    assert pg.locator("details[data-group=findings] .count").inner_text() == "· 2 set"
    assert f"by {pathologist.username}" in pg.locator("#draft-state").inner_text()
    pg.evaluate("document.querySelector('.sidebar').scrollTop = 0")
    screenshot(pg, "referral.png")
    pg.set_viewport_size({"width": 1440, "height": 2000})  # the whole panel, groups open
    pg.locator("#interp").screenshot(path=str(ARTIFACTS / "referral-panel.png"))
    pg.set_viewport_size({"width": 1440, "height": 900})

    # ... is stopped by the undecided flagged SCC cell, decides it, and signs out.
    pg.get_by_role("button", name="Sign out as HSIL").click()
    pg.wait_for_function("document.getElementById('signout-error').textContent !== ''")
    assert "flagged cell" in pg.locator("#signout-error").inner_text()
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.REFERRED
    Cell.objects.filter(pk=scc.pk).update(review_status=ReviewStatus.REJECTED)
    pg.get_by_role("button", name="Sign out as HSIL").click()
    pg.wait_for_selector("#signed-out:not([hidden])")
    assert "Signed out as HSIL" in pg.locator("#signed-out").inner_text()
    assert pg.get_by_label("Trichomonas vaginalis").is_checked()  # the report stays on show
    assert pg.get_by_label("Trichomonas vaginalis").is_disabled()
    screenshot(pg, "referral-signed-out.png")

    interpretation = Slide.objects.get(pk=slide.pk).interpretation
    assert interpretation.bethesda_category == "HSIL"
    assert interpretation.signed_out_by == pathologist
    assert interpretation.specimen_type == "liquid_based"
    assert interpretation.report == {
        "transformation_zone": "present",
        "organisms": ["trichomonas"],
        "glandular": "agc_nos",
        "hpv": "positive_16",
        "recommendation": "Colposcopy.",
    }
    # The referral stays in the panel's history.
    assert REASON in pg.locator("#history").inner_text()


def test_draft_conflict_keeps_the_other_edit(
    live_server, page, pathologist, cytotech, stored_slide
) -> None:
    slide = stored_slide(cells=20, seed=8)
    log_in(page, live_server.url, pathologist.username)
    _open_review(page, f"{live_server.url}/slides/{slide.pk}/")
    page.get_by_label("Comment").fill("Mine.")
    _wait_draft_saved(page)
    assert InterpretationDraft.objects.get(slide=slide).version == 1

    # Meanwhile the cytotechnologist saves the draft from elsewhere (version 1 -> 2).
    interpretation_draft_save(
        slide=slide, by=cytotech, version=1, bethesda_category="LSIL", comment="Theirs."
    )

    # The pathologist's next edit was made on version 1: refused, theirs is shown.
    page.get_by_label("Bethesda category").select_option("HSIL")
    conflict = page.locator("#draft-conflict")
    conflict.wait_for(state="visible")
    text = conflict.inner_text()
    assert text.startswith(f"{cytotech.username} changed the draft at ")
    assert text.endswith("their version is shown; your edit was not saved.")
    assert page.get_by_label("Comment").input_value() == "Theirs."
    assert page.get_by_label("Bethesda category").input_value() == "LSIL"
    assert f"by {cytotech.username}" in page.locator("#draft-state").inner_text()
    draft = InterpretationDraft.objects.get(slide=slide)
    assert (draft.version, draft.comment, draft.bethesda_category) == (2, "Theirs.", "LSIL")
    screenshot(page, "draft-conflict.png")

    # Editing on top of their version saves (version 3) and the message goes.
    page.get_by_label("Comment").fill("Theirs. Agreed, LSIL.")
    _wait_draft_saved(page)
    conflict.wait_for(state="hidden")
    draft.refresh_from_db()
    assert (draft.version, draft.comment, draft.updated_by) == (
        3,
        "Theirs. Agreed, LSIL.",
        pathologist,
    )
