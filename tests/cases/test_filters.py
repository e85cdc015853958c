"""One slide filter (django-filter) for the API's slide list and the queue page."""

from __future__ import annotations

import pytest

from papreview.cases.models import SlideStatus
from tests.factories import PatientFactory, SlideFactory

pytestmark = pytest.mark.django_db


def test_the_api_and_the_queue_page_filter_alike(api, client, pathologist) -> None:
    mine = SlideFactory.create(
        status=SlideStatus.REFERRED,
        assigned_reviewer=pathologist,
        triage_class="HSIL",
        patient=PatientFactory.create(identifier="CX-77"),
    )
    signed = SlideFactory.create(status=SlideStatus.SIGNED_OUT, triage_class="LSIL")
    other = SlideFactory.create(status=SlideStatus.ANALYSED, triage_class="LSIL")
    client.force_login(pathologist)
    cases = {
        "": {mine.pk, signed.pk, other.pk},  # API: everything; the page: not signed out
        "status=open": {mine.pk, other.pk},
        "status=referred,signed_out": {mine.pk, signed.pk},
        "q=cx-7": {mine.pk},
        "triage_class=LSIL&status=all": {signed.pk, other.pk},
        "mine=true&status=all": {mine.pk},
    }
    for query, expected in cases.items():
        body = api(pathologist).get(f"/api/slides/?{query}").json()
        assert {row["id"] for row in body["results"]} == expected, query
        page = client.get(f"/?{query.replace('mine=true', 'mine=on')}").content.decode()
        shown = {pk for pk in (mine.pk, signed.pk, other.pk) if f'data-slide="{pk}"' in page}
        assert shown == (expected - {signed.pk} if not query else expected), query
    bad = api(pathologist).get("/api/slides/?status=referred,bogus")
    assert bad.status_code == 400 and "Unknown status bogus" in bad.json()["detail"]
    assert "status" in bad.json()["fields"]
    page = client.get("/?status=bogus")
    assert page.status_code == 200 and "Select a valid choice" not in page.content.decode()
    assert "Unknown status bogus" in page.content.decode()
