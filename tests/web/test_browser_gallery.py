"""Issue 15, item 6 (remainder), in real Chromium: the gallery's N most suspicious crops grouped by
class (groups in the order of their most suspicious cell, ranked within), each crop marked seen
and decided, J / K / G driving it from the keyboard, and a click or a key centring the viewer."""

from __future__ import annotations

import pytest

from inference.types import SEVERITY
from papreview.review.models import Cell, ReviewStatus
from testkit.browser import open_review, screenshot, wait_saved, wait_viewer_still

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CENTRED = """(id) => { const c = window.__review.store.byId.get(id);
  const b = window.__review.overlay.toScreenBox(c);
  const r = document.getElementById('viewer').getBoundingClientRect();
  return [b.x + b.w / 2 - r.width / 2, b.y + b.h / 2 - r.height / 2]; }"""


def _ids(page) -> list[int]:
    return [int(v) for v in page.locator("#gallery .thumb").evaluate_all(
        "(ts) => ts.map((t) => t.dataset.cell)")]  # fmt: skip


def _centred(page, cell_id: int) -> None:
    page.wait_for_function(f"window.__review.selected === {cell_id}")
    wait_viewer_still(page)
    dx, dy = page.evaluate(CENTRED, cell_id)
    assert abs(dx) < 3 and abs(dy) < 3


def test_gallery_grouped_by_class_marked_and_keyboard_driven(
    live_server, page, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=120, seed=31)
    open_review(page, live_server.url, pathologist.username, slide.pk)
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length > 0")
    page.locator("#gallery-n").select_option("24")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 24")

    # The 24 most suspicious abnormal cells, grouped by class, each group ranked.
    cells = {c.pk: c for c in Cell.objects.filter(slide=slide).exclude(current_class="NILM")}

    def score(c: Cell) -> float:
        return SEVERITY[c.current_class] * c.probabilities[c.current_class]

    top = sorted(cells.values(), key=lambda c: (-score(c), -c.probabilities[c.current_class], c.pk))
    top = top[:24]
    order = list(dict.fromkeys(c.current_class for c in top))
    expected = [c.pk for cls in order for c in top if c.current_class == cls]
    assert _ids(page) == expected
    assert page.locator("#gallery .group-head .cls-code").all_inner_texts() == order
    assert _ids(page)[0] == top[0].pk  # the first crop is still the most suspicious cell

    # J selects the first crop and centres the viewer on it; J again the next one; G the next
    # class's first crop; K back.
    page.keyboard.press("j")
    _centred(page, expected[0])
    page.keyboard.press("j")
    _centred(page, expected[1])
    group = cells[expected[1]].current_class
    first_of_next = next(pk for pk in expected if cells[pk].current_class != group)
    page.keyboard.press("g")
    _centred(page, first_of_next)
    page.keyboard.press("k")
    _centred(page, expected[expected.index(first_of_next) - 1])

    # Selected crops are marked seen; accepting one marks it decided (a tick).
    seen = page.locator(f'#gallery .thumb[data-cell="{expected[0]}"]')
    page.wait_for_function(
        f"document.querySelector('#gallery .thumb[data-cell=\"{expected[0]}\"]')"
        ".classList.contains('seen')"
    )
    assert "seen" in seen.get_attribute("aria-label")
    selected = page.evaluate("window.__review.selected")
    page.keyboard.press("a")  # accept (and move on to the next cell)
    page.wait_for_function(
        f"document.querySelector('#gallery .thumb[data-cell=\"{selected}\"] .mark.done') !== null"
    )
    wait_saved(page)
    assert Cell.objects.get(pk=selected).review_status == ReviewStatus.CONFIRMED

    # A click on a crop selects it and centres the viewer on it.
    target = expected[-1]
    page.keyboard.press("0")  # the whole slide first
    wait_viewer_still(page)
    page.locator(f'#gallery .thumb[data-cell="{target}"]').click()
    _centred(page, target)
    page.wait_for_timeout(800)  # crops in view long enough are seen
    screenshot(page, "gallery-grouped.png")
