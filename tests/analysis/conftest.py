"""Fixtures for the analysis tests: small random-weight checkpoints (a real pipeline, untrained),
synthetic field images, and real Celery workers (subprocesses) on the test PostgreSQL and Redis.

The worker subprocess gets the same settings module with DATABASE_URL pointing at pytest-django's
test database (`test_<name>`), the same MEDIA_ROOT and the same checkpoints. Tests that use it need
`transactional_db`, so that the worker sees committed rows.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from tests.support import celery_worker_command, write_random_checkpoints

ROOT = Path(__file__).resolve().parents[2]
# Random weights give a few dozen cells per 256 px field with this threshold (just above the
# detector's prior of 0.01): enough cells to check, few enough to write fast.
TINY_THRESHOLD = 0.0105
WORKER_START_TIMEOUT_S = 60


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


def field_image(width: int, height: int, *, seed: int = 0, density: int = 40_000) -> np.ndarray:
    """A Pap-like field: pale background, round nuclei in cytoplasm (cheap to draw at any size)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (236, 232, 238), np.uint8)
    for _ in range(max(2, width * height // density)):
        x, y = int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))
        r = int(rng.integers(8, 16))
        cv2.circle(img, (x, y), 3 * r, (200, 170, 205), -1)
        cv2.circle(img, (x, y), r, (70, 50, 120), -1)
    return img


def field_bytes(width: int = 256, height: int = 256, *, seed: int = 0, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(field_image(width, height, seed=seed)).save(buffer, format=fmt)
    return buffer.getvalue()


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(interval)


class Worker:
    """A `celery worker` subprocess (its own process group, so it can be SIGKILLed whole)."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_fh = log.open("wb")
        cmd = celery_worker_command(hostname=f"{name}@%h", queues="inference,celery")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()[-4000:]}")
            # The child logs this when its pipeline is loaded (or warm-up gave up).
            return " ready." in self.output() and "worker process ready" in self.output()

        wait_for(ready, timeout=WORKER_START_TIMEOUT_S, interval=0.1, what=f"{self.name} ready")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool child), as a crash would."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self._log_fh.close()

    def stop(self) -> None:
        if self._log_fh.closed:
            return
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self._log_fh.close()


class WorkerPool:
    """The workers of a test module: `current()` is a live worker, started on demand."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def start(self, **extra_env: str) -> Worker:
        name = f"analysis-test-{len(self.started) + 1}-{os.getpid()}"
        worker = Worker(name, {**self.env, **extra_env}, self.log_dir / f"{name}.log")
        self.started.append(worker)
        worker.wait_ready()
        return worker

    def current(self) -> Worker:
        live = [w for w in self.started if w.alive()]
        return live[-1] if live else self.start()

    def output(self) -> str:
        return "\n".join(w.output() for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.stop()

    def close(self) -> None:
        for worker in self.started:
            worker.stop()


def purge_queues() -> None:
    """Drop jobs left on this broker database by earlier sessions (their slides are gone)."""
    from papreview.celery import celery_app

    with celery_app.connection_for_write() as conn:
        for queue in ("inference", "celery"):
            conn.default_channel.queue_purge(queue)
        client = conn.default_channel.client
        client.delete("unacked", "unacked_index")


def worker_env(
    database_url: str,
    broker_url: str,
    media_root: Path,
    weights: tuple[Path, Path],
    **extra: str,
) -> dict[str, str]:
    """The environment of a real Celery worker process in the tests: test settings, the given
    database, broker, media folder and (tiny) weights, CPU inference, and fast failure recovery."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.analysis.worker_settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "PAPREVIEW_TEST_MEDIA_ROOT": str(media_root),
        "ANALYSIS_DEFAULT_DETECTOR": str(weights[0]),
        "ANALYSIS_DEFAULT_CLASSIFIER": str(weights[1]),
        "INFERENCE_DEVICE": "cpu",
        "INFERENCE_TORCH_THREADS": "1",
        "ANALYSIS_PROGRESS_INTERVAL_S": "0",
        # Small tiles, one per batch: a large field gives many progress steps to interrupt.
        "ANALYSIS_TILE_SIZE": "256",
        "ANALYSIS_BATCH_SIZE": "1",
        # A dead worker's job comes back after 6 s (production: 3 h), looked for every second.
        "CELERY_VISIBILITY_TIMEOUT": "6",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


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
