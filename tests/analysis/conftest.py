"""Fixtures for the analysis tests: small random-weight checkpoints (a real pipeline, untrained),
synthetic field images, and real Celery workers (subprocesses) on the test PostgreSQL and Redis.

The worker subprocess gets the same settings module with DATABASE_URL pointing at pytest-django's
test database (`test_<name>`), the same MEDIA_ROOT and the same checkpoints. Tests that use it need
`transactional_db`, so that the worker sees committed rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from testkit.checkpoints import write_random_checkpoints
from testkit.workers import WorkerPool, purge_queues, worker_env

# Random weights give a few dozen cells per 256 px field with this threshold (just above the
# detector's prior of 0.01): enough cells to check, few enough to write fast.
TINY_THRESHOLD = 0.0105


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Small, randomly initialised detector and classifier checkpoints with full metadata."""
    return write_random_checkpoints(
        tmp_path_factory.mktemp("weights"),
        detector_meta={
            "thresholds": {"cell": TINY_THRESHOLD, "abnormal": TINY_THRESHOLD},
            "data": {"name": "random-init"},
        },
        classifier_meta={
            "temperature": 1.0,
            "abnormal_threshold": 0.3,
            "metrics": {"val": {"accuracy": 0.0}},
        },
    )


@pytest.fixture(scope="session")
def shared_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One media folder for the test process and its workers (they must see the same files)."""
    return tmp_path_factory.mktemp("analysis-media")


@pytest.fixture(autouse=True)
def media_root(settings: Any, shared_media: Path) -> Path:  # overrides tests/conftest.py
    settings.MEDIA_ROOT = shared_media
    return shared_media


@pytest.fixture(autouse=True)
def analysis_settings(settings: Any, tiny_weights: tuple[Path, Path]) -> None:
    settings.ANALYSIS_DEFAULT_DETECTOR = tiny_weights[0]
    settings.ANALYSIS_DEFAULT_CLASSIFIER = tiny_weights[1]
    settings.INFERENCE_DEVICE = "cpu"
    settings.ANALYSIS_PROGRESS_INTERVAL_S = 0.0


@pytest.fixture(scope="module")
def workers(
    django_db_setup: None,
    django_db_blocker: Any,
    tiny_weights: tuple[Path, Path],
    shared_media: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerPool]:
    from django.db import connection

    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    assert db["NAME"].startswith("test_"), db["NAME"]
    env = worker_env(
        database_url,
        settings.CELERY_BROKER_URL,
        shared_media,
        tiny_weights,
        ANALYSIS_RETRY_BACKOFF_S="0.5",
        # Sweeps (only the broker-down test runs beat) send unpublished jobs after 1 s, not 30 s.
        ANALYSIS_PUBLISH_GRACE_S="1",
    )
    with django_db_blocker.unblock():
        purge_queues()
    pool = WorkerPool(env, tmp_path_factory.mktemp("worker-logs"))
    try:
        yield pool
    finally:
        pool.close()
