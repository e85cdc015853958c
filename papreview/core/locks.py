"""Locks across processes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def advisory_lock(*, namespace: int, key: int, what: str) -> Iterator[bool]:
    """Try to take a session-level PostgreSQL advisory lock; yields whether it was taken.

    Held only while its process lives (the server frees it when the connection drops), so a job
    delivered again can tell a dead execution (lock free) from a live one (lock held). Other
    databases (SQLite: one process) always yield True. `what` names the locked thing in logs.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        row = cursor.fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
            except DatabaseError:  # the connection is gone, and the lock with it
                logger.warning("%s: could not release its lock", what)
