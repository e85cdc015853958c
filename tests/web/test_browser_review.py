"""The slide review page in real Chromium: keyboard review, drawing, undo, reload, sign-out."""

from __future__ import annotations

import pytest
from django.utils import timezone

from inference.types import SEVERITY
from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus
from papreview.review.selectors import slide_flag_summary
from papreview.review.services import cell_update
from testkit.browser import open_review, screenshot, wait_saved, wait_viewer_still
from tests.factories import AnalysisRunFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_review_with_the_keyboard(live_server, page, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=300, seed=2)
    # the analysis set 14 candidates aside as not cells: the header says so
    # (the first 3 of them kept as boxes, shown on demand)
    aside = [[slide.width // 4 + 60 * i, slide.height // 3, 40, 40] for i in range(3)]
    AnalysisRunFactory.create(
        slide=slide,
        finished_at=timezone.now(),
        timings={"set_aside": 14},
        set_aside_boxes=aside,
    )
    open_review(page, live_server.url, pathologist.username, slide.pk)
    assert page.evaluate("window.__review.store.cells.length") == 300
    said = page.locator("#set-aside").inner_text()
    assert said == "14 objects set aside"
    assert "no cell" in page.locator("#set-aside").get_attribute("title")
    # S shows where they were (grey dotted boxes, never cells), with a word that not all are
    assert page.evaluate("window.__review.overlay.setAsideDrawn") == 0
    page.keyboard.press("s")
    page.wait_for_function("window.__review.overlay.setAsideDrawn === 3")
    assert page.locator("#set-aside-toggle").get_attribute("aria-pressed") == "true"
    assert "3 set aside in view" in page.locator("#hud").inner_text()
    assert "first 3 of 14" in page.locator("#toasts").inner_text()
    assert page.evaluate("window.__review.store.cells.length") == 300
    screenshot(page, "review-set-aside.png")
    page.locator("#set-aside-toggle").click()
    page.wait_for_function("window.__review.overlay.setAsideDrawn === 0")
    assert page.locator("#set-aside-toggle").get_attribute("aria-pressed") == "false"
    hud = page.locator("#hud").inner_text()
    assert "300" in hud

    # N selects the most suspicious cell; 3 relabels it LSIL, saved at once with its version.
    page.keyboard.press("n")
    first = page.evaluate("window.__review.selected")
    ranked = page.evaluate("window.__review.store.ranked()[0].id")
    assert first == ranked
    page.wait_for_selector("#cell-detail:not([hidden])")
    page.keyboard.press("3")
    wait_saved(page)
    cell = Cell.objects.get(pk=first)
    assert cell.current_class == "LSIL" and cell.version == 2
    assert cell.review_status in (ReviewStatus.RELABELLED, ReviewStatus.CONFIRMED)
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    page.wait_for_timeout(600)  # the suggestion follows the reviewed cells
    screenshot(page, "review.png")

    # D, then drag on the slide: a missed cell is added (as the "Draw as" class).
    before = set(Cell.objects.filter(slide=slide).values_list("pk", flat=True))
    page.keyboard.press("d")
    assert page.locator("#mode").is_visible()
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=5)
    page.mouse.move(x + 80, y + 60, steps=5)
    page.mouse.up()
    page.wait_for_function("window.__review.undo.length === 2")
    wait_saved(page)
    (added,) = Cell.objects.filter(slide=slide).exclude(pk__in=before)
    assert added.review_status == ReviewStatus.ADDED and added.current_class == "ASC-US"
    assert added.run_id is None and added.width > 10 and added.height > 10

    # Ctrl+Z undoes the addition (the cell is rejected, its history kept).
    page.keyboard.press("Control+z")
    page.wait_for_function("window.__review.redo.length === 1")
    wait_saved(page)
    added.refresh_from_db()
    assert added.review_status == ReviewStatus.REJECTED and added.revisions.count() == 2

    # A comment in the interpretation is kept as a draft as it is typed.
    page.get_by_label("Comment").fill("Koilocytes in the upper left field.")
    page.wait_for_function(
        "document.getElementById('draft-state').textContent.startsWith('Draft saved')"
    )

    # Reload: the relabel, the undone addition and the draft are there.
    page.reload()
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    assert page.evaluate(f"window.__review.store.byId.get({first}).cls") == "LSIL"
    assert page.evaluate(f"window.__review.store.byId.get({added.pk}).status") == "rejected"
    page.wait_for_function("document.getElementById('comment').value !== ''")
    assert page.get_by_label("Comment").input_value() == "Koilocytes in the upper left field."
    # The undo history survives the reload too: redo brings the added cell back, undo again.
    assert page.evaluate("[window.__review.undo.length, window.__review.redo.length]") == [1, 1]
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("window.__review.redo.length === 0")
    wait_saved(page)
    added.refresh_from_db()
    assert added.review_status == ReviewStatus.ADDED
    page.keyboard.press("Control+z")
    page.wait_for_function("window.__review.redo.length === 1")
    wait_saved(page)
    added.refresh_from_db()
    assert added.review_status == ReviewStatus.REJECTED

    # Sign out as HSIL: refused while flagged SCC cells are undecided; once a reviewer has
    # decided them (here through the service, as another reviewer would), it goes through and
    # the page turns read-only.
    page.get_by_label("Bethesda category").select_option("HSIL")
    undecided_scc = slide_flag_summary(slide_id=slide.pk).undecided_above("HSIL")
    assert undecided_scc, "the random predictions include flagged SCC cells"
    page.get_by_role("button", name="Sign out as HSIL").click()
    page.wait_for_function(
        "document.getElementById('signout-error').textContent.includes('not yet reviewed')"
    )
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    for cell in Cell.objects.filter(pk__in=undecided_scc):
        cell_update(cell=cell, version=cell.version, by=pathologist, review_status="confirmed")
    page.get_by_role("button", name="Sign out as HSIL").click()
    page.wait_for_selector(".signed-banner")
    assert "Signed out as HSIL" in page.locator(".signed-banner").inner_text()
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.SIGNED_OUT
    assert page.get_by_label("Bethesda category").is_disabled()
    page.keyboard.press("n")
    page.keyboard.press("5")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__review.inFlight") == 0
    assert Cell.objects.filter(slide=slide, current_class="HSIL", version__gt=1).count() == 0
    screenshot(page, "review-signed-out.png")

    # A pathologist reopens it with a reason: editable again, the reason in the history.
    page.get_by_label("Reason for reopening").fill("HSIL cells missed on the first read")
    page.get_by_role("button", name="Reopen for review").click()
    page.wait_for_selector("#history li")
    assert "HSIL cells missed" in page.locator("#history").inner_text()
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    assert page.get_by_label("Bethesda category").input_value() == "HSIL"  # kept as the draft
    page.keyboard.press("5")
    wait_saved(page)
    assert Cell.objects.filter(slide=slide, current_class="HSIL", version__gt=1).count() == 1


def test_display_filters_gallery_move_and_conflict(
    live_server, page, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=400, seed=3)
    page.add_init_script("window.__reviewWatchMs = 1000")  # look for others' changes each second
    open_review(page, live_server.url, pathologist.username, slide.pk)
    page.wait_for_function("window.__review.overlay.drawnCount === 400")

    # The help overlay lists the shortcuts.
    page.keyboard.press("?")
    assert page.get_by_role("dialog").is_visible()
    assert "Relabel: 1 NILM" in page.get_by_role("dialog").inner_text()
    screenshot(page, "review-help.png")
    page.keyboard.press("Escape")
    assert not page.get_by_role("dialog").is_visible()

    # Shift+1 hides NILM cells; the confidence slider hides unsure predictions.
    nilm = Cell.objects.filter(slide=slide, current_class="NILM").count()
    page.keyboard.press("Shift+Digit1")
    page.wait_for_function(f"window.__review.overlay.drawnCount === {400 - nilm}")
    assert not page.get_by_label("Show NILM cells").is_checked()
    page.keyboard.press("Shift+Digit1")
    page.locator("#confidence").fill("0.8")
    sure = sum(
        1 for c in Cell.objects.filter(slide=slide) if c.probabilities[c.predicted_class] >= 0.8
    )
    page.wait_for_function(f"window.__review.overlay.drawnCount === {sure}")
    page.locator("#confidence").fill("0")

    # The gallery is ranked by severity x confidence; a click selects the cell and moves there.
    thumbs = page.locator("#gallery .thumb")
    first_id = int(thumbs.first.get_attribute("data-cell"))
    top = max(
        Cell.objects.filter(slide=slide).exclude(current_class="NILM"),
        key=lambda c: SEVERITY[c.current_class] * c.probabilities[c.current_class],
    )
    assert first_id == top.pk
    second = int(thumbs.nth(1).get_attribute("data-cell"))
    thumbs.nth(1).click()
    assert page.evaluate("window.__review.selected") == second
    wait_viewer_still(page)
    cell = Cell.objects.get(pk=second)
    centre = page.evaluate(
        f"""(() => {{ const c = window.__review.store.byId.get({second});
        const b = window.__review.overlay.toScreenBox(c);
        const r = document.getElementById('viewer').getBoundingClientRect();
        return [r.left + b.x + b.w / 2, r.top + b.y + b.h / 2, b.w / c.w,
                r.left + r.width / 2, r.top + r.height / 2]; }})()"""
    )
    x, y, scale, vx, vy = centre
    assert abs(x - vx) < 3 and abs(y - vy) < 3  # centred
    assert cell.width * scale > 40  # and zoomed in to see it

    # Drag the selected box: it moves by the same distance in slide pixels.
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 20, y + 10, steps=4)
    page.mouse.move(x + 40, y + 20, steps=4)
    page.mouse.up()
    wait_saved(page)
    page.wait_for_function("window.__review.undo.length === 1")
    moved = Cell.objects.get(pk=second)
    assert abs((moved.x - cell.x) - 40 / scale) <= 2 and abs((moved.y - cell.y) - 20 / scale) <= 2
    assert (moved.width, moved.height) == (cell.width, cell.height)
    assert moved.review_status == ReviewStatus.CONFIRMED and moved.version == 2

    # Drag its bottom-right corner: it grows, its top-left corner stays.
    corner = page.evaluate(
        f"""(() => {{ const c = window.__review.store.byId.get({second});
        const b = window.__review.overlay.toScreenBox(c);
        const r = document.getElementById('viewer').getBoundingClientRect();
        return [r.left + b.x + b.w, r.top + b.y + b.h]; }})()"""
    )
    page.mouse.move(corner[0], corner[1])
    page.mouse.down()
    page.mouse.move(corner[0] + 15, corner[1] + 10, steps=4)
    page.mouse.move(corner[0] + 30, corner[1] + 20, steps=4)
    page.mouse.up()
    page.wait_for_function("window.__review.undo.length === 2")
    wait_saved(page)
    resized = Cell.objects.get(pk=second)
    assert (resized.x, resized.y) == (moved.x, moved.y)
    assert abs((resized.width - moved.width) - 30 / scale) <= 2
    assert abs((resized.height - moved.height) - 20 / scale) <= 2
    # Undo restores the box it had before.
    page.keyboard.press("Control+z")
    page.wait_for_function("window.__review.redo.length === 1")
    wait_saved(page)
    back = Cell.objects.get(pk=second)
    assert (back.width, back.height) == (moved.width, moved.height) and back.version == 4

    # Someone else changes the cell: the next key gets 409, the page reloads the cell and says so.
    Cell.objects.filter(pk=second).update(current_class="NILM", version=7)  # (was 4)
    page.keyboard.press("4")
    page.locator(".toast.warn").wait_for()
    assert "changed by someone else" in page.locator(".toast.warn").inner_text()
    assert page.evaluate(f"window.__review.store.byId.get({second}).cls") == "NILM"
    assert page.evaluate(f"window.__review.store.byId.get({second}).version") == 7
    assert Cell.objects.get(pk=second).current_class == "NILM"
    # Applying it again now works with the fresh version.
    page.keyboard.press("4")
    wait_saved(page)
    assert Cell.objects.get(pk=second).current_class == "ASC-H"

    # Another reviewer relabels a cell elsewhere: the page picks it up without a reload.
    other = Cell.objects.filter(slide=slide).exclude(pk=second).order_by("id").first()
    assert other is not None
    Cell.objects.filter(pk=other.pk).update(
        current_class="SCC", version=other.version + 1, updated_at=timezone.now()
    )
    page.wait_for_function(f"window.__review.store.byId.get({other.pk}).cls === 'SCC'")
    assert "changed by another reviewer" in page.locator("#toasts").inner_text()


def test_a_cytotechnologist_reviews_the_flagged_cells_and_signs_out_nilm(
    live_server, page, cytotech, stored_slide
) -> None:
    slide = stored_slide(cells=5, seed=4)
    open_review(page, live_server.url, cytotech.username, slide.pk)
    category = page.get_by_label("Bethesda category")
    category.select_option("HSIL")
    assert page.get_by_role("button", name="Sign out as HSIL").is_disabled()
    assert "needs a pathologist" in page.locator("#signout-error").inner_text()
    category.select_option("NILM")
    page.get_by_label("Comment").fill("No intraepithelial lesion seen.")
    # Flagged cells first: U walks to each undecided one, 1 relabels it NILM.
    flagged = [pk for pk, _ in slide_flag_summary(slide_id=slide.pk).undecided]
    assert flagged, "the random predictions include flagged cells"
    page.get_by_role("button", name="Sign out as NILM").click()
    page.wait_for_function(
        "document.getElementById('signout-error').textContent.includes('not yet reviewed')"
    )
    for expected in flagged:
        page.keyboard.press("u")
        page.wait_for_function(f"window.__review.selected === {expected}")
        page.keyboard.press("1")
        wait_saved(page)
    assert set(
        Cell.objects.filter(pk__in=flagged).values_list("review_status", "current_class")
    ) <= {("relabelled", "NILM"), ("confirmed", "NILM")}
    page.get_by_role("button", name="Sign out as NILM").click()
    page.wait_for_selector(".signed-banner")
    interpretation = Slide.objects.get(pk=slide.pk).interpretation
    assert interpretation.bethesda_category == "NILM"
    assert interpretation.comment == "No intraepithelial lesion seen."
    assert interpretation.signed_out_by == cytotech
    # A cytotechnologist cannot reopen: the page says who can.
    assert page.get_by_role("button", name="Reopen for review").count() == 0
    assert "A pathologist can reopen it" in page.locator("#signed-out").inner_text()
