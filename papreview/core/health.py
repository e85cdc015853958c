"""Reachability checks for /healthz: the database and the Celery broker, with short timeouts;
the media storage in use and this host's media cache figures."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from papreview.core.storage import storage_status

BROKER_TIMEOUT_S = 2.0


def _timed(check: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        detail = check()
        result: dict[str, Any] = {"ok": True}
        if detail:
            result["detail"] = detail
    except Exception as exc:  # any failure means "not reachable"; say why
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:300]}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _check_database() -> str:
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_broker() -> str:
    url: str = settings.CELERY_BROKER_URL
    options: dict[str, Any] = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    if url.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out"):
            folder = Path(options[key])
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                raise OSError(f"broker folder {folder} is missing or not writable")
        return "filesystem"

    from kombu import Connection

    options.update(socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S)
    with Connection(url, transport_options=options, connect_timeout=BROKER_TIMEOUT_S) as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S
        )
        transport: str = conn.transport_cls if isinstance(conn.transport_cls, str) else "broker"
    return transport


def health_report() -> tuple[bool, dict[str, Any]]:
    checks = {"database": _timed(_check_database), "broker": _timed(_check_broker)}
    ok = all(c["ok"] for c in checks.values())
    # media storage and, for object storage, this host's media cache (size, hit rate): staff only
    return ok, {"status": "ok" if ok else "unavailable", **checks, "storage": storage_status()}
