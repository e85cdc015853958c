"""Writes for model versions and analysis runs.

The life of an analysis:

1. `analysis_request(slide=...)` (slide upload, re-run button, `manage.py analyze`) creates a
   queued AnalysisRun in the caller's transaction and, on commit, `analysis_publish` hands the job
   (the slide id) to the broker and records `published_at` (the outbox). A broker that is down
   leaves the run unpublished; `analysis_sweep` (celery beat) sends it once the broker is back.
2. `analysis_run(slide_id=...)` (the `inference` queue task) takes the slide's execution lock
   (a PostgreSQL advisory lock: held by a live process only, freed when it dies), claims the run
   (attempt + 1), runs the pipeline with throttled progress writes, then writes the cells, the
   triage score and the statuses in ONE transaction. A re-run replaces only that slide's
   unreviewed predictions; reviewed, rejected and added cells and every CellRevision stay.
3. A user-caused error (corrupt slide, bad checkpoint) fails the run and the slide once, with the
   message as reason. Transient errors (database or broker connection) propagate to the task,
   which retries with backoff. A run whose worker died is taken over by the next delivery (late
   ack + reject on worker lost + Redis visibility timeout) or re-sent by the sweeper, and failed
   after ANALYSIS_MAX_ATTEMPTS starts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import kombu.exceptions
import redis.exceptions
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.utils import timezone

from inference.errors import InputError
from inference.types import SlideResult
from papreview.accounts.roles import user_can_write
from papreview.analysis import adapter
from papreview.analysis.errors import AnalysisInProgressError
from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus
from papreview.analysis.selectors import (
    ACTIVE_RUN_STATUSES,
    analysis_run_active,
    analysis_runs_stale,
    analysis_runs_unpublished,
    analysis_runs_unstarted,
    model_version_active,
)
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_set_triage, slide_transition
from papreview.cases.transitions import can_transition
from papreview.core.exceptions import PermissionDeniedError
from papreview.core.locks import advisory_lock
from papreview.review.models import Cell, ReviewStatus

logger = logging.getLogger(__name__)

# Errors that go away on their own: the task retries them with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

# Namespace of the per-slide advisory lock ("PAPR"): pg_try_advisory_lock(namespace, slide_id).
_LOCK_NAMESPACE = 0x50415052


# --------------------------------------------------------------------------------------------
# Model versions
# --------------------------------------------------------------------------------------------


@transaction.atomic
def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version the one active model of its stage (the previous one is deactivated).

    Both rows change in one transaction; the conditional unique constraint guarantees that two
    concurrent activations cannot leave two active versions.
    """
    # Lock the stage's rows so that concurrent activations queue up instead of failing.
    list(ModelVersion.objects.select_for_update().filter(stage=model_version.stage))
    ModelVersion.objects.filter(stage=model_version.stage, is_active=True).exclude(
        pk=model_version.pk
    ).update(is_active=False, updated_at=timezone.now())
    now = timezone.now()
    ModelVersion.objects.filter(pk=model_version.pk).update(
        is_active=True, activated_at=now, updated_at=now
    )
    model_version.refresh_from_db()
    # The user of the request being served, if any (admin action, web page, API).
    audit_record(
        action=AuditAction.MODEL_ACTIVATED,
        target=model_version,
        data={"stage": model_version.stage, "name": model_version.name},
    )
    return model_version


def model_version_register(
    *,
    stage: ModelStage | str,
    path: Path,
    activate: bool = False,
    created_by: User | None = None,
) -> ModelVersion:
    """Register a checkpoint file as a ModelVersion (its weights copied to media storage, so
    workers on every machine read the same file), or return the row already registered under
    the checkpoint's version string. Raises CheckpointError for a file that is not a valid
    checkpoint of `stage`."""
    stage = ModelStage(stage)
    described = adapter.checkpoint_describe(Path(path), stage=stage.value)
    model_version = ModelVersion.objects.filter(stage=stage, name=described.version).first()
    name = f"models/{stage.value}/{described.version}-{described.sha256[:12]}.pt"

    def store() -> str:
        if default_storage.exists(name):
            return name
        with Path(path).open("rb") as fh:
            return default_storage.save(name, File(fh))

    # The version string carries a digest of the weights themselves (inference.checkpoints), so
    # a file with the same version holds the same weights even when its bytes (metadata) differ.
    # A row that survived its file (media restored or moved) gets the weights stored again.
    if model_version is not None and not (
        model_version.file.name and default_storage.exists(model_version.file.name)
    ):
        model_version.file.name = store()
        model_version.sha256 = described.sha256
        model_version.save(update_fields=["file", "sha256", "updated_at"])
    if model_version is None:
        name = store()
        data = described.meta.get("data")
        metrics = described.meta.get("metrics")
        try:
            with transaction.atomic():
                model_version = ModelVersion.objects.create(
                    stage=stage,
                    name=described.version,
                    file=name,
                    sha256=described.sha256,
                    metrics=metrics if isinstance(metrics, dict) else {},
                    training_data=str(data.get("name", ""))[:255] if isinstance(data, dict) else "",
                    created_by=created_by,
                )
        except IntegrityError:  # registered concurrently by another worker
            model_version = ModelVersion.objects.get(stage=stage, name=described.version)
        logger.info("registered %s (%s)", model_version, described.sha256)
    if activate and not model_version.is_active:
        model_version = model_version_activate(model_version=model_version)
    return model_version


def model_versions_for_analysis() -> tuple[ModelVersion, ModelVersion]:
    """The active detector and classifier versions. A stage with no active version gets the
    default weights (ANALYSIS_DEFAULT_DETECTOR / _CLASSIFIER, the committed inference/weights/)
    registered and activated, so a fresh installation analyses slides without an admin step."""
    versions: list[ModelVersion] = []
    defaults = {
        ModelStage.DETECTOR: Path(settings.ANALYSIS_DEFAULT_DETECTOR),
        ModelStage.CLASSIFIER: Path(settings.ANALYSIS_DEFAULT_CLASSIFIER),
    }
    for stage, default in defaults.items():
        active = model_version_active(stage=stage)
        if active is None:
            active = model_version_register(stage=stage, path=default, activate=True)
        versions.append(active)
    return versions[0], versions[1]


# --------------------------------------------------------------------------------------------
# Queueing (the outbox)
# --------------------------------------------------------------------------------------------


def analysis_request(*, slide: Slide, requested_by: User | None = None) -> AnalysisRun:
    """Queue an analysis of the slide: a queued run now, its job sent to the broker on commit.

    A first analysis leaves the slide `uploaded` until the broker has the job (then `queued`);
    a re-run (analysed, in review or failed) moves it to `queued` at once, so nobody edits cells
    while they are being replaced. Raises AnalysisInProgressError when the slide already has an
    unfinished run, IllegalTransitionError for a signed-out slide, PermissionDeniedError for a
    user who may not write.
    """
    if requested_by is not None and not user_can_write(requested_by):
        raise PermissionDeniedError("Your role can read slides but not start analyses.")
    with transaction.atomic():
        locked = Slide.objects.select_for_update().get(pk=slide.pk)
        active = analysis_run_active(slide_id=locked.pk)
        if active is not None:
            doing = "being analysed" if active.status == RunStatus.RUNNING else "queued"
            raise AnalysisInProgressError(
                f"Slide {locked.pk} is already {doing} (run {active.pk}). Wait for it to finish "
                "before starting another analysis.",
                extra={"run": active.pk},
            )
        if locked.status != SlideStatus.UPLOADED:
            slide_transition(slide=locked, to=SlideStatus.QUEUED)
        run = AnalysisRun.objects.create(
            slide=locked, status=RunStatus.QUEUED, requested_by=requested_by
        )
        transaction.on_commit(functools.partial(analysis_publish, run_id=run.pk), robust=True)
    slide.status = locked.status
    slide.failure_reason = locked.failure_reason
    return run


def analysis_publish(*, run_id: int) -> bool:
    """Hand a queued or running run's job to the broker; record that it was published.

    Never raises for a broker error: the run stays unpublished (or stale) and the sweeper sends
    it again. Returns whether the broker accepted the job.
    """
    from papreview.analysis.tasks import analysis_run_task  # tasks import this module

    run = AnalysisRun.objects.filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES).first()
    if run is None:
        return False
    try:
        # No time limits in the message: each worker applies its own settings (a CPU machine
        # may allow a slide longer than a GPU machine). No publish retries: the outbox retries.
        result = analysis_run_task.apply_async(
            kwargs={"slide_id": run.slide_id},
            retry=False,
            time_limit=None,
            soft_time_limit=None,
        )
    except Exception as exc:  # any broker failure: the outbox keeps the job
        logger.warning(
            "run %s of slide %s: the broker did not take the job (%s: %s); the sweeper will "
            "send it again",
            run.pk,
            run.slide_id,
            type(exc).__name__,
            exc,
        )
        return False
    now = timezone.now()
    AnalysisRun.objects.filter(pk=run.pk).update(published_at=now, updated_at=now)
    # A first analysis: the slide is queued now that its job is on the broker (compare-and-set;
    # the worker may already have moved it on).
    Slide.objects.filter(pk=run.slide_id, status=SlideStatus.UPLOADED).update(
        status=SlideStatus.QUEUED, status_changed_at=now, updated_at=now
    )
    logger.info("run %s of slide %s published as task %s", run.pk, run.slide_id, result.id)
    return True


# --------------------------------------------------------------------------------------------
# Running (the task's service)
# --------------------------------------------------------------------------------------------


class RunOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOTHING_TO_DO = "nothing_to_do"  # no unfinished run: a duplicate delivery of a finished job
    BUSY = "busy"  # another live process is executing this slide's run
    SUPERSEDED = "superseded"  # another execution took the run over meanwhile


@contextlib.contextmanager
def slide_execution_lock(*, slide_id: int, wait_s: float = 0.0) -> Iterator[bool]:
    """Try to take the slide's execution lock, for up to `wait_s`; yields whether it was taken.

    A session-level PostgreSQL advisory lock: held only while its process lives (the server frees
    it when the connection drops), so a redelivered job can tell a dead execution (lock free:
    take over) from a live one (lock held: leave it). The server frees a dead session's locks
    asynchronously, a moment after the process died, while a job rejected with its lost worker
    is delivered again at once: hence the short wait. Other databases (SQLite for `make run`,
    one worker) always yield True; the attempt check at commit still prevents double writes.
    """
    deadline = time.monotonic() + wait_s
    while True:
        with advisory_lock(
            namespace=_LOCK_NAMESPACE, key=slide_id, what=f"slide {slide_id}"
        ) as taken:
            if taken or time.monotonic() >= deadline:
                yield taken
                return
        time.sleep(0.1)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def _run_claim(*, run_id: int, task_id: str) -> int | None:
    """Mark the run running for this execution; returns its attempt number (None: finished)."""
    with transaction.atomic():
        run = (
            AnalysisRun.objects.select_for_update()
            .filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES)
            .first()
        )
        if run is None:
            return None
        slide = Slide.objects.select_for_update().get(pk=run.slide_id)
        now = timezone.now()
        attempt = run.attempts + 1
        AnalysisRun.objects.filter(pk=run.pk).update(
            status=RunStatus.RUNNING,
            attempts=attempt,
            started_at=run.started_at or now,
            heartbeat_at=now,
            task_id=task_id[:255],
            worker=_worker_name(),
            tiles_done=0,
            progress=0,
            updated_at=now,
        )
        if slide.status == SlideStatus.UPLOADED:  # published, but not yet marked queued
            slide_transition(slide=slide, to=SlideStatus.QUEUED)
        if slide.status == SlideStatus.QUEUED:
            slide_transition(slide=slide, to=SlideStatus.ANALYSING)
    return attempt


def _run_progress_writer(*, run_id: int, attempt: int) -> Callable[[int, int], None]:
    def write(done: int, total: int) -> None:
        now = timezone.now()
        percent = 100 if total == 0 else min(100, done * 100 // total)
        AnalysisRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, attempts=attempt).update(
            tiles_done=min(done, total),
            tiles_total=total,
            progress=percent,
            heartbeat_at=now,
            updated_at=now,
        )

    return adapter.progress_throttle(write, interval_s=settings.ANALYSIS_PROGRESS_INTERVAL_S)


def _run_fail(*, run_id: int, reason: str) -> bool:
    """Fail an unfinished run and its slide with a reason a person can act on."""
    reason = reason.strip() or "The analysis failed for an unknown reason."
    with transaction.atomic():
        run = (
            AnalysisRun.objects.select_for_update()
            .filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES)
            .first()
        )
        if run is None:
            return False
        slide = Slide.objects.select_for_update().get(pk=run.slide_id)
        now = timezone.now()
        started = run.started_at
        AnalysisRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            error=reason,
            finished_at=max(now, started) if started else now,
            updated_at=now,
        )
        if can_transition(slide.status, SlideStatus.FAILED):
            slide_transition(slide=slide, to=SlideStatus.FAILED, reason=reason)
    logger.warning("run %s of slide %s failed: %s", run_id, run.slide_id, reason)
    return True


def _replaceable_cells(slide: Slide) -> list[int]:
    """Ids of the slide's cells a re-run replaces: unreviewed predictions without revisions."""
    return list(
        Cell.objects.filter(
            slide=slide, review_status=ReviewStatus.PREDICTED, revisions__isnull=True
        ).values_list("pk", flat=True)
    )


def _run_commit(
    *,
    run_id: int,
    attempt: int,
    result: SlideResult,
    detector: ModelVersion,
    classifier: ModelVersion,
) -> RunOutcome:
    """Write the run's cells, triage and statuses in one transaction."""
    with transaction.atomic():
        found = AnalysisRun.objects.select_for_update().filter(pk=run_id).first()
        if found is None:  # the slide was deleted meanwhile
            logger.info("run %s: gone before its results were written", run_id)
            return RunOutcome.NOTHING_TO_DO
        run = found
        if run.status != RunStatus.RUNNING or run.attempts != attempt:
            logger.warning(
                "run %s: attempt %s was superseded (now %s, attempt %s); results dropped",
                run_id,
                attempt,
                run.status,
                run.attempts,
            )
            return RunOutcome.SUPERSEDED
        slide = Slide.objects.select_for_update().get(pk=run.slide_id)
        replaced = _replaceable_cells(slide)
        if replaced:
            Cell.objects.filter(pk__in=replaced).delete()
        kept = list(Cell.objects.filter(slide=slide).values_list("x", "y", "width", "height"))
        cells = adapter.cells_from_result(result, slide=slide, run=run, keep_boxes=kept)
        Cell.objects.bulk_create(cells, batch_size=2000)
        now = timezone.now()
        tiles = int(result.timings.get("tiles", 0))
        AnalysisRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED,
            finished_at=max(now, run.started_at) if run.started_at else now,
            progress=100,
            tiles_total=max(tiles, run.tiles_total),
            tiles_done=max(tiles, run.tiles_total),
            heartbeat_at=now,
            detector_version=detector,
            classifier_version=classifier,
            model_versions=dict(result.model_versions),
            device=result.device[:64],
            timings={k: round(float(v), 4) for k, v in result.timings.items()},
            updated_at=now,
        )
        triage = adapter.most_severe(cells) or ("NILM", 0.0)
        slide_set_triage(slide=slide, triage_class=triage[0], confidence=triage[1])
        if slide.status == SlideStatus.ANALYSING:
            slide_transition(slide=slide, to=SlideStatus.ANALYSED)
    logger.info(
        "run %s of slide %s: %d cells (%d predictions replaced, %d reviewed kept), triage %s",
        run_id,
        slide.pk,
        len(cells),
        len(replaced),
        len(kept),
        triage[0],
    )
    return RunOutcome.SUCCEEDED


def analysis_run(*, slide_id: int, task_id: str = "") -> RunOutcome:
    """Analyse the slide's unfinished run. Idempotent: safe to deliver any number of times.

    Raises only TRANSIENT_ERRORS (and whatever a dead database raises while recording a
    failure); everything else ends as a succeeded or failed run.
    """
    run = analysis_run_active(slide_id=slide_id)
    if run is None:
        logger.info("slide %s: no unfinished analysis run; nothing to do", slide_id)
        return RunOutcome.NOTHING_TO_DO
    with slide_execution_lock(slide_id=slide_id, wait_s=settings.ANALYSIS_LOCK_WAIT_S) as taken:
        if not taken:
            logger.info("slide %s: run %s is being executed by another worker", slide_id, run.pk)
            return RunOutcome.BUSY
        attempt = _run_claim(run_id=run.pk, task_id=task_id)
        if attempt is None:
            return RunOutcome.NOTHING_TO_DO
        if attempt > settings.ANALYSIS_MAX_ATTEMPTS:
            _run_fail(
                run_id=run.pk,
                reason=(
                    f"The analysis was started {attempt - 1} times and never finished: the "
                    "worker stopped each time (killed, out of memory or out of time). The slide "
                    "may be too large for the workers; ask an administrator."
                ),
            )
            return RunOutcome.FAILED
        logger.info("slide %s: run %s attempt %s started", slide_id, run.pk, attempt)
        try:
            detector, classifier = model_versions_for_analysis()
            pipeline = adapter.pipeline_for(detector=detector, classifier=classifier)
            AnalysisRun.objects.filter(pk=run.pk).update(
                detector_version=detector,
                classifier_version=classifier,
                device=str(pipeline.device),
            )
            slide = Slide.objects.get(pk=slide_id)
            with adapter.slide_local_path(slide) as path:
                result = adapter.slide_analyse(
                    pipeline, path, progress=_run_progress_writer(run_id=run.pk, attempt=attempt)
                )
            return _run_commit(
                run_id=run.pk,
                attempt=attempt,
                result=result,
                detector=detector,
                classifier=classifier,
            )
        except InputError as exc:
            _run_fail(run_id=run.pk, reason=str(exc))
            return RunOutcome.FAILED
        except SoftTimeLimitExceeded:
            # The limit is a signal: it may have interrupted a query (a progress write, the
            # commit), leaving the connection mid-statement. Start afresh (this also frees the
            # execution lock; a later delivery would find the run failed).
            _connection_reset()
            limit = int(settings.ANALYSIS_SOFT_TIME_LIMIT_S)
            span = f"{limit} s" if limit < 120 else f"{limit / 60:.0f} min"
            _run_fail(
                run_id=run.pk,
                reason=(
                    f"The analysis did not finish within its time limit ({span}); the slide may "
                    "be too large for this worker. Run it again on a GPU worker or ask an "
                    "administrator to raise ANALYSIS_SOFT_TIME_LIMIT_S."
                ),
            )
            return RunOutcome.FAILED
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # our fault: logged with context, shown as a failed run
            logger.exception("run %s of slide %s: unexpected error", run.pk, slide_id)
            _run_fail(
                run_id=run.pk,
                reason=(
                    f"Internal error while analysing the slide ({type(exc).__name__}: {exc}). "
                    "It was logged; run the analysis again or ask an administrator."
                ),
            )
            return RunOutcome.FAILED


def _connection_reset() -> None:
    """Drop this thread's database connection, whatever state it is in (Django reconnects)."""
    try:
        connection.close()
    except Exception:  # a connection interrupted mid-query may refuse a clean close
        logger.debug("closing an interrupted connection failed", exc_info=True)
    if connection.in_atomic_block:  # cannot happen outside a transaction; be safe anyway
        return
    connection.connection = None


def analysis_give_up(*, slide_id: int, reason: str) -> bool:
    """Fail the slide's unfinished run (the task ran out of retries for a transient error)."""
    run = analysis_run_active(slide_id=slide_id)
    return False if run is None else _run_fail(run_id=run.pk, reason=reason)


# --------------------------------------------------------------------------------------------
# The sweeper (celery beat)
# --------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    published: list[int] = field(default_factory=list)  # run ids sent to the broker (outbox)
    resent: list[int] = field(default_factory=list)  # stale running runs sent again
    failed: list[int] = field(default_factory=list)  # stale runs out of attempts
    busy: list[int] = field(default_factory=list)  # stale heartbeat but a live process holds it
    # queued runs published long ago and never started (message lost by the broker), sent again
    republished: list[int] = field(default_factory=list)


def analysis_sweep(*, now: datetime | None = None) -> SweepReport:
    """Send jobs that never reached the broker, and re-send or fail runs stuck in `running`.

    * queued runs unpublished for ANALYSIS_PUBLISH_GRACE_S (broker down at upload) are published;
    * running runs without a heartbeat for ANALYSIS_STALE_AFTER_S whose execution lock is free
      (their worker is dead) are re-sent, or failed once they used ANALYSIS_MAX_ATTEMPTS starts.
    """
    now = now or timezone.now()
    report = SweepReport()
    grace = timedelta(seconds=settings.ANALYSIS_PUBLISH_GRACE_S)
    for run_id in analysis_runs_unpublished(created_before=now - grace).values_list(
        "pk", flat=True
    ):
        if analysis_publish(run_id=run_id):
            report.published.append(run_id)
    # A broker restarted without persistence (Redis with --save "") loses the jobs it held: a
    # queued run that no worker started long after it was published is sent again. A duplicate
    # is harmless (the task is idempotent: the run executes once); publishing bumps published_at,
    # so a run waiting in a long queue is re-sent at most once per period.
    requeue_after = timedelta(seconds=settings.ANALYSIS_REQUEUE_AFTER_S)
    for run_id in analysis_runs_unstarted(published_before=now - requeue_after).values_list(
        "pk", flat=True
    ):
        if analysis_publish(run_id=run_id):
            report.republished.append(run_id)
    stale_after = timedelta(seconds=settings.ANALYSIS_STALE_AFTER_S)
    for run in analysis_runs_stale(heartbeat_before=now - stale_after):
        with slide_execution_lock(slide_id=run.slide_id) as taken:
            if not taken:
                report.busy.append(run.pk)
                continue
            if run.attempts >= settings.ANALYSIS_MAX_ATTEMPTS:
                _run_fail(
                    run_id=run.pk,
                    reason=(
                        f"The analysis stopped responding {run.attempts} times (worker lost or "
                        "out of time). The slide may be too large for the workers; ask an "
                        "administrator."
                    ),
                )
                report.failed.append(run.pk)
                continue
        # Outside the lock: the worker that takes the job must be able to take the lock. The
        # heartbeat restarts the deadline, so the next sweeps do not send it again meanwhile.
        if analysis_publish(run_id=run.pk):
            AnalysisRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                heartbeat_at=timezone.now()
            )
            report.resent.append(run.pk)
    if report.published or report.resent or report.failed or report.republished:
        logger.info("analysis sweep: %s", report)
    return report
