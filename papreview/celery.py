"""The Celery application.

Configuration lives in Django settings under the `CELERY_` prefix (see settings/base.py): Redis when
`CELERY_BROKER_URL` is set, kombu's filesystem transport in `var/broker/` otherwise. Jobs are
acknowledged late and rejected when the worker dies, so a killed worker's job runs again; each
worker takes one job at a time; analysis tasks are routed to the `inference` queue.

Start a worker with `celery -A papreview worker -Q inference,celery` (`manage.py runstack` does).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")

celery_app = Celery("papreview")
celery_app.config_from_object("django.conf:settings", namespace="CELERY")
celery_app.autodiscover_tasks()
