"""The retry policy every Celery task uses, and operational tasks.

`TRANSIENT_RETRY` is the one retry policy: a task declared with `@shared_task(**TRANSIENT_RETRY)`
is retried by Celery when it raises one of TRANSIENT_ERRORS (database or broker connection lost),
with exponential backoff and full jitter (ANALYSIS_RETRY_BACKOFF_S doubling per retry, capped at
ANALYSIS_RETRY_BACKOFF_MAX_S), at most ANALYSIS_MAX_RETRIES times; after that the error fails the
task. Any other error is not retried: it is ours or the user's, and retrying would repeat it.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

# Errors that go away on their own: tasks retry them with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

# Task options: `@shared_task(name=..., **TRANSIENT_RETRY)`. Before retry n (0, 1, ...) Celery
# waits a random whole number of seconds between 0 and min(backoff_max, backoff * 2**n), with a
# backoff of at least 1 s.
TRANSIENT_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": settings.ANALYSIS_RETRY_BACKOFF_S,
    "retry_backoff_max": int(settings.ANALYSIS_RETRY_BACKOFF_MAX_S),
    "retry_jitter": True,
    "max_retries": settings.ANALYSIS_MAX_RETRIES,
}


@shared_task(name="papreview.core.tasks.worker_ping", **TRANSIENT_RETRY)
def worker_ping_task(token: str = "") -> str:
    """Answer 'pong': proves that a worker consumes the broker (used by tests and by operators:
    `manage.py shell -c "from papreview.core.tasks import worker_ping_task as t; t.delay('x')"`)."""
    logger.info("worker ping %s", token)
    return f"pong {token}".strip()
