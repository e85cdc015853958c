"""Evaluations: admins only, ready exports only, failures recorded with their reason and
requested again; a stuck one may be requested again after EVALUATION_STALE_S."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from papreview.analysis.models import ModelStage
from papreview.core.exceptions import ApplicationError, PermissionDeniedError
from papreview.datasets.build import dataset_export_build
from papreview.datasets.services import dataset_export_create
from papreview.registry.models import EvaluationStatus, ModelEvaluation
from papreview.registry.services import model_evaluation_request, model_evaluation_run
from tests.factories import ModelVersionFactory, PatientFactory

pytestmark = pytest.mark.django_db


def test_evaluation_rules_failure_and_retry(
    make_slide, pathologist, admin_user, django_capture_on_commit_callbacks
):
    make_slide(PatientFactory.create(), cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    export = dataset_export_create(name="ev", created_by=pathologist, params={"train_only": True})
    mv = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="no-file")
    with pytest.raises(ApplicationError, match="not ready"):
        model_evaluation_request(model_version=mv, export=export, by=admin_user)
    dataset_export_build(export_id=export.pk)
    export.refresh_from_db()
    with pytest.raises(PermissionDeniedError):
        model_evaluation_request(model_version=mv, export=export, by=pathologist)
    with django_capture_on_commit_callbacks() as callbacks:
        evaluation = model_evaluation_request(model_version=mv, export=export, by=admin_user)
        again = model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert again.pk == evaluation.pk and len(callbacks) == 1  # pending: not queued twice
    assert model_evaluation_run(evaluation_id=evaluation.pk) == EvaluationStatus.FAILED
    evaluation.refresh_from_db()
    assert "has no weights file" in evaluation.error
    with django_capture_on_commit_callbacks() as callbacks:
        retried = model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert retried.status == EvaluationStatus.PENDING and len(callbacks) == 1
    # stuck (its worker died): requested again once stale
    ModelEvaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.RUNNING, updated_at=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert len(callbacks) == 1
    assert ModelEvaluation.objects.get(pk=evaluation.pk).status == EvaluationStatus.PENDING


def test_evaluation_warns_when_the_model_was_trained_on_images_of_the_scored_split(
    make_slide, pathologist, admin_user, tmp_path
):
    from django.test import Client

    from papreview.registry.services import model_version_register_checkpoint
    from testkit.checkpoints import write_random_checkpoints

    for p in range(3):
        make_slide(
            PatientFactory.create(identifier=f"LK-{p}"),
            seed=40 + p,
            cells=[(20, 30, 36, 36, "HSIL", "accepted"), (120, 60, 36, 36, "NILM", "accepted")],
        )
    export = dataset_export_create(name="leak", created_by=pathologist)
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    test_slides = [s for s in export.manifest["slides"] if s["split"] == "test"]
    other = [s for s in export.manifest["slides"] if s["split"] != "test"]
    assert test_slides and other
    trained_on = {"train": [test_slides[0]["sha256"]], "val": [other[0]["sha256"]]}
    _, cls_path = write_random_checkpoints(
        tmp_path,
        detector_meta={},
        classifier_meta={"data": {"images_sha256": trained_on}, "metrics": {"val": {}}},
    )
    mv = model_version_register_checkpoint(stage="classifier", path=cls_path)
    assert mv.metrics["images_sha256"] == trained_on  # stored with the version
    evaluation = model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert model_evaluation_run(evaluation_id=evaluation.pk) == EvaluationStatus.DONE
    evaluation.refresh_from_db()
    n_test = export.manifest["counts"]["images"]["test"]
    # the classifier's leak, named; its partner (the committed detector) has no record
    assert (
        f"{mv.name}: This version was trained on 1 of the {n_test} test images (same SHA-256): "
        "its scores here are optimistic."
    ) in evaluation.metrics["warnings"]
    assert evaluation.metrics["pair"]["classifier"] == mv.name
    client = Client()
    client.force_login(pathologist)
    page = client.get(f"/models/?export={export.pk}").content.decode()
    assert f"Warning: {mv.name}: This version was trained on 1 of the" in page
