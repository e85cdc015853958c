"""Retrain what runs (`papreview.registry.retrain`): on a tiny export, both stages fine-tuned from
the active versions (or from scratch), the classifier calibrated and the fusion fitted (or
skipped, with its reason) on the validation split, both registered inactive, evaluated beside
the active versions; a train-only export fails with its reason; the admins' button and API
queue a job on the `training` queue."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client

from inference.checkpoints import load_checkpoint
from papreview.analysis.adapter import model_version_local_path
from papreview.analysis.models import ModelVersion
from papreview.datasets.build import dataset_export_build
from papreview.datasets.services import dataset_export_create
from papreview.registry.models import EvaluationStatus, ModelEvaluation, RetrainJob, RetrainStatus
from papreview.registry.retrain import retrain_job_run
from papreview.registry.services import model_version_register_checkpoint

pytestmark = pytest.mark.django_db

TINY = {
    "detector": ["--epochs", "1", "--crops-per-image", "1", "--crop-size", "64",
                 "--batch-size", "4", "--threads", "1"],
    "classifier": ["--epochs", "1", "--samples-per-epoch", "16", "--batch-size", "16",
                   "--threads", "1"],
}  # fmt: skip


@pytest.fixture(autouse=True)
def tiny_training(settings):
    settings.RETRAIN_TRAINING_ARGS = TINY


@pytest.fixture
def active(tmp_path) -> dict[str, ModelVersion]:
    """Small random-weight versions of both stages, registered and active."""
    from testkit.checkpoints import write_random_checkpoints

    det, cls = write_random_checkpoints(
        tmp_path / "active",
        detector_meta={"thresholds": {"cell": 0.3, "abnormal": 0.1}},
        classifier_meta={"temperature": 1.0, "abnormal_threshold": 0.5, "tta_views": 2},
    )
    return {
        "detector": model_version_register_checkpoint(stage="detector", path=det, activate=True),
        "classifier": model_version_register_checkpoint(
            stage="classifier", path=cls, activate=True
        ),
    }


def _export(make_patients, pathologist, *, patients: int, **params):
    make_patients("RJ", patients=patients)
    export = dataset_export_create(
        name="rj", created_by=pathologist, params={"crop_size": 48, **params}
    )
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    return export


@pytest.fixture
def tiny_export(make_patients, pathologist):
    return _export(make_patients, pathologist, patients=3)


def test_retrain_fine_tunes_the_active_versions_registers_evaluates_and_compares(
    tiny_export, active, admin_user
):
    job = RetrainJob.objects.create(export=tiny_export, requested_by=admin_user, epochs=1)
    assert retrain_job_run(job_id=job.pk) == RetrainStatus.DONE, job.error
    job.refresh_from_db()
    assert job.status == RetrainStatus.DONE and job.progress == 100 and job.error == ""
    assert job.base_detector == active["detector"]
    assert job.base_classifier == active["classifier"]
    for stage in ("detector", "classifier"):
        new: ModelVersion = getattr(job, f"new_{stage}")
        assert new is not None
        assert new.stage == stage and not new.is_active
        assert new.pk != active[stage].pk and new.training.export == tiny_export
        meta = load_checkpoint(model_version_local_path(new), stage=stage).meta
        assert meta["training"]["init_from"]["version"] == active[stage].name
        assert meta["data"]["export"]["id"] == tiny_export.pk
        active[stage].refresh_from_db()
        assert active[stage].is_active  # nothing was activated
        for mv in (new, active[stage]):
            ev = ModelEvaluation.objects.get(model_version=mv, export=tiny_export, split="test")
            assert ev.status == EvaluationStatus.DONE, ev.error
    # the new pipeline (both new versions) against the active one, each evaluated once; the
    # detector's row holds the figures of the same pipeline
    assert job.new_detector is not None and job.new_classifier is not None
    compared = job.comparison["stages"]["pipeline"]
    assert compared["new"]["name"] == f"{job.new_detector.name} + {job.new_classifier.name}"
    assert compared["active"]["id"] == active["classifier"].pk
    assert compared["figures"] and all("new" in f and "active" in f for f in compared["figures"])
    new_cls = ModelEvaluation.objects.get(model_version=job.new_classifier, split="test")
    new_det = ModelEvaluation.objects.get(model_version=job.new_detector, split="test")
    assert new_cls.partner == job.new_detector and new_det.partner == job.new_classifier
    assert new_det.metrics == new_cls.metrics
    assert job.new_classifier is not None
    cls_meta = load_checkpoint(
        model_version_local_path(job.new_classifier), stage="classifier"
    ).meta
    calibration = cls_meta["calibration"]
    n_val = sum(tiny_export.manifest["counts"]["per_split"]["val"].values())
    assert calibration["split"] == "val" and calibration["cells"] == n_val
    assert calibration["temperature"] == cls_meta["temperature"] > 0
    # the fusion fitted on the validation split through the new pipeline, or why not; the
    # active classifier's test-time views kept
    assert cls_meta["tta_views"] == 2
    assert ("fusion" in cls_meta) != bool(cls_meta.get("fusion_skipped"))
    fusion = job.comparison["fusion"]
    assert fusion["split"] == "val" and fusion["tta_views"] == 2
    assert fusion["used"] == ("fusion" in cls_meta)
    assert fusion["skipped"] == cls_meta.get("fusion_skipped")
    if fusion["used"]:
        assert job.new_detector is not None
        assert cls_meta["fusion"]["detector_version"] == job.new_detector.name
    # the Models page shows the job and its comparison table
    client = Client()
    client.force_login(admin_user)
    page = client.get("/models/").content.decode()
    assert f'data-job="{job.pk}"' in page and page.count('class="data retrain-compare"') == 1


def test_retrain_from_scratch_by_command(tiny_export, active):
    out = io.StringIO()
    call_command(
        "retrain", "--export", str(tiny_export.pk), "--from-scratch", "--epochs", "1", stdout=out
    )
    result = json.loads(out.getvalue())
    job = RetrainJob.objects.get(pk=result["job"])
    assert job.status == RetrainStatus.DONE and job.from_scratch
    assert job.new_detector is not None and job.new_classifier is not None
    meta = load_checkpoint(model_version_local_path(job.new_detector), stage="detector").meta
    assert meta["training"]["init_from"] is None
    assert meta["training"]["architecture_of"]["version"] == active["detector"].name
    assert not job.new_detector.is_active and not job.new_classifier.is_active


def test_a_train_only_export_fails_with_its_reason(make_patients, pathologist, active):
    export = _export(make_patients, pathologist, patients=1, train_only=True)
    job = RetrainJob.objects.create(export=export)
    assert retrain_job_run(job_id=job.pk) == RetrainStatus.FAILED
    job.refresh_from_db()
    assert job.status == RetrainStatus.FAILED
    assert "has no validation split: make it with at least 3 patients" in job.error
    assert job.new_detector is None and job.new_classifier is None
    with pytest.raises(CommandError, match="no validation split"):
        call_command("retrain", "--export", str(export.pk), stdout=io.StringIO())


def test_a_database_error_is_retried_by_the_task_then_fails_the_job(
    make_patients, pathologist, active, monkeypatch
):
    export = _export(make_patients, pathologist, patients=1, train_only=True)
    job = RetrainJob.objects.create(export=export)

    def database_gone(export: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("papreview.registry.retrain._check_splits", database_gone)
    with pytest.raises(OperationalError):  # before the last try: the task's policy retries
        retrain_job_run(job_id=job.pk, retry_transient=True)
    assert RetrainJob.objects.get(pk=job.pk).status == RetrainStatus.RUNNING
    assert retrain_job_run(job_id=job.pk) == RetrainStatus.FAILED  # the last try
    assert "server closed the connection" in RetrainJob.objects.get(pk=job.pk).error


def test_the_button_and_the_api_queue_a_job_for_admins_only(
    tiny_export, admin_user, pathologist, api, django_capture_on_commit_callbacks, monkeypatch
):
    from papreview.registry import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.retrain_job_run_task, "delay", queued.append)
    assert (
        api(pathologist).post("/api/retrain-jobs/", {"export": tiny_export.pk}).status_code == 403
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api(admin_user).post(
            "/api/retrain-jobs/", {"export": tiny_export.pk, "from_scratch": True, "epochs": 2}
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["from_scratch"] is True and body["epochs"] == 2
    assert queued == [body["id"]]
    # One retraining at a time per export: a second request waits for the first.
    again = api(admin_user).post("/api/retrain-jobs/", {"export": tiny_export.pk})
    assert again.status_code == 409 and f"Retraining #{body['id']}" in again.json()["detail"]
    assert queued == [body["id"]] and RetrainJob.objects.count() == 1
    RetrainJob.objects.filter(pk=body["id"]).update(status=RetrainStatus.FAILED)

    client = Client()
    client.force_login(pathologist)
    assert client.post("/models/retrain/", {"export": tiny_export.pk}).status_code == 403
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/models/retrain/", {"export": tiny_export.pk, "next": "/models/"})
    assert response.status_code == 302
    job = RetrainJob.objects.latest("created_at")
    assert job.requested_by == admin_user and not job.from_scratch and job.status == "queued"
    assert queued[-1] == job.pk
    listed = api(pathologist).get(f"/api/retrain-jobs/?export={tiny_export.pk}").json()
    assert {j["id"] for j in listed} == {body["id"], job.pk}
    page = client.get("/models/").content.decode()
    assert 'action="/models/retrain/"' in page and 'http-equiv="refresh"' in page


def test_the_retrain_task_goes_to_the_training_queue():
    from papreview.celery import celery_app

    route = celery_app.amqp.router.route({}, "papreview.registry.tasks.retrain_job_run", (), {})
    assert route["queue"].name == "training"


def test_retrain_with_the_base_data_merges_it_into_training_and_the_fusion(
    tiny_export, active, admin_user, settings, tmp_path, monkeypatch
):
    """RETRAIN_MERGE_BASE: both stages train on the export plus the base data (CRIC-shaped,
    here synthetic), and the fusion is fitted on both validation parts: a lab whose export holds
    only NILM sign-outs still gets a calibrated pipeline."""
    import inference.calibration as calibration
    from tests.inference.test_inf_leaks import png, write_cric

    base = write_cric(tmp_path / "base", [png(200 + i) for i in range(8)])
    monkeypatch.setenv("PAPREVIEW_DATA_DIR", str(base))
    settings.RETRAIN_MERGE_BASE = True
    fitted_on: list[list[str]] = []
    real_fit = calibration.calibrate_pipeline_on

    def spy(pipeline, dataset, names, *args, **kwargs):
        fitted_on.append(list(names))
        return real_fit(pipeline, dataset, names, *args, **kwargs)

    monkeypatch.setattr(calibration, "calibrate_pipeline_on", spy)
    job = RetrainJob.objects.create(export=tiny_export, requested_by=admin_user, epochs=1)
    assert retrain_job_run(job_id=job.pk) == RetrainStatus.DONE, job.error
    job.refresh_from_db()
    for stage in ("detector", "classifier"):
        path = model_version_local_path(getattr(job, f"new_{stage}"))
        merged = load_checkpoint(path, stage=stage).meta["data"]["merged_with"]
        assert merged["split"]["train"] and merged["split"]["val"]
    base_val = set(calibration.base_validation_images().images)
    assert base_val == set(merged["split"]["val"])
    [names] = fitted_on
    export_val = {n for n in names if n not in base_val}
    assert base_val <= set(names) and export_val  # both validation parts
    assert tiny_export.manifest["counts"]["images"]["val"] == len(export_val)
