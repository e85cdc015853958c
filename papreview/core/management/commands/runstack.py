"""`manage.py runstack`: the web server and a Celery worker together, for `make run`.

The web server is gunicorn (runserver with `--server runserver`) on 127.0.0.1:8000, static files
served by WhiteNoise. The worker consumes the `inference`, `celery` and `training` queues with the
embedded beat scheduler, one job at a time. When either process stops, or on Ctrl-C / SIGTERM, the
other is stopped too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from papreview.core.mail import email_backend_description

STOP_TIMEOUT_S = 20


class Command(BaseCommand):
    help = "Start the web server on http://127.0.0.1:8000 and a Celery worker; stop both together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port to serve on.")
        parser.add_argument(
            "--server",
            choices=("gunicorn", "runserver"),
            default="gunicorn"
            if shutil.which("gunicorn") or _venv_bin("gunicorn")
            else "runserver",
        )
        parser.add_argument("--no-worker", action="store_true", help="Only the web server.")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers.")

    def handle(self, *args: Any, **options: Any) -> None:
        addr: str = options["addr"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs: dict[str, subprocess.Popen[bytes]] = {}

        worker_cmd = [
            sys.executable, "-m", "celery", "-A", "papreview", "worker",
            "-Q", "inference,celery,training", "-B", "--concurrency", "1", "--loglevel", "INFO",
            "--hostname", "papreview@%h",
        ]  # fmt: skip
        if options["server"] == "gunicorn":
            gunicorn = _venv_bin("gunicorn") or shutil.which("gunicorn") or "gunicorn"
            web_cmd = [
                gunicorn, "papreview.wsgi:application", "--bind", addr,
                "--workers", str(options["web_workers"]), "--timeout", "300",
                "--access-logfile", "-",
            ]  # fmt: skip
        else:
            web_cmd = [sys.executable, "manage.py", "runserver", addr, "--noreload"]

        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        try:
            if not options["no_worker"]:
                broker = settings.CELERY_BROKER_URL.split("@")[-1]
                self.stdout.write(f"Starting Celery worker (broker: {broker}) ...")
                procs["worker"] = subprocess.Popen(worker_cmd, env=env, cwd=settings.ROOT_DIR)
            self.stdout.write(f"Starting web server ({options['server']}) ...")
            self.stdout.write(email_backend_description())
            procs["web"] = subprocess.Popen(web_cmd, env=env, cwd=settings.ROOT_DIR)
            pids = ", ".join(f"{name} pid {p.pid}" for name, p in procs.items())
            self.stdout.write(f"Started: {pids}")
            self.stdout.write(
                self.style.SUCCESS(f"PapReview is running at http://{addr}  (Ctrl-C stops it)")
            )
            self.stdout.flush()
            while not stopping:
                exited = [name for name, p in procs.items() if p.poll() is not None]
                if exited:
                    name = exited[0]
                    self.stderr.write(f"The {name} process exited (code {procs[name].returncode}).")
                    break
                time.sleep(0.5)
        finally:
            self._stop_all(procs)
        failed = [n for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM, None)]
        if not stopping and failed:
            raise CommandError(f"{', '.join(failed)} stopped unexpectedly.")

    def _stop_all(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        # Web first (no new jobs), then the worker (warm shutdown: it finishes or requeues its job).
        for name in ("web", "worker"):
            proc = procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            self.stdout.write(f"Stopping {name} ...")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _venv_bin(name: str) -> str | None:
    """A console script next to the running interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if os.access(candidate, os.X_OK) else None
