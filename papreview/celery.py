"""The Celery application.

Configuration lives in Django settings under the `CELERY_` prefix (see settings/base.py): Redis when
`CELERY_BROKER_URL` is set, kombu's filesystem transport in `var/broker/` otherwise. Jobs are
acknowledged late and rejected when the worker dies, so a killed worker's job runs again; each
worker takes one job at a time; analysis tasks are routed to the `inference` queue, retraining
(`papreview.registry.tasks.retrain_job_run`) to the `training` queue.

Start a worker with `celery -A papreview worker -Q inference,celery,training` (`manage.py
runstack` does).
"""

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")

celery_app = Celery("papreview")
celery_app.config_from_object("django.conf:settings", namespace="CELERY")
celery_app.autodiscover_tasks()


class BeatScheduler(PersistentScheduler):
    """Celery's file-backed beat schedule, whose folder is created before the file is opened
    (`var/` on a fresh clone): CELERY_BEAT_SCHEDULER, for `celery beat` and `worker -B` alike."""

    def _open_schedule(self) -> Any:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open_schedule()
