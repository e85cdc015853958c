"""The REST API end to end through DRF: status codes, JSON errors, and what is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from papreview.cases.models import Interpretation, Patient, Slide, SlideStatus
from papreview.review.models import CellRevision
from tests.conftest import stored_files
from tests.factories import AnalysisRunFactory, CellFactory, PatientFactory, SlideFactory, upload

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    for word in words:
        assert word in body["detail"]


# --- auth -----------------------------------------------------------------------------------------


def test_token_for_good_credentials_and_a_clear_message_otherwise(api, pathologist) -> None:
    url = reverse("api-token")
    ok = api().post(url, {"username": pathologist.username, "password": "secret-pass-123"})
    assert ok.status_code == 200
    token = ok.json()["token"]
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = client.get(reverse("api-me"))
    assert me.json()["roles"] == ["pathologist"]

    bad = api().post(url, {"username": pathologist.username, "password": "wrong"})
    assert_error(bad, 400, "invalid_credentials", "wrong password")
    missing = api().post(url, {"username": "x"})
    assert_error(missing, 400, "invalid", "password")


def test_anonymous_api_request_gets_401_json(api) -> None:
    assert_error(api().get(reverse("slide-list")), 401, "not_authenticated")


def test_session_login_works_for_the_api(client, viewer) -> None:
    client.force_login(viewer)
    assert client.get(reverse("patient-list")).status_code == 200


# --- patients -------------------------------------------------------------------------------------


def test_create_list_and_get_patients(api, cytotech) -> None:
    client = api(cytotech)
    created = client.post(reverse("patient-list"), {"identifier": " P-77 ", "birth_year": 1971})
    assert created.status_code == 201
    body = created.json()
    assert (body["identifier"], body["birth_year"], body["slide_count"]) == ("P-77", 1971, 0)
    assert Patient.objects.get(pk=body["id"]).created_by == cytotech

    listed = client.get(reverse("patient-list"), {"search": "p-7"}).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]
    detail = client.get(reverse("patient-detail", args=[body["id"]]))
    assert detail.json()["identifier"] == "P-77"


def test_duplicate_patient_identifier_is_a_409(api, cytotech) -> None:
    PatientFactory.create(identifier="P-1")
    response = api(cytotech).post(reverse("patient-list"), {"identifier": "P-1"})
    assert_error(response, 409, "duplicate_patient", "P-1", "already exists")
    assert Patient.objects.count() == 1


def test_unknown_patient_and_slide_are_404_json(api, viewer) -> None:
    assert_error(api(viewer).get(reverse("patient-detail", args=[999])), 404, "not_found", "999")
    assert_error(api(viewer).get(reverse("slide-detail", args=[999])), 404, "not_found", "999")


# --- slides ---------------------------------------------------------------------------------------


def test_upload_a_slide(api, pathologist, media_root: Path) -> None:
    patient = PatientFactory.create()
    response = api(pathologist).post(
        reverse("slide-list"),
        {"patient": patient.pk, "file": upload("field.png", seed=11)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "uploaded"
    assert (body["format"], body["kind"], body["width"], body["height"]) == ("png", "field", 64, 48)
    assert body["patient"] == patient.pk and body["patient_identifier"] == patient.identifier
    assert body["interpretation"] is None
    assert body["progress"] in (None, 0)  # no run yet, or a queued one that has not started
    assert Slide.objects.get(pk=body["id"]).uploaded_by == pathologist
    assert len(stored_files(media_root)) == 1


@pytest.mark.parametrize(
    ("case", "status", "code", "words"),
    [
        ("unknown patient", 400, "invalid", ("patient", "No patient with id 4242")),
        ("missing file", 400, "invalid", ("file", "No file was uploaded")),
        ("not an image", 400, "invalid_slide_file", ("not a supported image",)),
        ("empty file", 400, "invalid", ("file", "empty")),
        ("duplicate", 409, "duplicate_slide", ("already uploaded",)),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_message_and_store_nothing(
    api, pathologist, media_root: Path, case: str, status: int, code: str, words: tuple[str, ...]
) -> None:
    patient = PatientFactory.create()
    client = api(pathologist)
    if case == "duplicate":
        first = client.post(
            reverse("slide-list"), {"patient": patient.pk, "file": upload(seed=12)}, "multipart"
        )
        assert first.status_code == 201
    before_files, before_rows = stored_files(media_root), Slide.objects.count()

    data: dict[str, object] = {"patient": patient.pk, "file": upload(seed=12)}
    if case == "unknown patient":
        data["patient"] = 4242
    elif case == "missing file":
        del data["file"]
    elif case == "not an image":
        data["file"] = upload("notes.png", b"plain text, not pixels\n" * 50)
    elif case == "empty file":
        data["file"] = upload("empty.png", b"")
    response = client.post(reverse("slide-list"), data, format="multipart")

    assert_error(response, status, code, *words)
    assert stored_files(media_root) == before_files
    assert Slide.objects.count() == before_rows


def test_slide_list_filters_by_status_and_orders_by_triage_score(api, viewer) -> None:
    low = SlideFactory.create(status=SlideStatus.ANALYSED, triage_score=2.4, triage_class="LSIL")
    high = SlideFactory.create(status=SlideStatus.IN_REVIEW, triage_score=4.9, triage_class="HSIL")
    unscored = SlideFactory.create(status=SlideStatus.ANALYSED, triage_score=None)
    SlideFactory.create(status=SlideStatus.UPLOADED)
    response = api(viewer).get(
        reverse("slide-list"), {"status": "analysed,in_review", "ordering": "-triage_score"}
    )
    assert response.status_code == 200
    ids = [s["id"] for s in response.json()["results"]]
    assert ids == [high.pk, low.pk, unscored.pk]

    bad = api(viewer).get(reverse("slide-list"), {"status": "done"})
    assert_error(bad, 400, "invalid", "Unknown status done")
    bad_order = api(viewer).get(reverse("slide-list"), {"ordering": "name"})
    assert_error(bad_order, 400, "invalid", "ordering")


def test_slide_list_is_paginated(api, viewer) -> None:
    for _ in range(3):
        SlideFactory.create()
    page = api(viewer).get(reverse("slide-list"), {"page_size": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]


def test_slide_detail_shows_progress_of_the_latest_run(api, viewer) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSING)
    AnalysisRunFactory.create(slide=slide, progress=100, status="succeeded")
    latest = AnalysisRunFactory.create(slide=slide, progress=40, status="running")
    body = api(viewer).get(reverse("slide-detail", args=[slide.pk])).json()
    assert (body["status"], body["progress"], body["latest_run"]) == ("analysing", 40, latest.pk)


# --- sign-out and roles ---------------------------------------------------------------------------


def sign_out(client, slide: Slide, category: str):
    return client.post(
        reverse("slide-sign-out", args=[slide.pk]),
        {"bethesda_category": category, "comment": "reviewed"},
    )


def test_pathologist_signs_out_any_category(api, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    response = sign_out(api(pathologist), slide, "HSIL")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "signed_out"
    assert body["interpretation"]["bethesda_category"] == "HSIL"
    assert body["interpretation"]["signed_out_by"] == pathologist.username


def test_reopen_a_signed_out_slide_keeps_its_interpretation(api, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    assert sign_out(api(pathologist), slide, "LSIL").status_code == 200
    reopened = api(pathologist).post(
        reverse("slide-reopen", args=[slide.pk]), {"reason": "second opinion"}
    )
    assert reopened.status_code == 200
    body = reopened.json()
    assert body["status"] == "in_review"
    assert body["interpretation"]["bethesda_category"] == "LSIL"
    again = api(pathologist).post(reverse("slide-reopen", args=[slide.pk]), {"reason": "again"})
    assert_error(again, 409, "illegal_transition", "in review")
    resigned = sign_out(api(pathologist), slide, "HSIL").json()
    assert resigned["interpretation"]["bethesda_category"] == "HSIL"


def test_cytotechnologist_signs_out_nilm_but_not_hsil(api, cytotech) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSED)
    refused = sign_out(api(cytotech), slide, "HSIL")
    assert_error(refused, 403, "sign_out_not_allowed", "only NILM", "pathologist")
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.ANALYSED
    assert not Interpretation.objects.filter(slide=slide).exists()

    ok = sign_out(api(cytotech), slide, "NILM")
    assert ok.status_code == 200 and ok.json()["status"] == "signed_out"


def test_sign_out_of_a_slide_not_yet_analysed_is_an_illegal_transition(api, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.QUEUED)
    response = sign_out(api(pathologist), slide, "NILM")
    assert_error(response, 409, "illegal_transition", "queued")
    assert response.json()["current_status"] == "queued"
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.QUEUED


@pytest.mark.parametrize(
    ("method", "name", "data"),
    [
        ("post", "patient-list", {"identifier": "P-9"}),
        ("post", "slide-list", {}),
        ("post", "slide-sign-out", {"bethesda_category": "NILM"}),
        ("post", "slide-cells", {"x": 1, "y": 1, "width": 5, "height": 5, "current_class": "NILM"}),
        ("patch", "cell-detail", {"version": 1, "current_class": "NILM"}),
    ],
)
def test_viewer_cannot_write(api, viewer, method: str, name: str, data: dict[str, object]) -> None:
    cell = CellFactory.create()
    args = {"slide-sign-out": [cell.slide_id], "slide-cells": [cell.slide_id]}.get(name, [])
    if name == "cell-detail":
        args = [cell.pk]
    response = getattr(api(viewer), method)(reverse(name, args=args), data)
    assert_error(response, 403, "read_only_role", "viewer")
    assert Patient.objects.count() == 1 and CellRevision.objects.count() == 0
    assert Slide.objects.get(pk=cell.slide_id).status == SlideStatus.ANALYSED


def test_user_without_a_role_cannot_write(api, django_user_model) -> None:
    nobody = django_user_model.objects.create_user("nobody", password="x")
    response = api(nobody).post(reverse("patient-list"), {"identifier": "P-5"})
    assert response.status_code == 403


# --- cells ----------------------------------------------------------------------------------------


def test_list_and_add_cells(api, cytotech) -> None:
    cell = CellFactory.create(detection_score=0.3)
    CellFactory.create(slide=cell.slide, run=cell.run, detection_score=0.9, current_class="NILM")
    client = api(cytotech)
    url = reverse("slide-cells", args=[cell.slide_id])
    listed = client.get(url, {"ordering": "-detection_score"}).json()
    assert [c["detection_score"] for c in listed["results"]] == [0.9, 0.3]
    only_hsil = client.get(url, {"current_class": "HSIL"}).json()
    assert only_hsil["count"] == 1

    added = client.post(url, {"x": 5, "y": 6, "width": 20, "height": 30, "current_class": "ASC-US"})
    assert added.status_code == 201, added.content
    assert added.json()["review_status"] == "added" and added.json()["run"] is None
    outside = client.post(
        url, {"x": 1990, "y": 6, "width": 20, "height": 30, "current_class": "ASC-US"}
    )
    assert_error(outside, 400, "invalid", "outside the slide")


def test_patch_cell_and_stale_version_gets_409_with_the_current_cell(api, pathologist, cytotech):
    cell = CellFactory.create()
    url = reverse("cell-detail", args=[cell.pk])
    first = api(cytotech).patch(url, {"version": 1, "current_class": "LSIL"})
    assert first.status_code == 200, first.content
    assert (first.json()["version"], first.json()["review_status"]) == (2, "relabelled")

    stale = api(pathologist).patch(url, {"version": 1, "current_class": "SCC"})
    assert_error(stale, 409, "stale_version", "changed by someone else")
    current = stale.json()["current"]
    assert (current["id"], current["version"], current["current_class"]) == (cell.pk, 2, "LSIL")
    assert CellRevision.objects.filter(cell=cell).count() == 1

    retry = api(pathologist).patch(url, {"version": 2, "current_class": "SCC"})
    assert retry.status_code == 200 and retry.json()["version"] == 3
    revisions = api(pathologist).get(reverse("cell-revisions", args=[cell.pk])).json()
    assert [r["changed_by"] for r in revisions["results"]] == [
        cytotech.username,
        pathologist.username,
    ]
    assert revisions["results"][1]["before"]["current_class"] == "LSIL"


def test_patch_without_version_is_refused(api, pathologist) -> None:
    cell = CellFactory.create()
    response = api(pathologist).patch(
        reverse("cell-detail", args=[cell.pk]), {"current_class": "NILM"}
    )
    assert_error(response, 400, "invalid", "version")


def test_editing_a_signed_out_slide_is_refused(api, pathologist) -> None:
    cell = CellFactory.create(slide__status=SlideStatus.SIGNED_OUT)
    response = api(pathologist).patch(
        reverse("cell-detail", args=[cell.pk]), {"version": 1, "current_class": "NILM"}
    )
    assert_error(response, 409, "slide_not_reviewable", "Reopen")


def test_an_unexpected_error_is_json_500_and_logged(api, viewer, monkeypatch, caplog) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("papreview.cases.apis.patient_list", broken)
    response = api(viewer).get(reverse("patient-list"))
    assert_error(response, 500, "server_error", "logged")
    assert "disk on fire" not in response.json()["detail"]
    assert any("disk on fire" in (r.exc_text or "") for r in caplog.records)


def test_token_endpoint_is_throttled(api, settings) -> None:
    from django.core.cache import cache

    cache.clear()
    responses = [
        api().post(reverse("api-token"), {"username": "x", "password": "y"}) for _ in range(31)
    ]
    assert responses[0].status_code == 400
    assert_error(responses[-1], 429, "throttled", "throttled")
    cache.clear()
