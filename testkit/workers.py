"""Real Celery worker processes for the tests and benchmarks, on the test PostgreSQL and Redis:
the worker command, one worker (its own process group, so it can be SIGKILLed whole), a pool
of them, the environment they get, and waiting for a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 60


def celery_worker_command(*, hostname: str, queues: str) -> list[str]:
    """A `celery worker` command for the analysis jobs: one process taking one job at a time."""
    return [
        sys.executable, "-m", "celery", "-A", "papreview", "worker",
        "-Q", queues, "--pool", "prefork", "--concurrency", "1",
        "--prefetch-multiplier", "1", "--hostname", hostname,
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip


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

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log: Path,
        *,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """`wrap` turns the command into the one to run (e.g. inside a network namespace)."""
        self.name = name
        self.log = log
        self._log_fh = log.open("wb")
        cmd = celery_worker_command(hostname=f"{name}@%h", queues="inference,celery")
        if wrap is not None:
            cmd = wrap(cmd)
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()[-4000:]}")
            # The child logs this when its pipeline is loaded (or warm-up gave up).
            return " ready." in self.output() and "worker process ready" in self.output()

        wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.name} ready")

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
