"""Admin: exports are read-only; a checkpoint is registered from an upload (the admin action on
an export leads there with the export chosen); QC share and drawing."""

from __future__ import annotations

import hashlib

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from inference.checkpoints import save_checkpoint
from inference.classifier import ClassifierConfig, build_classifier
from inference.types import BETHESDA_CLASSES
from papreview.analysis.models import ModelVersion
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import DatasetExport, QCReview
from papreview.datasets.services import dataset_export_create
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_register_a_checkpoint_from_the_admin(make_slide, pathologist, admin_client, tmp_path):
    make_slide(PatientFactory.create(), cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    # One patient: a train-only export (a split needs three).
    export = dataset_export_create(name="adm", created_by=pathologist, params={"train_only": True})
    dataset_export_build(export_id=export.pk)
    # the action on the export list leads to the registration form, export preselected
    response = admin_client.post(
        "/admin/datasets/datasetexport/",
        {"action": "register_checkpoint", "_selected_action": [export.pk]},
    )
    assert response.status_code == 302
    assert response["Location"].endswith(f"/register-checkpoint/?export={export.pk}")
    form = admin_client.get(response["Location"])
    assert form.status_code == 200 and b"Register a model checkpoint" in form.content

    torch.manual_seed(0)
    config = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    path = tmp_path / "classifier.pt"
    version = save_checkpoint(
        path,
        stage="classifier",
        model=build_classifier(config),
        meta={"config": config.to_dict(), "classes": list(BETHESDA_CLASSES),
              "metrics": {"val": {"accuracy": 0.5}}},
    )  # fmt: skip
    data = path.read_bytes()
    bad = admin_client.post(
        "/admin/datasets/datasetexport/register-checkpoint/",
        {"checkpoint": SimpleUploadedFile("x.pt", data), "stage": "detector"},
    )
    assert bad.status_code == 200 and b"expected a detector checkpoint" in bad.content
    ok = admin_client.post(
        "/admin/datasets/datasetexport/register-checkpoint/",
        {
            "checkpoint": SimpleUploadedFile("classifier.pt", data),
            "stage": "classifier",
            "training_export": export.pk,
            "activate": "on",
        },
    )
    assert ok.status_code == 302
    mv = ModelVersion.objects.get(name=version)
    assert mv.sha256 == hashlib.sha256(data).hexdigest()
    assert mv.training.export == export and mv.is_active
    assert mv.metrics == {"val": {"accuracy": 0.5}}


def test_exports_are_read_only_in_the_admin(make_slide, pathologist, admin_client):
    make_slide(PatientFactory.create(), cells=[])
    export = dataset_export_create(name="ro", created_by=pathologist, params={"train_only": True})
    dataset_export_build(export_id=export.pk)
    assert admin_client.get("/admin/datasets/datasetexport/add/").status_code == 403
    page = admin_client.get(f"/admin/datasets/datasetexport/{export.pk}/change/")
    assert page.status_code == 200
    before = DatasetExport.objects.get(pk=export.pk)
    admin_client.post(f"/admin/datasets/datasetexport/{export.pk}/change/", {"name": "changed"})
    after = DatasetExport.objects.get(pk=export.pk)
    assert (after.name, after.sha256, after.manifest) == (
        before.name,
        before.sha256,
        before.manifest,
    )


def test_qc_admin_draws_slides(make_slide, admin_client):
    make_slide(PatientFactory.create(), cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    admin_client.post("/admin/datasets/qcsettings/add/", {"share": "1.0"})
    response = admin_client.post(
        "/admin/datasets/qcreview/", {"action": "draw_now", "_selected_action": ["0"]}
    )
    assert response.status_code in (200, 302)
    assert QCReview.objects.count() == 1
