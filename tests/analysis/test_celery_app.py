"""The Celery app around the analysis tasks: one retry policy for every task, and beat's schedule
file in a folder that does not exist yet (`var/` on a fresh clone)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from celery.beat import Service
from django.db import OperationalError

from papreview.celery import celery_app
from papreview.core.tasks import TRANSIENT_ERRORS, TRANSIENT_RETRY

TASK_MODULES = (
    "papreview.analysis.tasks",
    "papreview.core.tasks",
    "papreview.datasets.tasks",
    "papreview.registry.tasks",
    "papreview.uploads.tasks",
)


def test_every_task_retries_transient_errors_by_the_one_policy(settings: Any) -> None:
    for module in TASK_MODULES:
        importlib.import_module(module)
    tasks = [task for name, task in celery_app.tasks.items() if name.startswith("papreview.")]
    assert {task.name.rsplit(".", 1)[0] for task in tasks} == set(TASK_MODULES)
    for task in tasks:
        assert tuple(task.autoretry_for) == TRANSIENT_ERRORS, task.name
        assert task.max_retries == settings.ANALYSIS_MAX_RETRIES, task.name
        assert task.retry_backoff == settings.ANALYSIS_RETRY_BACKOFF_S, task.name
        assert task.retry_backoff_max == int(settings.ANALYSIS_RETRY_BACKOFF_MAX_S), task.name
        assert task.retry_jitter is True, task.name
    assert OperationalError in TRANSIENT_RETRY["autoretry_for"]
    assert ValueError not in TRANSIENT_RETRY["autoretry_for"]  # our errors are never retried


def test_beat_creates_the_folder_of_its_schedule(tmp_path: Path) -> None:
    # What `celery beat` and `worker -B` build: a Service with the configured scheduler.
    filename = tmp_path / "var" / "celerybeat-schedule"
    service = Service(
        app=celery_app,
        schedule_filename=str(filename),
        scheduler_cls=celery_app.conf.beat_scheduler,
    )
    try:
        assert "analysis-sweep" in service.scheduler.schedule
    finally:
        service.sync()
    assert filename.parent.is_dir()
    assert list(filename.parent.iterdir()), "the schedule was written"
