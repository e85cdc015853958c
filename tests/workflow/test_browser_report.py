"""The printable Bethesda report in real Chromium: printed to an A4 PDF whose text is read back."""

from __future__ import annotations

import pytest
from pypdf import PdfReader

from papreview.workflow.models import InterpretationDraft
from papreview.workflow.services import slide_sign_out
from testkit.browser import ARTIFACTS, log_in, screenshot
from tests.factories import PatientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPORT = {
    "transformation_zone": "present",
    "obscuring_factors": ["blood"],
    "organisms": ["candida"],
    "non_neoplastic": ["reactive_inflammation"],
    "glandular": "agc_endocervical",
    "hpv": "positive_16_18",
    "recommendation": "Colposcopy with endocervical sampling.",
}


def _pdf_text(path) -> tuple[int, str]:
    reader = PdfReader(path)
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return len(reader.pages), " ".join(text.split())  # one space between words, whatever wraps


def test_printed_report(live_server, page, pathologist, stored_slide) -> None:
    patient = PatientFactory.create(identifier="CX-2024-00917", birth_year=1968)
    slide = stored_slide(cells=0, seed=5, patient=patient)
    slide_sign_out(
        slide=slide,
        by=pathologist,
        bethesda_category="HSIL",
        specimen_adequacy="satisfactory",
        specimen_type="liquid_based",
        report=REPORT,
        comment="Findings discussed with the clinician by phone.",
    )

    log_in(page, live_server.url, pathologist.username)
    page.goto(f"{live_server.url}/slides/{slide.pk}/report/")
    assert page.get_by_role("button", name="Print").is_visible()
    assert page.locator(".prelim-banner").count() == 0
    screenshot(page, "report-page.png")

    ARTIFACTS.mkdir(exist_ok=True)
    pdf = ARTIFACTS / "report.pdf"
    page.pdf(path=str(pdf), format="A4", print_background=True)
    pages, text = _pdf_text(pdf)
    assert pages == 1, text
    for expected in (
        "Cervical cytology report",
        "CX-2024-00917",
        "1968",
        slide.original_filename,
        "Liquid-based preparation",
        "Satisfactory for evaluation; endocervical/transformation zone component present",
        "Quality indicators: Partially obscuring blood",
        "Epithelial cell abnormality: see interpretation",
        "High-grade squamous intraepithelial lesion (HSIL)",
        "Atypical endocervical cells, not otherwise specified",
        "Fungal organisms morphologically consistent with Candida spp.",
        "Reactive cellular changes associated with inflammation",
        "HPV 16 and HPV 18 positive",
        "Colposcopy with endocervical sampling.",
        "Findings discussed with the clinician by phone.",
        f"Electronically signed out by {pathologist.username}",
        "assistive only",
    ):
        assert expected in text, f"{expected!r} not in the printed report: {text}"
    # Print shows the report only: no navigation, no buttons.
    for absent in ("Review queue", "Log out", "Print", "Back to the slide", "Preliminary"):
        assert absent not in text, absent
    # How it prints, at the width of an A4 page (96 px per inch), for a person to look at.
    page.emulate_media(media="print")
    page.set_viewport_size({"width": 794, "height": 1123})
    page.screenshot(path=str(ARTIFACTS / "report-print.png"), full_page=True)
    page.emulate_media(media="screen")
    page.set_viewport_size({"width": 1440, "height": 900})

    # Before sign-out the report is the draft's, under a banner that says so.
    draft_slide = stored_slide(cells=0, seed=6, patient=patient)
    InterpretationDraft.objects.create(
        slide=draft_slide, bethesda_category="LSIL", updated_by=pathologist
    )
    page.goto(f"{live_server.url}/slides/{draft_slide.pk}/report/")
    assert page.locator(".prelim-banner").inner_text().lower() == "preliminary — not signed out"
    assert "Low-grade squamous intraepithelial lesion" in page.locator(".result").inner_text()
    page.pdf(path=str(ARTIFACTS / "report-preliminary.pdf"), format="A4")
    assert "PRELIMINARY — NOT SIGNED OUT" in _pdf_text(ARTIFACTS / "report-preliminary.pdf")[1]

    # The review page's interpretation panel links to it.
    page.goto(f"{live_server.url}/slides/{slide.pk}/")
    link = page.locator("#report-link")
    assert link.get_attribute("href") == f"/slides/{slide.pk}/report/"
