"""The analysis services, adapter and task in this process (no worker): the real pipeline with
small random weights, the real PostgreSQL (advisory locks) and Redis (publishing)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from inference.errors import CheckpointError
from inference.interface import CellAnalyser
from inference.slides import SlideInfo
from inference.types import BETHESDA_CLASSES, Box, CellPrediction, SlideKind, SlideResult
from papreview.analysis import adapter
from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus
from papreview.analysis.selectors import (
    SetAside,
    analysis_run_set_aside,
    analysis_run_set_aside_boxes,
)
from papreview.analysis.services import (
    RunOutcome,
    analysis_request,
    analysis_run,
    analysis_sweep,
    model_version_register,
    model_versions_for_analysis,
)
from papreview.analysis.services.run import _LOCK_NAMESPACE
from papreview.cases.models import Slide, SlideStatus
from papreview.celery import celery_app
from papreview.review.models import Cell
from papreview.uploads.services import slide_upload
from testkit.images import field_bytes
from testkit.workers import wait_for
from tests.factories import PatientFactory, SlideFactory, upload

pytestmark = pytest.mark.django_db


def new_slide(seed: int = 0, size: int = 256) -> Slide:
    return slide_upload(
        patient=PatientFactory.create(),
        file=upload("field.png", field_bytes(size, size, seed=seed)),
    )


def wait_for_lock_released(slide_id: int) -> None:
    """The server ends a closed session, and frees its locks, asynchronously."""

    def released() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND granted",
                [_LOCK_NAMESPACE, slide_id],
            )
            row = cursor.fetchone()
        return row is not None and row[0] == 0

    wait_for(released, timeout=10, what=f"slide {slide_id}'s execution lock to be freed")


# --- adapter ---------------------------------------------------------------------------------


def test_the_pipeline_is_loaded_once_per_process_and_again_for_new_versions(
    tiny_weights: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    from inference.checkpoints import save_checkpoint
    from inference.classifier import ClassifierConfig, build_classifier
    from inference.types import BETHESDA_CLASSES

    detector, classifier = model_versions_for_analysis()
    first = adapter.pipeline_for(detector=detector, classifier=classifier)
    loads = adapter.pipeline_loads()
    assert adapter.pipeline_for(detector=detector, classifier=classifier) is first
    assert adapter.pipeline_loads() == loads
    # The same checkpoint is not registered twice.
    assert model_version_register(stage=ModelStage.CLASSIFIER, path=tiny_weights[1]) == classifier

    # An admin activates another classifier: the next job loads a new pipeline, once.
    torch.manual_seed(1)
    config = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    path = tmp_path / "classifier-2.pt"
    meta = {"config": config.to_dict(), "classes": list(BETHESDA_CLASSES)}
    save_checkpoint(path, stage="classifier", model=build_classifier(config), meta=meta)
    newer = model_version_register(stage=ModelStage.CLASSIFIER, path=path, activate=True)
    assert model_versions_for_analysis() == (detector, newer)
    second = adapter.pipeline_for(detector=detector, classifier=newer)
    assert second is not first and second.versions["classifier"] == newer.name
    assert adapter.pipeline_for(detector=detector, classifier=newer) is second
    assert adapter.pipeline_loads() == loads + 1


def test_default_weights_are_registered_with_their_digest_and_activated(
    tiny_weights: tuple[Path, Path],
) -> None:
    assert not ModelVersion.objects.exists()
    detector, classifier = model_versions_for_analysis()
    assert detector.is_active and classifier.is_active
    assert detector.stage == ModelStage.DETECTOR and detector.name.startswith("detector-")
    assert detector.sha256 == adapter.file_sha256(tiny_weights[0])
    assert default_storage.exists(str(detector.file.name))
    assert classifier.metrics == {"val": {"accuracy": 0.0}}
    assert model_versions_for_analysis() == (detector, classifier)  # no second registration
    assert ModelVersion.objects.count() == 2


def test_a_version_whose_file_was_lost_gets_its_weights_stored_again(
    tiny_weights: tuple[Path, Path],
) -> None:
    first = model_version_register(stage=ModelStage.DETECTOR, path=tiny_weights[0])
    default_storage.delete(str(first.file.name))
    again = model_version_register(stage=ModelStage.DETECTOR, path=tiny_weights[0])
    assert again.pk == first.pk and default_storage.exists(str(again.file.name))
    assert adapter.file_sha256(adapter.model_version_local_path(again)) == again.sha256


def test_a_missing_default_checkpoint_is_a_checkpoint_error(settings: Any, tmp_path: Path) -> None:
    settings.ANALYSIS_DEFAULT_DETECTOR = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="not found"):
        model_versions_for_analysis()


def test_slide_analyse_reads_ahead_through_the_library_interface(
    settings: Any, tmp_path: Path
) -> None:
    """The read-ahead itself is tested in tests/inference/test_inf_pipeline.py; here: the worker
    opens the analyser with ANALYSIS_PREFETCH_BATCHES batches of read-ahead, and a change of that
    setting opens a new one, which finds the same cells."""
    settings.ANALYSIS_PREFETCH_BATCHES = 2
    detector, classifier = model_versions_for_analysis()
    pipeline = adapter.pipeline_for(detector=detector, classifier=classifier)
    assert isinstance(pipeline, CellAnalyser)
    path = tmp_path / "field.png"
    path.write_bytes(field_bytes(3000, 2000, seed=5))  # several detector tiles at 1024 px
    steps: list[tuple[int, int]] = []
    ahead = adapter.slide_analyse(pipeline, path, progress=lambda d, t: steps.append((d, t)))
    settings.ANALYSIS_PREFETCH_BATCHES = 0
    inline = adapter.pipeline_for(detector=detector, classifier=classifier)
    plain = adapter.slide_analyse(inline, path)

    assert inline is not pipeline
    assert getattr(pipeline, "prefetch") == 2 * settings.ANALYSIS_BATCH_SIZE  # noqa: B009
    assert getattr(inline, "prefetch") == 0  # noqa: B009
    assert ahead.timings["tiles"] == plain.timings["tiles"] > 1
    assert [(c.box, c.label) for c in ahead.cells] == [(c.box, c.label) for c in plain.cells]
    assert steps[0] == (0, steps[0][1]) and steps[-1] == (steps[-1][1], steps[-1][1])


def test_cells_are_clipped_to_the_slide_and_skip_reviewed_boxes() -> None:
    slide = SlideFactory.create(width=100, height=80)
    run = AnalysisRun.objects.create(slide=slide)
    probs = {**dict.fromkeys(BETHESDA_CLASSES, 0.0), "NILM": 0.2, "HSIL": 0.7, "SCC": 0.1}
    result = SlideResult(
        info=SlideInfo(format="png", kind=SlideKind.FIELD, width=100, height=80),
        cells=[
            CellPrediction(Box(-10, -5, 30, 30), "HSIL", probs, 0.9),  # clipped at the origin
            CellPrediction(Box(90, 70, 30, 30), "HSIL", probs, 0.5),  # clipped at the far edge
            CellPrediction(Box(40, 40, 20, 20), "HSIL", probs, 0.5),  # on a reviewed cell
        ],
        model_versions={},
        device="cpu",
    )
    cells = adapter.cells_from_result(result, slide=slide, run=run, keep_boxes=[(41, 41, 20, 20)])
    assert [(c.x, c.y, c.width, c.height) for c in cells] == [(0, 0, 20, 25), (90, 70, 10, 10)]
    assert adapter.most_severe(cells) == ("HSIL", 0.7)


def test_triage_weighs_severity_by_confidence() -> None:
    """A confident LSIL ranks the slide above an SCC call the model barely believes."""

    def cell(label: str, confidence: float) -> Cell:
        return Cell(predicted_class=label, probabilities={label: confidence})

    assert adapter.most_severe([cell("SCC", 0.12), cell("LSIL", 0.8)]) == ("LSIL", 0.8)
    assert adapter.most_severe([cell("SCC", 0.5), cell("LSIL", 0.8)]) == ("SCC", 0.5)
    assert adapter.most_severe([cell("NILM", 0.99)]) == ("NILM", 0.99)
    assert adapter.most_severe([]) is None


def test_progress_writes_are_throttled_but_the_first_and_last_always_written() -> None:
    written: list[tuple[int, int]] = []
    callback = adapter.progress_throttle(lambda d, t: written.append((d, t)), interval_s=3600)
    for done in range(11):
        callback(done, 10)
    assert written == [(0, 10), (10, 10)]


# --- services --------------------------------------------------------------------------------


def test_creating_a_slide_queues_one_run_on_commit(django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        slide = new_slide()
    run = AnalysisRun.objects.get(slide=slide)
    assert run.status == RunStatus.QUEUED and run.published_at is None
    assert slide.status == SlideStatus.UPLOADED  # until the broker has the job
    assert len(callbacks) == 1


def test_analysis_run_is_idempotent_and_tags_cells_with_run_and_versions() -> None:
    slide = new_slide(seed=2)

    assert analysis_run(slide_id=slide.pk) == RunOutcome.SUCCEEDED
    slide.refresh_from_db()
    run = AnalysisRun.objects.get(slide=slide)
    assert slide.status == SlideStatus.ANALYSED and run.status == RunStatus.SUCCEEDED
    assert run.detector_version is not None and run.detector_version.is_active
    assert run.classifier_version is not None and run.classifier_version.is_active
    count = Cell.objects.filter(slide=slide, run=run).count()
    assert count > 0

    # A second delivery of the same job: nothing to do, nothing doubled.
    assert analysis_run(slide_id=slide.pk) == RunOutcome.NOTHING_TO_DO
    assert Cell.objects.filter(slide=slide).count() == count
    assert AnalysisRun.objects.get(pk=run.pk).attempts == 1


def test_a_run_records_how_many_candidates_were_set_aside_and_stores_only_cells(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    analyse = adapter.slide_analyse

    def one_set_aside(*args: Any, **kwargs: Any) -> SlideResult:
        result = analyse(*args, **kwargs)  # as a not-a-cell classifier would: its last call
        result.set_aside, result.cells = result.cells[-1:], result.cells[:-1]
        return result

    monkeypatch.setattr(adapter, "slide_analyse", one_set_aside)
    slide = new_slide(seed=2)
    assert analysis_run(slide_id=slide.pk) == RunOutcome.SUCCEEDED
    run = AnalysisRun.objects.get(slide=slide)
    assert run.timings["set_aside"] == 1 and run.timings["tiles"] >= 1
    assert Cell.objects.filter(slide=slide, run=run).exists()
    assert analysis_run_set_aside(slide_id=slide.pk) == 1
    # kept so that a reviewer can see where it was, never as a cell
    (box,) = run.set_aside_boxes
    assert len(box) == 4 and all(isinstance(v, int) for v in box) and box[2] > 0
    assert not Cell.objects.filter(slide=slide, x=box[0], y=box[1]).exists()
    assert analysis_run_set_aside_boxes(slide_id=slide.pk) == SetAside(1, [box])


def test_the_boxes_set_aside_are_kept_up_to_a_bound_and_counted_all(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from papreview.analysis.services import run as run_module

    analyse = adapter.slide_analyse

    def many_set_aside(*args: Any, **kwargs: Any) -> SlideResult:
        result = analyse(*args, **kwargs)
        result.set_aside = [
            CellPrediction(Box(i, 2 * i, 30, 30), "NILM", {}, 0.1, 0) for i in range(5)
        ]
        return result

    monkeypatch.setattr(adapter, "slide_analyse", many_set_aside)
    monkeypatch.setattr(run_module, "SET_ASIDE_BOXES_MAX", 3)
    slide = new_slide(seed=3)
    assert analysis_run(slide_id=slide.pk) == RunOutcome.SUCCEEDED
    found = analysis_run_set_aside_boxes(slide_id=slide.pk)
    assert found.count == 5
    assert found.boxes == [[0, 0, 30, 30], [1, 2, 30, 30], [2, 4, 30, 30]]


def test_the_set_aside_api_answers_the_latest_finished_run(api: Any, viewer: Any) -> None:
    slide = SlideFactory.create()
    url = f"/api/slides/{slide.pk}/set-aside/"
    assert api(None).get(url).status_code == 401
    client = api(viewer)  # reading what the model set aside is a read
    assert client.get(url).json() == {"count": 0, "boxes": []}
    now = timezone.now()
    AnalysisRun.objects.create(
        slide=slide,
        status=RunStatus.SUCCEEDED,
        finished_at=now - timedelta(hours=1),
        timings={"set_aside": 1},
        set_aside_boxes=[[1, 1, 30, 30]],
    )
    AnalysisRun.objects.create(
        slide=slide,
        status=RunStatus.SUCCEEDED,
        finished_at=now,
        timings={"set_aside": 2},
        set_aside_boxes=[[10, 20, 30, 30], [40, 50, 30, 30]],
    )
    AnalysisRun.objects.create(slide=slide, status=RunStatus.RUNNING, timings={"set_aside": 9})
    assert client.get(url).json() == {"count": 2, "boxes": [[10, 20, 30, 30], [40, 50, 30, 30]]}
    assert client.get("/api/slides/999999/set-aside/").status_code == 404


def test_a_live_execution_elsewhere_makes_a_second_delivery_step_aside(settings: Any) -> None:
    settings.ANALYSIS_LOCK_WAIT_S = 0.3
    slide = new_slide(seed=4)
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:  # another worker's session holds the slide's execution lock
        assert other.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, slide.pk)
        ).fetchone() == (True,)
        assert analysis_run(slide_id=slide.pk) == RunOutcome.BUSY
        assert AnalysisRun.objects.get(slide=slide).attempts == 0
    finally:
        other.close()  # the "worker" dies: its lock goes with its connection
    wait_for_lock_released(slide.pk)
    assert analysis_run(slide_id=slide.pk) == RunOutcome.SUCCEEDED


def test_a_delivery_waits_for_the_lock_of_an_execution_that_just_died(settings: Any) -> None:
    settings.ANALYSIS_LOCK_WAIT_S = 10.0
    slide = new_slide(seed=5)
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    other.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, slide.pk))
    dies = threading.Timer(0.5, other.close)  # the worker dies just after the redelivery
    dies.start()
    started = time.monotonic()
    try:
        assert analysis_run(slide_id=slide.pk) == RunOutcome.SUCCEEDED
    finally:
        dies.join()
    assert 0.4 < time.monotonic() - started < 10
    assert AnalysisRun.objects.get(slide=slide).attempts == 1


def test_a_run_started_too_often_is_failed_with_a_reason(settings: Any) -> None:
    slide = new_slide(seed=6)
    run = AnalysisRun.objects.get(slide=slide)
    AnalysisRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, attempts=settings.ANALYSIS_MAX_ATTEMPTS
    )
    assert analysis_run(slide_id=slide.pk) == RunOutcome.FAILED
    slide.refresh_from_db()
    assert slide.status == SlideStatus.FAILED and "never finished" in slide.failure_reason
    assert not Cell.objects.filter(slide=slide).exists()


def test_a_missing_file_fails_the_run_and_the_slide_with_a_reason() -> None:
    slide = new_slide(seed=8)
    default_storage.delete(str(slide.file.name))
    assert analysis_run(slide_id=slide.pk) == RunOutcome.FAILED
    slide.refresh_from_db()
    assert slide.status == SlideStatus.FAILED and "stored file is missing" in slide.failure_reason
    assert AnalysisRun.objects.get(slide=slide).error == slide.failure_reason


def test_a_rerun_cannot_be_queued_twice_nor_for_a_signed_out_slide(api: Any, cytotech: Any) -> None:
    slide = new_slide(seed=9)  # its first run is queued
    response = api(cytotech).post(f"/api/slides/{slide.pk}/analyze/")
    assert response.status_code == 409 and response.json()["code"] == "analysis_in_progress"

    signed = SlideFactory.create(status=SlideStatus.SIGNED_OUT)
    response = api(cytotech).post(f"/api/slides/{signed.pk}/analyze/")
    assert response.status_code == 409 and response.json()["code"] == "illegal_transition"
    assert api(cytotech).post("/api/slides/999999/analyze/").status_code == 404


def test_the_sweeper_resends_a_dead_workers_run_and_fails_it_when_out_of_attempts(
    settings: Any,
) -> None:
    slide = new_slide(seed=10)
    run = AnalysisRun.objects.get(slide=slide)
    old = timezone.now() - timedelta(seconds=settings.ANALYSIS_STALE_AFTER_S + 5)
    AnalysisRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, attempts=1, heartbeat_at=old, published_at=old
    )
    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSING)

    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:  # a live (if slow) execution holds the slide: the sweeper leaves it alone
        other.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, slide.pk))
        report = analysis_sweep()
        assert report.busy == [run.pk] and not report.resent and not report.failed
    finally:
        other.close()
    wait_for_lock_released(slide.pk)

    out = StringIO()
    call_command("analyze", "--sweep", stdout=out)  # what beat does, once
    assert "1 stuck runs sent again" in out.getvalue()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.heartbeat_at is not None
    assert run.heartbeat_at > old, "the deadline restarts, so the next sweep does not resend"
    assert analysis_sweep().resent == []

    AnalysisRun.objects.filter(pk=run.pk).update(
        attempts=settings.ANALYSIS_MAX_ATTEMPTS, heartbeat_at=old
    )
    report = analysis_sweep()
    assert report.failed == [run.pk]
    slide.refresh_from_db()
    assert slide.status == SlideStatus.FAILED and "stopped responding" in slide.failure_reason


def test_manage_analyze_requeues_failed_slides(settings: Any) -> None:
    failed = SlideFactory.create(status=SlideStatus.FAILED, failure_reason="corrupt")
    analysed = SlideFactory.create(status=SlideStatus.ANALYSED)
    out = StringIO()

    call_command("analyze", "--status", "failed", stdout=out)

    assert AnalysisRun.objects.filter(slide=failed, status=RunStatus.QUEUED).count() == 1
    assert not AnalysisRun.objects.filter(slide=analysed).exists()
    failed.refresh_from_db()
    assert failed.status == SlideStatus.QUEUED and failed.failure_reason == ""
    assert "1 queued, 0 refused" in out.getvalue()
    call_command("analyze", str(analysed.pk), "--dry-run", stdout=out)
    assert f"would queue slide {analysed.pk}" in out.getvalue()


def test_analysis_request_needs_a_writer(viewer: Any) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSED)
    from papreview.core.exceptions import PermissionDeniedError

    with pytest.raises(PermissionDeniedError):
        analysis_request(slide=slide, requested_by=viewer)


# --- task ------------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_backoff_then_the_run_fails(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papreview.analysis import tasks

    slide = new_slide(seed=12)
    calls: list[int] = []

    def database_gone(*, slide_id: int, task_id: str = "") -> RunOutcome:
        calls.append(slide_id)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(tasks, "analysis_run", database_gone)
    countdowns: list[int] = []
    retry = tasks.analysis_run_task.retry

    def retry_spy(*args: Any, **kwargs: Any) -> Any:
        countdowns.append(kwargs["countdown"])
        return retry(*args, **kwargs)

    monkeypatch.setattr(tasks.analysis_run_task, "retry", retry_spy)

    result = tasks.analysis_run_task.apply(kwargs={"slide_id": slide.pk})  # eager: retries inline

    assert isinstance(result.result, OperationalError)
    assert len(calls) == tasks.analysis_run_task.max_retries + 1
    # Full jitter: retry n waits up to backoff * 2**n seconds, capped.
    backoff = max(1, int(settings.ANALYSIS_RETRY_BACKOFF_S))
    for n, countdown in enumerate(countdowns):
        assert 0 <= countdown <= min(settings.ANALYSIS_RETRY_BACKOFF_MAX_S, backoff * 2**n)
    slide.refresh_from_db()
    assert slide.status == SlideStatus.FAILED and "retries" in slide.failure_reason


def test_the_task_is_configured_for_crash_safe_long_jobs(settings: Any) -> None:
    from papreview.analysis.tasks import analysis_run_task, analysis_sweep_task

    assert analysis_run_task.acks_late and analysis_run_task.reject_on_worker_lost
    assert analysis_run_task.name == "papreview.analysis.tasks.analysis_run"
    router = celery_app.amqp.router
    assert router.route({}, analysis_run_task.name, (), {})["queue"].name == "inference"
    assert router.route({}, analysis_sweep_task.name, (), {})["queue"].name == "celery"
    assert analysis_run_task.soft_time_limit < analysis_run_task.time_limit
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > (
        analysis_run_task.time_limit
    ), "a live job is never handed to a second worker"
    schedule = celery_app.conf.beat_schedule["analysis-sweep"]
    assert schedule["task"] == analysis_sweep_task.name
    assert celery_app.conf.worker_prefetch_multiplier == 1


def test_slide_api_shows_progress_and_failure_reason(api: Any, viewer: Any) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSING)
    AnalysisRun.objects.create(
        slide=slide, status=RunStatus.RUNNING, tiles_done=3, tiles_total=12, progress=25
    )
    body = api(viewer).get(f"/api/slides/{slide.pk}/").json()
    assert (body["run_status"], body["tiles_done"], body["tiles_total"], body["progress"]) == (
        "running",
        3,
        12,
        25,
    )
    corrupt = default_storage.save("slides/test/x.png", ContentFile(b"not an image"))
    failed = SlideFactory.create(file=corrupt, status=SlideStatus.UPLOADED)
    analysis_request(slide=failed)
    assert analysis_run(slide_id=failed.pk) == RunOutcome.FAILED
    body = api(viewer).get(f"/api/slides/{failed.pk}/").json()
    assert body["status"] == "failed" and body["run_status"] == "failed"
    assert "x.png" in body["failure_reason"]


def test_admin_actions_queue_slides_and_activate_versions(client: Any) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw-123-xyz"))
    slide = SlideFactory.create(status=SlideStatus.ANALYSED)
    response = client.post(
        "/admin/cases/slide/", {"action": "slides_analyse_again", "_selected_action": [slide.pk]}
    )
    assert response.status_code == 302
    assert AnalysisRun.objects.filter(slide=slide, status=RunStatus.QUEUED).count() == 1

    detector, _ = model_versions_for_analysis()
    newer = ModelVersion.objects.create(stage=ModelStage.DETECTOR, name="detector-newer")
    assert detector.is_active
    response = client.post(
        "/admin/analysis/modelversion/", {"action": "activate", "_selected_action": [newer.pk]}
    )
    assert response.status_code == 302
    assert ModelVersion.objects.get(stage=ModelStage.DETECTOR, is_active=True) == newer


def test_the_admin_shows_runs_without_their_set_aside_boxes(client: Any) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw-123-xyz"))
    run = AnalysisRun.objects.create(
        slide=SlideFactory.create(),
        status=RunStatus.SUCCEEDED,
        timings={"set_aside": 1},
        set_aside_boxes=[[123457, 765431, 30, 30]],
    )
    for url in ("/admin/analysis/analysisrun/", f"/admin/analysis/analysisrun/{run.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 200
        assert "765431" not in response.content.decode()
    assert str(run.pk) in client.get("/admin/analysis/analysisrun/").content.decode()
