"""Thin Celery tasks of the model registry (evaluations on `celery`; retraining on `training`,
see CELERY_TASK_ROUTES): they take ids and call a service.

Transient errors are retried by the one policy of all tasks (papreview.core.tasks.TRANSIENT_RETRY).
"""

from __future__ import annotations

from celery import Task, shared_task

from papreview.core.tasks import TRANSIENT_RETRY


@shared_task(
    bind=True,
    name="papreview.registry.tasks.model_evaluation_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    **TRANSIENT_RETRY,
)
def model_evaluation_run_task(self: Task, evaluation_id: int) -> str:
    from papreview.registry.services import model_evaluation_run

    return model_evaluation_run(evaluation_id=evaluation_id)


@shared_task(
    bind=True,
    name="papreview.registry.tasks.retrain_job_run",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    **TRANSIENT_RETRY,
)
def retrain_job_run_task(self: Task, job_id: int) -> str:
    """Retrain both stages on an export (queue `training`, see CELERY_TASK_ROUTES); a database or
    broker error starts the job over, by the one retry policy, until the last try fails it."""
    from papreview.registry.retrain import retrain_job_run

    last_try = self.request.retries >= (self.max_retries or 0)
    return retrain_job_run(job_id=job_id, retry_transient=not last_try)
