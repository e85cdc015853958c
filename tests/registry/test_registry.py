"""Evaluations: admins only, ready exports only, failures recorded with their reason and
requested again; a stuck one may be requested again after EVALUATION_STALE_S."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
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


def test_the_compare_page_figures_are_those_of_inference_evaluate(
    make_patients, pathologist, admin_user, tmp_path, capsys
):
    """One evaluation path: the registry's evaluation of a version (as the pipeline it makes with
    its partner) equals `python -m inference evaluate --data EXPORT --split test` with the same
    checkpoints, test-time views and fusion included, and the compare page shows those figures."""
    import json

    from django.test import Client

    from inference.__main__ import main as inference_main
    from inference.checkpoints import load_checkpoint
    from papreview.registry.services import model_version_register_checkpoint
    from testkit.checkpoints import write_random_checkpoints

    make_patients("EQ", patients=4)
    export = dataset_export_create(name="same", created_by=pathologist)
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    fusion = {
        "w_classifier": 1.0,
        "w_detector": 0.5,
        "bias": 0.0,
        "detector_version": "det-eq",
        "abnormal_threshold": 0.3,
    }
    det_path, cls_path = write_random_checkpoints(
        tmp_path,
        detector_meta={"version": "det-eq", "thresholds": {"cell": 0.0, "abnormal": 0.0}},
        classifier_meta={"version": "cls-eq", "tta_views": 2, "fusion": fusion},
    )
    det = model_version_register_checkpoint(stage="detector", path=det_path)
    cls = model_version_register_checkpoint(stage="classifier", path=cls_path)
    evaluation = model_evaluation_request(
        model_version=cls, export=export, by=admin_user, partner=det
    )
    assert model_evaluation_run(evaluation_id=evaluation.pk) == EvaluationStatus.DONE
    evaluation.refresh_from_db()
    stored = evaluation.metrics
    assert stored["operating_point"]["fusion"] is True and stored["operating_point"]["tta_views"]
    assert stored["reviewer"]["fields"] == stored["images_evaluated"] > 0
    assert stored["metrics"]["predicted_cells"] > 0  # something to compare

    zip_path = tmp_path / "same.zip"
    with export.file.open("rb") as src:
        zip_path.write_bytes(src.read())
    out = tmp_path / "cli.json"
    argv = ["evaluate", "--data", str(zip_path), "--split", "test", "--device", "cpu"]
    argv += ["--bf16", settings.INFERENCE_CPU_BF16]  # as the workers run
    argv += ["--detector", str(det_path), "--classifier", str(cls_path), "--out", str(out)]
    assert inference_main(argv) == 0, capsys.readouterr().err
    cli = json.loads(out.read_text())
    for key in ("metrics", "reviewer", "operating_point", "model_versions", "images_evaluated"):
        assert cli[key] == stored[key], key
    assert out.with_name("cli_reviewer.png").is_file()
    assert load_checkpoint(cls_path, stage="classifier").version == stored["pair"]["classifier"]

    client = Client()
    client.force_login(pathologist)
    page = client.get(f"/models/?export={export.pk}").content.decode()
    recall = stored["metrics"]["abnormal_recall"]
    assert f"abnormal-cell recall {recall:.3f}" in page
    assert f"as the pipeline {det.name} + {cls.name}" in page
