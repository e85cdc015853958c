"""The review queue in real Chromium: most suspicious first, live analysis progress without a
reload, assignment from the list, keyboard navigation."""

from __future__ import annotations

import pytest

from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import ReviewStatus
from testkit.browser import log_in, screenshot
from tests.factories import CellFactory, PatientFactory, SlideFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_queue_is_live_and_assignable(live_server, page, pathologist, cytotech) -> None:
    rows = [
        ("PT-1041", "HSIL", 4.93, SlideStatus.IN_REVIEW),
        ("PT-1007", "SCC", 5.71, SlideStatus.ANALYSED),
        ("PT-0999", "LSIL", 2.64, SlideStatus.ANALYSED),
        ("PT-1102", "ASC-H", 3.88, SlideStatus.ANALYSED),
        ("PT-0950", "NILM", 0.97, SlideStatus.ANALYSED),
        ("PT-1200", "ASC-US", 1.55, SlideStatus.IN_REVIEW),
    ]
    made = {}
    for identifier, cls, score, status in rows:
        made[identifier] = SlideFactory.create(
            patient=PatientFactory.create(identifier=identifier),
            original_filename=f"{identifier.lower()}-field.jpg",
            triage_class=cls,
            triage_score=score,
            status=status,
        )
    CellFactory.create(
        slide=made["PT-1041"], current_class="HSIL", review_status=ReviewStatus.CONFIRMED
    )
    running = SlideFactory.create(
        patient=PatientFactory.create(identifier="PT-1300"),
        original_filename="pt-1300-wsi.svs",
        status=SlideStatus.ANALYSING,
        triage_score=None,
        triage_class="",
    )
    run = AnalysisRun.objects.create(slide=running, status=RunStatus.RUNNING, progress=30)
    SlideFactory.create(
        patient=PatientFactory.create(identifier="PT-0800"),
        original_filename="pt-0800-blurred.png",
        status=SlideStatus.FAILED,
        failure_reason="The image is unreadable: truncated JPEG data.",
        triage_score=None,
        triage_class="",
    )

    log_in(page, live_server.url, pathologist.username)
    patients = page.locator("#queue tbody tr td:first-child").all_inner_texts()
    assert patients[:6] == ["PT-1007", "PT-1041", "PT-1102", "PT-0999", "PT-1200", "PT-0950"]
    running_row = page.locator(f'tr[data-slide="{running.pk}"]')
    assert "30%" in running_row.inner_text()
    screenshot(page, "queue-live.png")

    # The analysis advances and ends: the row follows without a reload.
    AnalysisRun.objects.filter(pk=run.pk).update(progress=80)
    page.wait_for_function(
        f"""document.querySelector('tr[data-slide="{running.pk}"] .pct').textContent === '80%'"""
    )
    AnalysisRun.objects.filter(pk=run.pk).update(progress=100, status=RunStatus.SUCCEEDED)
    Slide.objects.filter(pk=running.pk).update(
        status=SlideStatus.ANALYSED, triage_class="HSIL", triage_score=4.2
    )
    page.wait_for_function(
        f"""document.querySelector('tr[data-slide="{running.pk}"]').dataset.status === 'analysed'"""
    )
    assert "4.20" in running_row.inner_text() and "Analysed" in running_row.inner_text()

    # Assign a slide to the cytotechnologist from the list.
    target = made["PT-0950"]
    page.get_by_label(f"Reviewer of {target.original_filename}").select_option(str(cytotech.pk))
    page.locator(".toast.ok").wait_for()
    assert Slide.objects.get(pk=target.pk).assigned_reviewer == cytotech

    # Keyboard: j moves down the list, Enter opens the focused slide.
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/slides/{made['PT-1041'].pk}/")
