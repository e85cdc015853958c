"""Executing a run (the `inference` task's service): the slide's execution lock, claiming the run,
throttled progress writes, then the cells, the triage score and the statuses in one transaction;
or the run failed with a reason a person can act on."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from inference.errors import InputError
from inference.types import SlideResult
from papreview.analysis import adapter
from papreview.analysis.models import (
    SET_ASIDE_BOXES_MAX,
    AnalysisRun,
    ModelVersion,
    RunStatus,
)
from papreview.analysis.selectors import ACTIVE_RUN_STATUSES, analysis_run_active
from papreview.analysis.services.versions import model_versions_for_analysis
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_set_triage, slide_transition
from papreview.cases.transitions import can_transition
from papreview.core.locks import advisory_lock
from papreview.core.tasks import TRANSIENT_ERRORS
from papreview.review.models import Cell, ReviewStatus

logger = logging.getLogger(__name__)

# Namespace of the per-slide advisory lock ("PAPR"): pg_try_advisory_lock(namespace, slide_id).
_LOCK_NAMESPACE = 0x50415052


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


def _active_run_locked(run_id: int) -> tuple[AnalysisRun, Slide] | None:
    """The unfinished run and its slide, both row-locked (inside the caller's transaction)."""
    run = (
        AnalysisRun.objects.select_for_update()
        .filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES)
        .first()
    )
    if run is None:
        return None
    return run, Slide.objects.select_for_update().get(pk=run.slide_id)


def _run_claim(*, run_id: int, task_id: str) -> int | None:
    """Mark the run running for this execution; returns its attempt number (None: finished)."""
    with transaction.atomic():
        locked = _active_run_locked(run_id)
        if locked is None:
            return None
        run, slide = locked
        attempt = run.attempts + 1
        now = timezone.now()
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


def run_fail(*, run_id: int, reason: str) -> bool:
    """Fail an unfinished run and its slide with a reason a person can act on."""
    reason = reason.strip() or "The analysis failed for an unknown reason."
    with transaction.atomic():
        locked = _active_run_locked(run_id)
        if locked is None:
            return False
        run, slide = locked
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
            timings={
                **{k: round(float(v), 4) for k, v in result.timings.items()},
                # a count, like tiles: what the review page says was set aside as not cells
                "set_aside": len(result.set_aside),
            },
            set_aside_boxes=[
                [c.box.x, c.box.y, c.box.width, c.box.height]
                for c in result.set_aside[:SET_ASIDE_BOXES_MAX]
            ],
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


@contextlib.contextmanager
def run_heartbeat(*, run_id: int, interval_s: float) -> Iterator[None]:
    """Beat `heartbeat_at` every `interval_s` from a thread while the block runs, whatever the
    models are doing (a long batch writes no progress): the sweeper re-sends a run only when its
    worker stopped beating for ANALYSIS_STALE_AFTER_S, i.e. when the worker is gone."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval_s):
                try:
                    AnalysisRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError:  # the next beat tries again; the run itself goes on
                    logger.warning("run %s: heartbeat not written", run_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _raised_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `exc` was raised while handling (or from) an exception of `kind`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _fail_over_time(*, run_id: int) -> None:
    """Fail the run for its time limit. The limit is a signal: it may have interrupted a query
    (a progress write, the commit), leaving the connection mid-statement, so start afresh (this
    also frees the execution lock; a later delivery would find the run failed)."""
    _connection_reset()
    limit = int(settings.ANALYSIS_SOFT_TIME_LIMIT_S)
    span = f"{limit} s" if limit < 120 else f"{limit / 60:.0f} min"
    run_fail(
        run_id=run_id,
        reason=(
            f"The analysis did not finish within its time limit ({span}); the slide may be too "
            "large for this worker. Run it again on a GPU worker or ask an administrator to "
            "raise ANALYSIS_SOFT_TIME_LIMIT_S."
        ),
    )


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
            run_fail(
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
                device=pipeline.device_name,
            )
            slide = Slide.objects.get(pk=slide_id)
            with (
                run_heartbeat(run_id=run.pk, interval_s=settings.ANALYSIS_HEARTBEAT_INTERVAL_S),
                adapter.slide_local_path(slide) as path,
            ):
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
            if _raised_by(exc, SoftTimeLimitExceeded):  # the limit struck inside a decoder
                _fail_over_time(run_id=run.pk)
            else:
                run_fail(run_id=run.pk, reason=str(exc))
            return RunOutcome.FAILED
        except SoftTimeLimitExceeded:
            _fail_over_time(run_id=run.pk)
            return RunOutcome.FAILED
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # our fault: logged with context, shown as a failed run
            logger.exception("run %s of slide %s: unexpected error", run.pk, slide_id)
            run_fail(
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
    return False if run is None else run_fail(run_id=run.pk, reason=reason)
