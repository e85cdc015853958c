"""Thin Celery tasks of the datasets app (queue `celery`): they take ids and call a service.

Transient errors are retried by the one policy of all tasks (papreview.core.tasks.TRANSIENT_RETRY).
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from papreview.core.tasks import TRANSIENT_RETRY

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="papreview.datasets.tasks.dataset_export_build",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.DATASET_EXPORT_SOFT_TIME_LIMIT_S,
    time_limit=settings.DATASET_EXPORT_SOFT_TIME_LIMIT_S + 300,
    ignore_result=True,
    **TRANSIENT_RETRY,
)
def dataset_export_build_task(self: Task, export_id: int) -> str:
    from papreview.datasets.build import dataset_export_build

    outcome = dataset_export_build(export_id=export_id, task_id=self.request.id or "")
    if outcome == "busy":  # another live process builds it: look again later (it may die)
        raise self.retry(countdown=60, max_retries=30)
    return outcome


@shared_task(name="papreview.datasets.tasks.qc_sample", ignore_result=True, **TRANSIENT_RETRY)
def qc_sample_task() -> list[int]:
    """Celery beat: draw the QC share of the slides signed out since the last draw."""
    from papreview.datasets.qc import qc_sample

    return [review.slide_id for review in qc_sample()]
