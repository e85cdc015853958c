"""Thin Celery tasks: take ids, call a service, retry transient errors.

`analysis_run_task(slide_id)` runs on the `inference` queue (GPU workers: `celery -A papreview
worker -Q inference --concurrency 1 --prefetch-multiplier 1`, one process per GPU). It is
acknowledged late and rejected when its worker is lost, so a killed worker's job runs again; the
service makes every delivery after the first a no-op or a takeover, never a second set of cells.
Time limits: ANALYSIS_SOFT_TIME_LIMIT_S / ANALYSIS_TIME_LIMIT_S (settings/base.py), below the
broker's visibility timeout.

`analysis_sweep_task()` runs every ANALYSIS_SWEEP_INTERVAL_S from celery beat on the `celery`
queue (not behind long slide jobs).

Transient errors are retried by the one policy of all tasks (papreview.core.tasks.TRANSIENT_RETRY);
once its retries are spent, the analysis run fails with that reason.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init
from django.conf import settings

from papreview.analysis.services import (
    TRANSIENT_ERRORS,
    analysis_give_up,
    analysis_run,
    analysis_sweep,
    model_versions_for_analysis,
)
from papreview.core.tasks import TRANSIENT_RETRY

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="papreview.analysis.tasks.analysis_run",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.ANALYSIS_SOFT_TIME_LIMIT_S,
    time_limit=settings.ANALYSIS_TIME_LIMIT_S,
    ignore_result=True,
    **TRANSIENT_RETRY,
)
def analysis_run_task(self: Task, slide_id: int) -> str:
    try:
        return str(analysis_run(slide_id=slide_id, task_id=self.request.id or ""))
    except TRANSIENT_ERRORS as exc:
        retries = int(self.request.retries or 0)
        if self.max_retries is not None and retries >= self.max_retries:
            # The policy retries no more: the error fails the task, so fail the run too.
            logger.error("slide %s: giving up after %d retries (%s)", slide_id, retries, exc)
            try:
                analysis_give_up(
                    slide_id=slide_id,
                    reason=(
                        f"The analysis could not reach the database or the broker after "
                        f"{retries} retries ({type(exc).__name__}). Run it again later."
                    ),
                )
            except TRANSIENT_ERRORS:  # still down: the sweeper will find the stale run
                logger.exception("slide %s: could not record the failure", slide_id)
        raise


@shared_task(name="papreview.analysis.tasks.analysis_sweep", ignore_result=True, **TRANSIENT_RETRY)
def analysis_sweep_task() -> dict[str, list[int]]:
    report = analysis_sweep()
    return {
        "published": report.published,
        "resent": report.resent,
        "failed": report.failed,
        "busy": report.busy,
    }


def _consumes_inference_queue() -> bool:
    from papreview.celery import celery_app

    try:
        names = set(celery_app.amqp.queues.consume_from)
    except Exception:
        return True
    return not names or "inference" in names


@worker_process_init.connect
def _worker_process_ready(**kwargs: Any) -> None:
    """Each worker process: torch threads as configured, then load the pipeline once, now, so
    the first job does not pay for it (the adapter caches it for the process's life)."""
    if settings.INFERENCE_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.INFERENCE_TORCH_THREADS)
    if not settings.ANALYSIS_WARM_UP or not _consumes_inference_queue():
        logger.info("worker process ready (pipeline loaded on the first job)")
        return
    from django.db import connections

    from papreview.analysis import adapter

    try:
        detector, classifier = model_versions_for_analysis()
        adapter.pipeline_for(detector=detector, classifier=classifier)
        logger.info("worker process ready (pipeline %s + %s)", detector.name, classifier.name)
    except Exception:  # the first job loads it (and reports a bad checkpoint on its run)
        logger.warning("worker process ready; pipeline warm-up failed", exc_info=True)
    finally:
        connections.close_all()
