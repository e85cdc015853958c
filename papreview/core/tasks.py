"""Operational tasks."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="papreview.core.tasks.worker_ping")
def worker_ping_task(token: str = "") -> str:
    """Answer 'pong': proves that a worker consumes the broker (used by tests and by operators:
    `manage.py shell -c "from papreview.core.tasks import worker_ping_task as t; t.delay('x')"`)."""
    logger.info("worker ping %s", token)
    return f"pong {token}".strip()
