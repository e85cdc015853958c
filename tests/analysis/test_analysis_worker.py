"""End to end with real Celery workers (subprocesses) on the real Redis and PostgreSQL.

upload -> analysed with cells of the active model versions; a worker SIGKILLed mid-run -> the job
runs again on a second worker and completes once; corrupt slide -> failed with its reason, no
retries; re-run keeps reviewer edits; broker down at upload -> the job runs once it is back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from papreview.accounts.roles import Role
from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus
from papreview.analysis.services import analysis_request, analysis_sweep
from papreview.cases.models import Slide, SlideStatus
from papreview.celery import celery_app
from papreview.core.choices import SEVERITY
from papreview.review.models import Cell, CellRevision, ReviewStatus
from papreview.review.services import cell_add, cell_update
from testkit.images import field_bytes
from testkit.workers import ROOT, WorkerPool, wait_for
from tests.factories import PatientFactory, SlideFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def role_groups(transactional_db: None) -> None:
    """The role groups come from a data migration; flushing after a transactional test drops
    them, so make sure they exist before users get their roles."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def upload(api_client: Any, patient_id: int, content: bytes, name: str = "field.png") -> int:
    response = api_client.post(
        "/api/slides/",
        {"patient": patient_id, "file": SimpleUploadedFile(name, content)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


WORKERS: list[WorkerPool] = []


@pytest.fixture(autouse=True)
def _remember_workers(workers: WorkerPool) -> None:
    WORKERS[:] = [workers]


def slide_reaches(slide_id: int, *statuses: str, timeout: float = 60.0) -> Slide:
    def reached() -> Slide | None:
        slide = Slide.objects.get(pk=slide_id)
        return slide if slide.status in statuses else None

    try:
        return wait_for(reached, timeout=timeout, what=f"slide {slide_id} in {statuses}")
    except AssertionError as exc:  # show what the workers did
        runs = list(AnalysisRun.objects.filter(slide_id=slide_id).values())
        logs = WORKERS[0].output()[-6000:] if WORKERS else ""
        raise AssertionError(f"{exc}\nruns: {runs}\nworker logs:\n{logs}") from exc


def test_upload_is_analysed_by_a_worker_with_the_active_model_versions(
    workers: WorkerPool, api: Any, pathologist: Any
) -> None:
    worker = workers.current()
    client = api(pathologist)
    patient = PatientFactory.create()

    slide_id = upload(client, patient.pk, field_bytes(256, 256, seed=1))
    slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED)
    second_id = upload(client, patient.pk, field_bytes(256, 256, seed=2))
    assert slide_reaches(second_id, SlideStatus.ANALYSED).status == SlideStatus.ANALYSED
    # Loaded once, when the worker process started; not per job.
    assert worker.output().count("pipeline loaded") == 1

    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason
    run = AnalysisRun.objects.get(slide=slide)
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 1
    assert run.published_at is not None and run.started_at is not None
    assert run.tiles_total >= 1 and run.tiles_done == run.tiles_total and run.progress == 100
    detector = ModelVersion.objects.get(stage=ModelStage.DETECTOR, is_active=True)
    classifier = ModelVersion.objects.get(stage=ModelStage.CLASSIFIER, is_active=True)
    assert (run.detector_version, run.classifier_version) == (detector, classifier)
    assert run.model_versions == {"detector": detector.name, "classifier": classifier.name}
    assert run.device == "cpu" and run.timings["total"] > 0
    cells = list(Cell.objects.filter(slide=slide))
    assert cells, "the random-weight pipeline finds cells on this field"
    assert all(c.run_id == run.pk and c.review_status == ReviewStatus.PREDICTED for c in cells)
    assert all(c.x >= 0 and c.x + c.width <= slide.width for c in cells)
    # Triage: the most severe predicted class, weighted by its confidence.
    score, label = max(
        (SEVERITY[c.predicted_class] * c.probabilities[c.predicted_class], c.predicted_class)
        for c in cells
    )
    assert slide.triage_class == label
    assert slide.triage_score == pytest.approx(score, abs=1e-5)

    body = client.get(f"/api/slides/{slide_id}/").json()
    assert body["status"] == "analysed" and body["run_status"] == "succeeded"
    assert body["progress"] == 100 and body["tiles_done"] == body["tiles_total"] >= 1
    runs = client.get(f"/api/slides/{slide_id}/runs/").json()
    assert [r["id"] for r in runs] == [run.pk] and runs[0]["detector_version"] == detector.name


def test_a_worker_killed_mid_run_is_replaced_and_the_job_completes_once(
    workers: WorkerPool, api: Any, pathologist: Any
) -> None:
    first = workers.current()
    client = api(pathologist)
    patient = PatientFactory.create()
    # 4096 px: 121 detector tiles of 256 px, one per batch, progress written after each.
    slide_id = upload(client, patient.pk, field_bytes(4096, 4096, seed=7), "large.png")

    def mid_run() -> AnalysisRun | None:
        run = AnalysisRun.objects.get(slide_id=slide_id)
        return run if run.status == RunStatus.RUNNING and run.tiles_done >= 2 else None

    before = wait_for(mid_run, timeout=60, interval=0.02, what="the run to be part done")
    first.kill()
    assert before.tiles_done < before.tiles_total, "killed before the end"
    killed = AnalysisRun.objects.get(pk=before.pk)
    assert killed.status == RunStatus.RUNNING and killed.attempts == 1
    assert not Cell.objects.filter(slide_id=slide_id).exists()  # one transaction, at the end

    second = workers.start()  # redelivered after the visibility timeout (6 s in these tests)
    slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED, timeout=90)

    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason
    run = AnalysisRun.objects.get(slide_id=slide_id)  # still one run
    assert run.pk == before.pk and run.status == RunStatus.SUCCEEDED
    assert run.attempts == 2, "the killed attempt and the one that finished"
    assert run.worker.split(":")[1] != killed.worker.split(":")[1]  # another process
    cells = Cell.objects.filter(slide_id=slide_id)
    boxes = list(cells.values_list("x", "y", "width", "height"))
    assert boxes and len(set(boxes)) == len(boxes), "no cell written twice"
    assert set(cells.values_list("run_id", flat=True)) == {run.pk}
    assert f"run {run.pk} attempt 2 started" in second.output()
    # A further delivery of the same job (e.g. from the sweeper) is a no-op.
    from papreview.analysis.tasks import analysis_run_task

    analysis_run_task.delay(slide_id=slide_id)
    wait_for(lambda: second.output().count("no unfinished analysis run") >= 1, timeout=20)
    assert Cell.objects.filter(slide_id=slide_id).count() == len(boxes)
    assert AnalysisRun.objects.get(pk=run.pk).attempts == 2


def test_a_pool_process_killed_mid_run_is_replaced_and_its_job_rejected_back_to_the_queue(
    workers: WorkerPool, api: Any, pathologist: Any
) -> None:
    """The pool child dies (say, out of memory) while its worker lives: reject-on-worker-lost puts
    the job back at once and the worker's new child takes the run over."""
    worker = workers.current()
    slide_id = upload(
        api(pathologist), PatientFactory.create().pk, field_bytes(4096, 4096, seed=13), "l.png"
    )

    def mid_run() -> AnalysisRun | None:
        run = AnalysisRun.objects.get(slide_id=slide_id)
        return run if run.status == RunStatus.RUNNING and run.tiles_done >= 2 else None

    before = wait_for(mid_run, timeout=60, interval=0.02, what="the run to be part done")
    child = int(before.worker.split(":")[1])
    assert child != worker.proc.pid
    os.kill(child, signal.SIGKILL)

    slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED, timeout=60)
    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason
    assert worker.alive(), "the worker itself lives on"
    run = AnalysisRun.objects.get(slide_id=slide_id)
    assert run.attempts == 2 and int(run.worker.split(":")[1]) != child
    boxes = list(Cell.objects.filter(slide_id=slide_id).values_list("x", "y", "width", "height"))
    assert boxes and len(set(boxes)) == len(boxes)
    assert "WorkerLostError" in worker.output() or "signal 9" in worker.output()


def test_a_corrupt_slide_fails_once_with_its_reason(workers: WorkerPool, api: Any) -> None:
    worker = workers.current()
    name = default_storage.save(
        "slides/test/corrupt.png", ContentFile(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 64)
    )
    slide = SlideFactory.create(file=name, status=SlideStatus.UPLOADED, width=256, height=256)

    analysis_request(slide=slide)
    slide = slide_reaches(slide.pk, SlideStatus.FAILED, SlideStatus.ANALYSED)

    assert slide.status == SlideStatus.FAILED
    assert "corrupt.png" in slide.failure_reason
    run = AnalysisRun.objects.get(slide=slide)
    assert run.status == RunStatus.FAILED and run.error == slide.failure_reason
    time.sleep(1.5)  # a retry would have started by now
    run.refresh_from_db()
    assert run.attempts == 1 and run.status == RunStatus.FAILED
    log = worker.output()
    assert log.count(f"[{run.task_id}] received") == 1, "delivered once, never retried"
    assert "retry" not in log.split(f"[{run.task_id}] received")[1].lower()


def test_a_slide_over_the_time_limit_fails_once_with_a_clear_reason(
    workers: WorkerPool, api: Any, pathologist: Any
) -> None:
    workers.stop_all()  # only the worker with the short limit may take this job
    worker = workers.start(ANALYSIS_SOFT_TIME_LIMIT_S="1", ANALYSIS_TIME_LIMIT_S="30")
    try:
        # 6144 px: ~256 detector tiles of 256 px, several seconds of work on any CPU.
        content = field_bytes(6144, 6144, seed=9, fmt="JPEG")
        slide_id = upload(api(pathologist), PatientFactory.create().pk, content, "huge.jpg")
        slide = slide_reaches(slide_id, SlideStatus.FAILED, SlideStatus.ANALYSED)
        assert slide.status == SlideStatus.FAILED
        assert "did not finish within its time limit (1 s)" in slide.failure_reason
        run = AnalysisRun.objects.get(slide_id=slide_id)
        assert run.status == RunStatus.FAILED and run.attempts == 1
        # Stopped wherever the limit struck (reading, tiles, or writing the results): nothing
        # of it was written.
        assert not Cell.objects.filter(slide_id=slide_id).exists()
        time.sleep(1.0)
        assert AnalysisRun.objects.get(pk=run.pk).attempts == 1, "not retried"
        assert worker.output().count(f"[{run.task_id}] received") == 1
    finally:
        worker.stop()


def test_a_rerun_replaces_predictions_but_keeps_reviewer_work(
    workers: WorkerPool, api: Any, pathologist: Any, viewer: Any
) -> None:
    workers.current()
    client = api(pathologist)
    slide_id = upload(client, PatientFactory.create().pk, field_bytes(512, 512, seed=3))
    slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED)
    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason
    first_run = AnalysisRun.objects.get(slide=slide)
    predicted = list(Cell.objects.filter(slide=slide).order_by("id"))
    assert len(predicted) >= 4

    relabelled = cell_update(cell=predicted[0], version=1, by=pathologist, current_class="HSIL")
    rejected = cell_update(
        cell=predicted[1], version=1, by=pathologist, review_status=ReviewStatus.REJECTED
    )
    moved = cell_update(cell=predicted[2], version=1, by=pathologist, x=predicted[2].x + 3)
    added = cell_add(
        slide=Slide.objects.get(pk=slide_id), by=pathologist,
        x=5, y=5, width=40, height=40, current_class="LSIL",
    )  # fmt: skip
    reviewed = {
        c.pk: (c.review_status, c.current_class, c.version)
        for c in (relabelled, rejected, moved, added)
    }
    revisions = sorted(CellRevision.objects.values_list("pk", "cell_id", "version"))
    assert len(revisions) == 4

    assert client.post(f"/api/slides/{slide_id}/analyze/").status_code == 202
    assert api(viewer).post(f"/api/slides/{slide_id}/analyze/").status_code == 403
    slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED)
    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason

    second_run = AnalysisRun.objects.filter(slide=slide).exclude(pk=first_run.pk).get()
    assert second_run.status == RunStatus.SUCCEEDED
    after = {
        c.pk: (c.review_status, c.current_class, c.version)
        for c in Cell.objects.filter(pk__in=reviewed)
    }
    assert after == reviewed, "reviewed, rejected, moved and added cells are untouched"
    assert sorted(CellRevision.objects.values_list("pk", "cell_id", "version")) == revisions
    unreviewed_old = [c.pk for c in predicted[3:]]
    assert not Cell.objects.filter(pk__in=unreviewed_old).exists(), "old predictions replaced"
    new_predictions = Cell.objects.filter(slide=slide, review_status=ReviewStatus.PREDICTED)
    assert new_predictions.exists()
    assert set(new_predictions.values_list("run_id", flat=True)) == {second_run.pk}


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point this process's Celery app at another broker URL (and drop its pooled connections)."""

    def reset() -> None:  # the next publish looks its pools up again, by the current URL
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    original = celery_app.conf.broker_write_url
    reset()
    celery_app.conf.broker_write_url = url  # what publishing connects to
    try:
        yield
    finally:
        reset()
        celery_app.conf.broker_write_url = original


def test_upload_while_the_broker_is_down_runs_once_the_broker_is_back(
    workers: WorkerPool, api: Any, pathologist: Any, caplog: Any, tmp_path: Path
) -> None:
    workers.current()
    client = api(pathologist)
    patient = PatientFactory.create()

    with broker_at("redis://127.0.0.1:1/2"):  # nothing listens on port 1
        started = time.monotonic()
        slide_id = upload(client, patient.pk, field_bytes(256, 256, seed=11))
        assert time.monotonic() - started < 10, "the upload does not hang on the broker"
        assert caplog.text.count("the broker did not take the job (OperationalError") == 1

    slide = Slide.objects.get(pk=slide_id)
    run = AnalysisRun.objects.get(slide=slide)
    assert slide.status == SlideStatus.UPLOADED and default_storage.exists(str(slide.file.name))
    assert run.status == RunStatus.QUEUED and run.published_at is None
    time.sleep(1.0)
    assert AnalysisRun.objects.get(pk=run.pk).started_at is None, "no job reached a worker"

    # The broker is back: a real `celery beat` sends the sweeper to the worker every second
    # (production: every minute), and the sweeper publishes the job from the outbox.
    beat_env = {
        **workers.env,
        "ANALYSIS_SWEEP_INTERVAL_S": "1",
        "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat-schedule"),
    }
    beat_log = tmp_path / "beat.log"
    with beat_log.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "papreview", "beat", "--loglevel", "INFO"],
            cwd=ROOT, env=beat_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            slide = slide_reaches(slide_id, SlideStatus.ANALYSED, SlideStatus.FAILED, timeout=60)
        finally:
            beat.terminate()
            beat.wait(timeout=20)
    assert slide.status == SlideStatus.ANALYSED, slide.failure_reason
    assert "analysis_sweep" in beat_log.read_text()
    assert f"published=[{run.pk}]" in workers.output()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 1 and run.published_at
    assert analysis_sweep(now=timezone.now() + timedelta(hours=1)).published == []


def test_a_time_limit_that_strikes_inside_a_decoder_is_reported_as_the_time_limit() -> None:
    """The soft limit is an exception raised wherever the worker is: inside an image decoder it
    turns into "damaged or truncated" unless the cause is looked for."""
    from celery.exceptions import SoftTimeLimitExceeded

    from inference.errors import UnreadableSlideError
    from papreview.analysis.services.run import _raised_by

    try:
        try:
            raise SoftTimeLimitExceeded()
        except Exception as exc:
            raise UnreadableSlideError("huge.jpg: the JPEG image is damaged") from exc
    except UnreadableSlideError as wrapped:
        assert _raised_by(wrapped, SoftTimeLimitExceeded)
    assert not _raised_by(UnreadableSlideError("really damaged"), SoftTimeLimitExceeded)
