"""Issue 15, item 5 (remainder), in real Chromium: overlapping boxes of one cell are drawn once
(the decided or more suspicious one, which is also the one a click selects); M toggles a ruler
for nuclear size where the slide says its microns per pixel, and says why not where it does not."""

from __future__ import annotations

import pytest

from papreview.cases.models import Slide
from papreview.review.models import Cell, ReviewStatus
from testkit.browser import open_review, screenshot, state_when_still, wait_viewer_still
from testkit.fixtures import make_cells

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STATE = """() => {
  const o = window.__review.overlay;
  return {mode: o.mode, n: o.drawnCount, hidden: [...o.hidden], ruler: o.rulerDrawn,
          scale: o.transform().s};
}"""


def _twins(slide: Slide) -> tuple[Cell, Cell, Cell]:
    """Three boxes of one cell near the middle: a confident HSIL, a weaker LSIL shifted by a few
    pixels, and a NILM shifted further (IoU still above 0.5)."""
    template = make_cells(slide, 1, seed=99)[0]
    cx, cy = slide.width // 2, slide.height // 2
    boxes = []
    for dx, cls, conf in ((0, "HSIL", 0.95), (4, "LSIL", 0.6), (8, "NILM", 0.9)):
        probs = {c: 0.01 for c in template.probabilities}
        probs[cls] = conf
        boxes.append(
            Cell.objects.create(
                slide=slide,
                run=template.run,
                x=cx + dx,
                y=cy + dx,
                width=60,
                height=60,
                predicted_class=cls,
                current_class=cls,
                probabilities=probs,
                detection_score=0.9,
                review_status=ReviewStatus.PREDICTED,
            )
        )
    template.delete()
    return boxes[0], boxes[1], boxes[2]


def _open(page, live_server, user, slide: Slide) -> None:
    open_review(page, live_server.url, user.username, slide.pk)
    wait_viewer_still(page)


def _zoom_to(page, cell: Cell) -> dict:
    page.evaluate(
        """([x, y, w, h]) => { const v = window.__review.viewer, OSD = window.OpenSeadragon;
        v.viewport.fitBounds(v.viewport.imageToViewportRectangle(new OSD.Rect(x - 3 * w,
        y - 2 * h, 7 * w, 5 * h)), true); }""",
        [cell.x, cell.y, cell.width, cell.height],
    )
    return state_when_still(page, STATE)


def test_one_cell_boxed_three_times_is_drawn_once(
    live_server, page, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=0, seed=21)
    hsil, lsil, nilm = _twins(slide)
    _open(page, live_server, pathologist, slide)
    state = _zoom_to(page, hsil)
    assert state["mode"] == "boxes" and state["n"] == 3
    assert sorted(state["hidden"]) == sorted([lsil.pk, nilm.pk])  # the most suspicious stays
    assert "2 overlapping boxes drawn once" in page.locator("#hud").inner_text()
    screenshot(page, "overlap-one-box.png")
    # A click on the box selects the one drawn, never a hidden twin.
    box = page.evaluate(
        "(id) => window.__review.overlay.toScreenBox(window.__review.store.byId.get(id))", hsil.pk
    )
    viewer = page.locator("#viewer").bounding_box()
    page.mouse.click(viewer["x"] + box["x"] + box["w"] / 2, viewer["y"] + box["y"] + 2)
    page.wait_for_function(f"window.__review.selected === {hsil.pk}")
    # Hiding HSIL shows the next one in priority, still once.
    page.keyboard.press("Shift+Digit5")
    page.wait_for_timeout(200)
    after = page.evaluate(STATE)
    assert after["n"] == 2 and after["hidden"] == [nilm.pk]  # LSIL 2 x 0.6 over NILM 0 x 0.9


def test_m_toggles_a_ruler_for_nuclear_size(live_server, page, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0, seed=22)
    Slide.objects.filter(pk=slide.pk).update(mpp=0.25)
    hsil, _, _ = _twins(slide)
    _open(page, live_server, pathologist, slide)
    _zoom_to(page, hsil)
    assert page.evaluate(STATE)["ruler"] is None
    viewer = page.locator("#viewer").bounding_box()
    page.mouse.move(viewer["x"] + viewer["width"] / 2, viewer["y"] + viewer["height"] / 2)
    page.keyboard.press("m")
    page.wait_for_function("window.__review.overlay.rulerDrawn !== null")
    state = page.evaluate(STATE)
    ruler = state["ruler"]
    px_per_um = state["scale"] / 0.25
    assert ruler["pxPerUm"] == pytest.approx(px_per_um)
    assert ruler["rulePx"] == pytest.approx(20 * px_per_um)
    diameters = [c["um"] for c in ruler["circles"]]
    assert diameters == pytest.approx([6.68, 11.57], abs=0.01)  # 35 µm² and 105 µm²
    screenshot(page, "nuclear-ruler.png")
    page.keyboard.press("m")
    page.wait_for_function("window.__review.overlay.rulerDrawn === null")


def test_no_ruler_without_microns_per_pixel(live_server, page, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=5, seed=23)
    _open(page, live_server, pathologist, slide)
    page.keyboard.press("m")
    page.get_by_text("does not say its microns per pixel").wait_for()
    assert page.evaluate(STATE)["ruler"] is None
