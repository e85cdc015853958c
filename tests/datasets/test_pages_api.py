"""Export, registry, dashboard and QC pages and the export API: roles, progress, download."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.test import Client

from papreview.analysis.models import ModelStage
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.qc import qc_sample
from tests.factories import ModelVersionFactory, PatientFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def signed_out(make_slide):
    p1, p2 = PatientFactory.create(), PatientFactory.create()
    make_slide(p1, seed=1, cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    make_slide(p2, seed=2, cells=[(40, 40, 30, 30, "NILM", "rejected")], category="NILM")


def test_export_api_create_progress_and_download(
    signed_out, api, pathologist, viewer, django_capture_on_commit_callbacks
):
    assert api(None).get("/api/exports/").status_code == 401
    assert api(viewer).post("/api/exports/", {"name": "v"}).status_code == 403
    bad = api(pathologist).post("/api/exports/", {"name": "x", "params": {"crop_size": 2}})
    assert bad.status_code == 400 and "crop_size" in bad.json()["fields"]
    empty = api(pathologist).post(
        "/api/exports/", {"name": "x", "filters": {"categories": ["SCC"]}}
    )
    assert empty.status_code == 400 and empty.json()["code"] == "empty_export"
    # Two patients: too few for a split by patient, refused at once with the count.
    few = api(pathologist).post("/api/exports/", {"name": "x", "params": {"crop_size": 32}})
    assert few.status_code == 400 and few.json()["code"] == "too_few_patients"
    assert "matches 2 patient(s)" in few.json()["detail"] and "at least 3" in few.json()["detail"]
    assert (few.json()["patients"], few.json()["needed"]) == (2, 3)
    assert not DatasetExport.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(pathologist).post(
            "/api/exports/",
            {"name": "api export", "params": {"crop_size": 32, "train_only": True}},
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["status"], body["version"], body["slide_count"]) == ("pending", 1, 2)
    assert body["download_url"] is None and len(callbacks) == 1
    export_id = body["id"]
    assert api(pathologist).get(f"/api/exports/{export_id}/download/").status_code == 409

    dataset_export_build(export_id=export_id)
    detail = api(viewer).get(f"/api/exports/{export_id}/").json()
    assert (detail["status"], detail["progress"], detail["slides_done"]) == ("ready", 100, 2)
    download = api(viewer).get(detail["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == detail["sha256"] == download["X-Checksum-SHA256"]
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    listed = api(viewer).get("/api/exports/").json()
    assert [e["id"] for e in listed] == [export_id]


PAGE_PARAMS = {
    "tile_size": 1024,
    "tile_overlap": 128,
    "empty_tile_ratio": 0.1,
    "crop_size": 64,
    "seed": 0,
    "split_train": 0.7,
    "split_val": 0.15,
    "split_test": 0.15,
}


def test_export_page_lists_creates_and_downloads(signed_out, pathologist, viewer):
    page = client_for(pathologist).get("/datasets/")
    assert page.status_code == 200 and b"New export" in page.content
    assert b"New export" not in client_for(viewer).get("/datasets/").content
    # One patient matches: refused on the page, with the count and the way out.
    refused = client_for(pathologist).post(
        "/datasets/", {"name": "page export", "categories": ["HSIL"], **PAGE_PARAMS}
    )
    assert refused.status_code == 200 and not DatasetExport.objects.exists()
    text = refused.content.decode()
    assert "matches 1 patient(s)" in text and "train-only" in text
    response = client_for(pathologist).post(
        "/datasets/",
        {
            "name": "page export",
            **PAGE_PARAMS,
            "include_undecided": "on",
            "train_only": "on",
            "categories": ["HSIL"],
        },
    )
    assert response.status_code == 302
    export = DatasetExport.objects.get(name="page export")
    assert export.filters["categories"] == ["HSIL"] and export.slide_count == 1
    assert export.params["train_only"] is True and export.params["include_undecided"] is True
    assert export.params["crop_size"] == 64
    assert client_for(viewer).post("/datasets/", {"name": "x"}).status_code == 403
    dataset_export_build(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == ExportStatus.READY
    page = client_for(viewer).get("/datasets/")
    assert f"/datasets/{export.pk}/download/".encode() in page.content
    download = client_for(viewer).get(f"/datasets/{export.pk}/download/")
    assert download.status_code == 200
    content = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    assert hashlib.sha256(content).hexdigest() == export.sha256
    assert client_for(viewer).get("/datasets/999/download/").status_code == 404


def test_models_page_activation_is_for_admins_only(pathologist, admin_user, viewer):
    old = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-old", is_active=True)
    new = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-new")
    page = client_for(pathologist).get("/models/")
    assert page.status_code == 200 and b"c-new" in page.content
    assert b"/activate/" not in page.content  # no buttons for non-admins
    assert client_for(pathologist).post(f"/models/{new.pk}/activate/").status_code == 403
    assert client_for(viewer).post(f"/models/{new.pk}/activate/").status_code == 403
    assert api_status(viewer, f"/api/model-versions/{new.pk}/activate/") == 403
    new.refresh_from_db()
    assert not new.is_active
    admin_page = client_for(admin_user).get("/models/")
    assert f"/models/{new.pk}/activate/".encode() in admin_page.content
    response = client_for(admin_user).post(f"/models/{new.pk}/activate/", {"next": "/models/"})
    assert response.status_code == 302
    new.refresh_from_db()
    old.refresh_from_db()
    assert new.is_active and not old.is_active


def api_status(user, url: str) -> int:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client.post(url).status_code


def test_dashboard_page_and_qc_form(signed_out, pathologist, admin_user, cytotech):
    page = client_for(pathologist).get("/models/dashboard/")
    assert page.status_code == 200
    assert b'id="dashboard-data"' in page.content and b"Reviewer vs model" in page.content
    assert client_for(pathologist).post("/models/dashboard/", {"share": 0.5}).status_code == 403
    assert client_for(admin_user).post("/models/dashboard/", {"share": 1}).status_code == 302
    admin = client_for(admin_user)
    assert admin.post("/models/dashboard/", {"action": "sample"}).status_code == 302
    reviews = list(qc_sample(share=1.0))  # nothing left: both were drawn by the admin's button
    assert reviews == []
    from papreview.datasets.models import QCReview

    review = QCReview.objects.order_by("pk").first()
    assert review is not None
    url = f"/qc/{review.pk}/"
    assert client_for(pathologist).get(url).status_code == 403  # they signed it out
    form = client_for(cytotech).get(url)
    assert form.status_code == 200 and b"Submit QC review" in form.content
    cells = list(review.slide.cells.all())
    incomplete = client_for(cytotech).post(url, {})
    assert incomplete.status_code == 200 and b"Label every cell" in incomplete.content
    done = client_for(cytotech).post(url, {f"cell-{c.pk}": "HSIL" for c in cells})
    assert done.status_code == 302
    review.refresh_from_db()
    assert review.status == "done" and review.reviewer == cytotech


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"filters": {"signed_out_from": "yesterday"}}, "signed_out_from"),
        ({"filters": {"categories": "HSIL"}}, "categories"),
        ({"filters": {"categories": [1, 2]}}, "categories"),
        ({"filters": {"slide_ids": ["a"]}}, "slide_ids"),
        ({"filters": {"colour": "red"}}, "filters"),
        ({"params": {"tile_size": "big"}}, "tile_size"),
        ({"params": {"tile_size": True}}, "tile_size"),
        ({"params": {"split": "70/15/15"}}, "split"),
        ({"params": {"split": [0.7, "x", 0.1]}}, "split"),
        ({"params": {"empty_tile_ratio": 5}}, "empty_tile_ratio"),
        ({"params": {"crop_size": 10**30}}, "crop_size"),
        ({"params": {"gpu": 1}}, "params"),
        ({"params": {"include_undecided": "maybe"}}, "include_undecided"),
        ({"filters": {"patients": ["PT\x00-1"]}}, "patients"),  # a NUL byte: 400, not 500
    ],
)
def test_export_api_answers_bad_input_with_400(signed_out, api, pathologist, payload, field):
    response = api(pathologist).post("/api/exports/", {"name": "bad", **payload})
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not DatasetExport.objects.exists()


def test_export_form_shows_every_parameter_with_its_default_and_limits(pathologist):
    from papreview.datasets.params import PARAM_LIMITS, ExportParams

    page = client_for(pathologist).get("/datasets/").content.decode()
    for name in (
        "split_train", "split_val", "split_test", "seed", "tile_size", "tile_overlap",
        "empty_tile_ratio", "crop_size", "include_undecided", "train_only",
    ):  # fmt: skip
        assert f'name="{name}"' in page, name
    assert f'name="tile_size" value="{ExportParams.tile_size}"' in page
    assert f'max="{PARAM_LIMITS["crop_size"][1]}"' in page
    assert f"Default {ExportParams.crop_size}." in page
    assert f"Default {ExportParams.split[1]}." in page
    # A value past a limit: refused on its field, nothing created.
    bad = client_for(pathologist).post(
        "/datasets/", {"name": "x", **PAGE_PARAMS, "tile_size": 1024, "tile_overlap": 600}
    )
    assert bad.status_code == 200 and "under half a tile" in bad.content.decode()
    assert not DatasetExport.objects.exists()
