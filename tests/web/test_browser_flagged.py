"""Flagged cells on the review page in real Chromium: the counter, U to the next undecided one,
the gallery's markers and "reviewed, none abnormal" for the crops seen; the class palette and the
line sliders; referred slides in the queue. Screenshots (and a deuteranopia simulation) go to
tests/_artifacts/."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from django.utils import timezone
from PIL import Image

from inference.types import BETHESDA_CLASSES, CLASS_COLOURS, SEVERITY
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import Cell, CellSighting, ReviewStatus
from papreview.workflow.models import SlideEvent, SlideEventKind
from testkit.browser import (
    ARTIFACTS,
    log_in,
    open_review,
    screenshot,
    wait_saved,
    wait_viewer_still,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COUNTER = "#flag-counter .text"


@dataclass(frozen=True)
class Spec:
    name: str
    cls: str
    confidence: float
    status: str = ReviewStatus.PREDICTED


def nuclei(slide: Slide, seed: int) -> list[tuple[int, int]]:
    """Centres of the dark nuclei of the slide's synthetic image, largest first, so that the
    boxes sit on cells the way a detector's would."""
    rgb = np.asarray(Image.open(io.BytesIO(synthetic_pap_bytes(seed=seed, fmt="JPEG"))))
    dark = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 110).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(dark)
    found = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [(int(centroids[i][0]), int(centroids[i][1])) for i in found]


def place(slide: Slide, specs: list[Spec], *, seed: int, size: int = 76) -> dict[str, Cell]:
    """One cell per spec, a `size` box around a nucleus each (a reviewer-added one has no run)."""
    run = AnalysisRun.objects.filter(slide=slide, status=RunStatus.SUCCEEDED).latest("pk")
    centres = nuclei(slide, seed)
    assert len(centres) >= len(specs)
    cells = {}
    for spec, (cx, cy) in zip(specs, centres, strict=False):
        x = min(max(0, cx - size // 2), slide.width - size)
        y = min(max(0, cy - size // 2), slide.height - size)
        added = spec.status == ReviewStatus.ADDED
        rest = (1 - spec.confidence) / (len(BETHESDA_CLASSES) - 1)
        cells[spec.name] = Cell.objects.create(
            slide=slide,
            run=None if added else run,
            x=x,
            y=y,
            width=size,
            height=size,
            predicted_class="" if added else spec.cls,
            current_class=spec.cls,
            probabilities={}
            if added
            else {c: spec.confidence if c == spec.cls else rest for c in BETHESDA_CLASSES},
            detection_score=None if added else 0.9,
            review_status=spec.status,
        )
    return cells


def test_flagged_counter_next_and_reviewed_none_abnormal(
    live_server, page, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=0, seed=5)
    specs = [
        # Flagged (model: abnormal, confidence >= 0.5) and undecided.
        Spec("hsil", "HSIL", 0.92),
        Spec("scc", "SCC", 0.70),
        Spec("asch", "ASC-H", 0.81),
        Spec("lsil", "LSIL", 0.66),
        Spec("ascus", "ASC-US", 0.58),
        Spec("hsil_low", "HSIL", 0.51),
        # Flagged and already decided by someone.
        Spec("confirmed", "HSIL", 0.95, ReviewStatus.CONFIRMED),
        # Not flagged: unsure, normal, or drawn by a reviewer.
        Spec("unsure_lsil", "LSIL", 0.42),
        Spec("unsure_ascus", "ASC-US", 0.35),
        Spec("nilm", "NILM", 0.90),
        Spec("added", "ASC-H", 1.0, ReviewStatus.ADDED),
    ]
    cells = place(slide, specs, seed=5)
    undecided = ["hsil", "scc", "asch", "lsil", "ascus", "hsil_low"]
    ranked = sorted(
        undecided,
        key=lambda n: (
            -SEVERITY[cells[n].current_class] * cells[n].probabilities[cells[n].current_class]
        ),
    )
    page.add_init_script("window.__reviewWatchMs = 1000")  # look for others' changes each second
    open_review(page, live_server.url, pathologist.username, slide.pk)

    # The counter: 7 flagged, 1 of them decided; amber while some are left.
    wait_counter(page, 7, 1)
    assert "incomplete" in page.locator("#flag-counter").get_attribute("class").split()

    # Another reviewer decides one: the counter follows without a reload.
    other = cells["ascus"]
    Cell.objects.filter(pk=other.pk).update(
        review_status=ReviewStatus.CONFIRMED, version=2, updated_at=timezone.now()
    )
    wait_counter(page, 7, 2)
    ranked.remove("ascus")

    # U selects the most suspicious undecided flagged cell and moves there; U again the next one.
    page.keyboard.press("u")
    first = cells[ranked[0]].pk
    page.wait_for_function(f"window.__review.selected === {first}")
    assert "flagged" in page.locator("#cell-status").inner_text()
    page.keyboard.press("u")
    second = cells[ranked[1]].pk
    page.wait_for_function(f"window.__review.selected === {second}")
    wait_viewer_still(page)
    # Selecting a cell records that this reviewer saw it (in the background).
    _wait_db(page, lambda: CellSighting.objects.filter(cell_id=second, via="selected").exists())
    assert CellSighting.objects.get(cell_id=first, via="selected").seen_by == pathologist

    # Accept it: decided, the counter follows.
    page.keyboard.press("a")
    wait_saved(page)
    assert Cell.objects.get(pk=second).review_status == ReviewStatus.CONFIRMED
    wait_counter(page, 7, 3)

    # The gallery (all abnormal, ranked): a dot on undecided flagged crops, a tick on decided ones,
    # nothing on unflagged ones; crops at their own size, never enlarged.
    thumbs = page.locator("#gallery .thumb")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb img').length > 0")
    # (the gallery redraws a moment after a change, once for a burst of them)
    page.wait_for_selector(f'#gallery .thumb[data-cell="{second}"] .mark.done')
    assert page.locator(f'#gallery .thumb[data-cell="{cells["hsil"].pk}"] .mark.todo').count() == 1
    assert page.locator(f'#gallery .thumb[data-cell="{second}"] .mark.done').count() == 1
    assert (
        page.locator(f'#gallery .thumb[data-cell="{cells["unsure_lsil"].pk}"] .mark').count() == 0
    )
    page.wait_for_function(
        """[...document.querySelectorAll('#gallery .thumb img')]
        .every((i) => i.complete && i.naturalWidth)"""
    )
    sizes = page.evaluate(
        """[...document.querySelectorAll('#gallery .thumb img')].map(
        (i) => [i.clientWidth, i.naturalWidth, i.clientHeight, i.naturalHeight])"""
    )
    assert all(cw == nw and ch == nh for cw, nw, ch, nh in sizes), sizes
    assert thumbs.count() == 10  # every abnormal cell, flagged or not, decided or not
    page.wait_for_timeout(1800)  # the crops in view are seen (and told to the server)
    screenshot(page, "flagged-gallery.png")

    # Filter: flagged, not reviewed — the ones left, most suspicious first (within their class).
    page.get_by_label("Class", exact=True).select_option("flagged")
    left = [pk for pk in (cells[n].pk for n in ranked) if pk != second]
    page.wait_for_function(f"document.querySelectorAll('#gallery .thumb').length === {len(left)}")
    # Grouped by class, the groups in the order of their most suspicious cell, ranked within.
    classes = {c.pk: c.current_class for c in cells.values()}
    grouped = sorted(left, key=lambda pk: [classes[q] for q in left].index(classes[pk]))
    assert [int(t.get_attribute("data-cell")) for t in thumbs.all()] == grouped
    heads = page.locator("#gallery .group-head .cls-code").all_inner_texts()
    assert heads == list(dict.fromkeys(classes[pk] for pk in left))
    button = page.get_by_role("button", name="Mark seen flagged cells reviewed: none abnormal")
    page.wait_for_function(
        "!document.getElementById('clear-seen-btn').disabled"
        f" && document.querySelector('#clear-seen-btn .n').textContent === ' ({len(left)})'"
    )
    _wait_db(
        page,
        lambda: (
            CellSighting.objects.filter(cell_id__in=left, seen_by=pathologist, via="gallery")
            .values("cell")
            .distinct()
            .count()
            == len(left)
        ),
    )

    # It asks first, naming the count; Esc cancels and nothing changes.
    button.click()
    dialog = page.get_by_role("dialog", name="Reviewed, none abnormal?")
    assert dialog.is_visible()
    assert f"{len(left)} flagged cells you have seen" in dialog.inner_text()
    screenshot(page, "flagged-confirm.png")
    page.keyboard.press("r")  # the review keys are off while the dialog is open
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    assert Cell.objects.filter(pk__in=left, review_status=ReviewStatus.PREDICTED).count() == len(
        left
    )
    assert page.evaluate("window.__review.inFlight") == 0

    # Enter confirms: the seen undecided flagged cells are cleared (NILM), each with a sighting.
    button.click()
    assert dialog.is_visible()
    page.keyboard.press("Enter")
    page.locator(".toast.ok", has_text="marked reviewed").wait_for()
    for pk in left:
        cell = Cell.objects.get(pk=pk)
        assert (cell.review_status, cell.current_class) == (ReviewStatus.CLEARED, "NILM")
        assert CellSighting.objects.filter(cell=cell, seen_by=pathologist).exists()
    assert Cell.objects.get(pk=second).review_status == ReviewStatus.CONFIRMED  # untouched
    assert Cell.objects.get(pk=cells["unsure_lsil"].pk).review_status == ReviewStatus.PREDICTED

    # All flagged cells reviewed: the counter says so, the gallery filter is empty, U tells.
    wait_counter(page, 7, 7)
    assert "complete" in page.locator("#flag-counter").get_attribute("class").split()
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 0")
    assert page.locator("#clear-seen-btn").is_disabled()
    page.keyboard.press("u")
    page.locator(".toast", has_text="All flagged cells reviewed").wait_for()
    # The help lists U.
    page.keyboard.press("?")
    assert "Next flagged cell not yet reviewed" in page.locator("#help").inner_text()
    page.keyboard.press("Escape")

    # A reload shows the same (the server's state, not the page's).
    page.reload()
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    wait_counter(page, 7, 7)


def wait_counter(page, flagged: int, reviewed: int) -> None:
    text = f"Flagged: {flagged} · reviewed: {reviewed}"
    page.wait_for_function(f"document.querySelector('{COUNTER}').textContent === '{text}'")


def _wait_db(page, predicate, timeout_ms: int = 10_000) -> None:
    """Until `predicate()` (a database check) holds, letting the page run meanwhile."""
    for _ in range(timeout_ms // 100):
        if predicate():
            return
        page.wait_for_timeout(100)
    assert predicate()


def deuteranopia(path) -> Image.Image:
    """The screenshot as a deuteranope sees it (Machado et al. 2009, severity 1, linear RGB)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    )
    sim = np.clip(linear @ matrix.T, 0, 1)
    srgb = np.where(sim <= 0.0031308, sim * 12.92, 1.055 * sim ** (1 / 2.4) - 0.055)
    return Image.fromarray((srgb * 255).round().astype(np.uint8))


def test_palette_and_line_sliders(live_server, page, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0, seed=7)
    # Every class twice: as predicted (thin) and as decided by a reviewer (thick).
    specs = [Spec(f"{c}-p", c, 0.9) for c in BETHESDA_CLASSES] + [
        Spec(f"{c}-r", c, 0.9, ReviewStatus.CONFIRMED) for c in BETHESDA_CLASSES
    ]
    cells = place(slide, specs, seed=7, size=84)
    open_review(page, live_server.url, pathologist.username, slide.pk)
    page.wait_for_function(f"window.__review.overlay.drawnCount === {len(specs)}")
    assert page.evaluate("window.__review.overlay.colours") == CLASS_COLOURS

    # Zoom to the cells so each box is well over 50 screen pixels.
    x0 = min(c.x for c in cells.values()) - 40
    y0 = min(c.y for c in cells.values()) - 40
    x1 = max(c.x + c.width for c in cells.values()) + 40
    y1 = max(c.y + c.height for c in cells.values()) + 40
    page.evaluate(
        f"""(() => {{ const OSD = window.OpenSeadragon; const vp = window.__review.viewer.viewport;
        const box = new OSD.Rect({x0}, {y0}, {x1 - x0}, {y1 - y0});
        vp.fitBounds(vp.imageToViewportRectangle(box), true); }})()"""
    )
    wait_viewer_still(page)
    page.wait_for_timeout(1500)  # the tiles at this zoom
    path = screenshot(page, "palette.png")
    deuteranopia(path).save(ARTIFACTS / "palette-deuteranopia.png")

    # Line width and opacity: applied at once, kept in this browser for the next slide.
    page.locator("#line-width").fill("3.5")
    page.locator("#line-opacity").fill("0.6")
    assert page.evaluate(
        "[window.__review.overlay.lineWidth, window.__review.overlay.opacity]"
    ) == [
        3.5,
        0.6,
    ]
    assert page.locator("#line-width-out").inner_text() == "3.5 px"
    assert page.locator("#line-opacity-out").inner_text() == "60%"
    page.wait_for_timeout(300)
    screenshot(page, "palette-thick.png")
    page.reload()
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    assert page.evaluate(
        "[window.__review.overlay.lineWidth, window.__review.overlay.opacity]"
    ) == [
        3.5,
        0.6,
    ]
    assert page.locator("#line-width").input_value() == "3.5"


def test_queue_shows_referred_slides_with_the_reason(
    live_server, page, pathologist, cytotech, stored_slide
) -> None:
    slide = stored_slide(cells=3, seed=8)
    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.REFERRED)
    SlideEvent.objects.create(
        slide=slide,
        kind=SlideEventKind.REFERRED,
        by=cytotech,
        reason="Hyperchromatic crowded groups; query HSIL.",
    )
    log_in(page, live_server.url, pathologist.username)
    row = page.locator(f'tr[data-slide="{slide.pk}"]')
    assert row.locator(".badge.status-referred").inner_text() == "Referred"
    assert "Hyperchromatic crowded groups; query HSIL." in row.locator(".status-cell").inner_text()
    page.get_by_label("Status").select_option("referred")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=referred**")
    assert page.locator("#queue tbody tr").count() == 1
    screenshot(page, "queue-referred.png")
