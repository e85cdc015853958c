"""The whole path in real Chromium with a real Celery worker: log in, upload two files (one
corrupt), see the good one analysed, open it, relabel a cell with the keyboard, add a cell, undo,
reload, sign out. Screenshots of the upload, queue and review pages go to tests/_artifacts/."""

from __future__ import annotations

import pytest

from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus
from testkit.browser import log_in, screenshot, wait_saved
from testkit.images import field_bytes
from tests.analysis.conftest import (  # noqa: F401  (the analysis tests' real worker)
    analysis_settings,
    media_root,
    shared_media,
    tiny_weights,
    workers,
)
from tests.factories import PatientFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_upload_analyse_review_sign_out(
    live_server,
    page,
    pathologist,
    workers,  # noqa: F811
    tmp_path,
) -> None:
    workers.current()  # a live worker on the inference queue
    PatientFactory.create(identifier="SCREEN-0001")  # someone else, already there
    good = tmp_path / "field-good.png"
    good.write_bytes(field_bytes(512, 384, seed=11))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 200)

    log_in(page, live_server.url, pathologist.username)
    page.get_by_role("link", name="Upload", exact=True).click()
    # A new patient, created from the upload page.
    page.locator("#new-patient summary").click()
    page.get_by_label("Identifier (pseudonymous)").fill("SCREEN-0042")
    page.get_by_label("Birth year (optional)").fill("1984")
    page.get_by_role("button", name="Create patient").click()
    page.locator(".toast.ok").wait_for()
    patient = Patient.objects.get(identifier="SCREEN-0042")
    assert patient.birth_year == 1984 and patient.created_by == pathologist
    assert page.get_by_label("Existing patient").input_value() == str(patient.pk)
    # Finding a patient by identifier selects the only match.
    page.get_by_label("Find a patient").fill("screen-0001")
    page.wait_for_function("document.getElementById('patient').options.length === 2")
    other = Patient.objects.get(identifier="SCREEN-0001")
    assert page.get_by_label("Existing patient").input_value() == str(other.pk)
    page.get_by_label("Find a patient").fill("SCREEN-0042")
    page.wait_for_function(f"document.getElementById('patient').value === '{patient.pk}'")
    page.set_input_files("#file-input", [str(good), str(corrupt)])

    bad_item = page.locator('.file-item[data-file="corrupt.png"]')
    bad_item.locator(".msg[role=alert]").wait_for()
    assert "corrupt.png" in bad_item.inner_text() and "refused" in bad_item.inner_text()
    good_item = page.locator('.file-item[data-file="field-good.png"]')
    page.wait_for_selector(
        '.file-item[data-file="field-good.png"][data-slide-status="analysed"]', timeout=120_000
    )
    assert "Analysed" in good_item.inner_text()
    screenshot(page, "upload.png")
    slide = Slide.objects.get(patient=patient)
    assert slide.status == SlideStatus.ANALYSED and slide.original_filename == "field-good.png"
    assert Slide.objects.filter(original_filename="corrupt.png").count() == 0
    predicted = Cell.objects.filter(slide=slide).count()
    assert predicted > 0

    page.goto(f"{live_server.url}/")
    row = page.locator(f'tr[data-slide="{slide.pk}"]')
    assert "SCREEN-0042" in row.inner_text() and "Analysed" in row.inner_text()
    screenshot(page, "queue.png")
    row.get_by_role("link", name="field-good.png").click()
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)

    # Keyboard: N selects the most suspicious cell, 5 relabels it HSIL.
    page.keyboard.press("n")
    first = page.evaluate("window.__review.selected")
    page.keyboard.press("5")
    wait_saved(page)
    assert Cell.objects.get(pk=first).current_class == "HSIL"

    # Add a missed cell by drawing, then undo it.
    page.keyboard.press("d")
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 50, steps=6)
    page.mouse.up()
    page.wait_for_function("window.__review.undo.length === 2")
    wait_saved(page)
    added = Cell.objects.get(slide=slide, review_status=ReviewStatus.ADDED)
    page.keyboard.press("Control+z")
    page.wait_for_function("window.__review.redo.length === 1")
    wait_saved(page)
    added.refresh_from_db()
    assert added.review_status == ReviewStatus.REJECTED

    # Reload: the changes are there.
    page.reload()
    page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=30_000)
    assert page.evaluate(f"window.__review.store.byId.get({first}).cls") == "HSIL"
    assert page.evaluate(f"window.__review.store.byId.get({added.pk}).status") == "rejected"
    assert page.evaluate("window.__review.store.cells.length") == predicted + 1
    page.keyboard.press("n")
    page.wait_for_selector("#cell-detail:not([hidden])")
    page.wait_for_timeout(800)
    screenshot(page, "review-scenario.png")

    # Sign out with the suggested category: read-only afterwards.
    page.locator("#use-suggestion").click()
    page.get_by_role("button", name="Sign out as HSIL").click()
    page.wait_for_selector(".signed-banner")
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.SIGNED_OUT
    assert page.locator("#draw-btn").is_disabled()
    page.keyboard.press("1")
    page.wait_for_timeout(300)
    assert Cell.objects.get(pk=first).current_class == "HSIL"
