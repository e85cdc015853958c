"""Thin Celery tasks of the uploads app (queue `celery`), with the one retry policy of all tasks
(papreview.core.tasks.TRANSIENT_RETRY)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from papreview.core.tasks import TRANSIENT_RETRY


@shared_task(name="papreview.uploads.tasks.uploads_expire", ignore_result=True, **TRANSIENT_RETRY)
def uploads_expire_task() -> int:
    """Celery beat: remove uploads idle for UPLOAD_EXPIRE_AFTER_H hours and their partial files
    (the service `manage.py uploads_expire` calls). Returns how many were removed."""
    from papreview.uploads.services import uploads_expire

    return uploads_expire(older_than=timedelta(hours=settings.UPLOAD_EXPIRE_AFTER_H))
