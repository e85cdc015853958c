"""Two worker hosts, one killed mid-run: every slide analysed exactly once. Prints figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/papreview_multihost \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/8 \
    .venv/bin/python benchmarks/multihost.py [--slides 20] [--size 1024]      (as root)

Simulated on this machine (testkit/netns.py): two Linux network namespaces ("hosts" a and b),
each joined to this one by a veth link, each running a Celery worker (`--concurrency 1`) that
reaches the shared PostgreSQL, Redis and S3 server (moto's, started here on loopback) over its
link only, at this side's address of the link (10.201.{1,2}.1, or the next free 10.x prefix).
Each host has its own media cache and an empty MEDIA_ROOT: all media is in the bucket.

20 field images are uploaded through `slide_upload` (stored in the bucket, jobs queued on
commit); once host a is part way through a run, its worker is SIGKILLed whole (a host lost).
The survivor must analyse every slide exactly once: one succeeded run per slide, its cells
written once, one completion ("run N of slide M: K cells") in all logs together. Printed: which
host did what, the time from the kill to the lost run restarting on host b and to its slide
analysed (time to recover: the broker's visibility timeout, 6 s in the test settings), total.

Without CAP_NET_ADMIN it falls back to two workers reaching the services through distinct
loopback addresses (127.0.0.2, .3) and says so: that is NOT a network namespace. The database
must be named *_multihost: it is created when missing, migrated and EMPTIED. Test settings:
tiny random weights, CPU. Also run by tests/storage/test_multihost.py (about 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from testkit.checkpoints import write_random_checkpoints  # noqa: E402
from testkit.images import field_bytes  # noqa: E402
from testkit.netns import loopback_hosts, netns_available, simulated_hosts  # noqa: E402
from testkit.s3server import S3Server  # noqa: E402
from testkit.workers import Worker, purge_queues, wait_for, worker_env  # noqa: E402

DONE = re.compile(r"run (\d+) of slide (\d+): \d+ cells")
POOL = 2  # DB_POOL_MAX_SIZE of the workers: the run's slide writes and its heartbeat thread
STARTED = re.compile(r"slide (\d+): run (\d+) attempt (\d+) started")


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}{host}:{parts.port}"))


def _setup(
    database_url: str, tmp: Path, s3: S3Server, bucket: str, weights: tuple[Path, Path]
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    if not name.endswith("_multihost"):
        raise SystemExit(f"{name}: give a database named *_multihost (it is emptied)")
    admin = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    exists = subprocess.run(
        ["psql", admin, "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not exists:
        subprocess.run(["psql", admin, "-c", f'CREATE DATABASE "{name}"'], check=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="papreview.settings.test",
        DATABASE_URL=database_url,
        MEDIA_ROOT=str(tmp / "media-web"),
        MEDIA_CACHE_DIR=str(tmp / "cache-web"),
        ANALYSIS_DEFAULT_DETECTOR=str(weights[0]),
        ANALYSIS_DEFAULT_CLASSIFIER=str(weights[1]),
        INFERENCE_DEVICE="cpu",
        **s3.env(bucket),
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)


def _upload(n: int, size: int) -> list[int]:
    from django.core.files.base import ContentFile

    from papreview.accounts.roles import Role
    from papreview.uploads.services import slide_upload
    from tests.factories import PatientFactory, UserFactory

    user = UserFactory.create(role=Role.PATHOLOGIST)
    ids = []
    for i in range(n):
        image = ContentFile(field_bytes(size, size, seed=1000 + i), name=f"field-{i}.png")
        slide = slide_upload(patient=PatientFactory.create(), file=image, uploaded_by=user)
        ids.append(slide.pk)
    return ids


def _check_exactly_once(ids: list[int], logs: dict[str, str]) -> dict[str, Any]:
    from papreview.analysis.models import AnalysisRun, RunStatus
    from papreview.cases.models import Slide, SlideStatus
    from papreview.review.models import Cell

    completions: dict[int, list[str]] = {}
    for host, text in logs.items():
        for _run, slide in DONE.findall(text):
            completions.setdefault(int(slide), []).append(host)
    problems = []
    for slide_id in ids:
        slide = Slide.objects.get(pk=slide_id)
        runs = list(AnalysisRun.objects.filter(slide_id=slide_id))
        cells = Cell.objects.filter(slide_id=slide_id)
        boxes = list(cells.values_list("x", "y", "width", "height"))
        if slide.status != SlideStatus.ANALYSED:
            problems.append(f"slide {slide_id} is {slide.status}: {slide.failure_reason}")
        if len(runs) != 1 or runs[0].status != RunStatus.SUCCEEDED:
            problems.append(f"slide {slide_id}: runs {[(r.pk, r.status) for r in runs]}")
        if len(set(boxes)) != len(boxes) or set(cells.values_list("run_id", flat=True)) - {
            r.pk for r in runs
        }:
            problems.append(f"slide {slide_id}: cells written twice or by another run")
        if len(completions.get(slide_id, [])) != 1:
            problems.append(f"slide {slide_id} completed {completions.get(slide_id)}")
    by_host = {h: sum(1 for v in completions.values() if v == [h]) for h in logs}
    return {"problems": problems, "completed_by_host": by_host}


class ConnectionPeak:
    """The most server connections to the database seen at once (sampled every 50 ms)."""

    def __init__(self, database_url: str) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._url = database_url
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psycopg

        name = urlsplit(self._url).path.lstrip("/")
        with psycopg.connect(self._url, autocommit=True, application_name="peak") as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND application_name <> 'peak'",
                    [name],
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def run(slides: int = 20, size: int = 1024, database_url: str | None = None) -> dict[str, Any]:
    database_url = database_url or os.environ["DATABASE_URL"]
    broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/8")
    tmp = Path(tempfile.mkdtemp(prefix="papreview-multihost-"))
    s3 = S3Server(tmp / "moto.log")
    try:
        bucket = s3.new_bucket()
        weights = write_random_checkpoints(
            tmp / "weights",
            detector_meta={"thresholds": {"cell": 0.0105, "abnormal": 0.0105}},
            classifier_meta={"temperature": 1.0},
        )
        _setup(database_url, tmp, s3, bucket, weights)
        purge_queues()
        namespaces = netns_available()
        hosts_of = simulated_hosts if namespaces else loopback_hosts
        ports = [urlsplit(database_url).port or 5432, urlsplit(broker_url).port or 6379, s3.port]
        with hosts_of(["a", "b"], ports=ports) as hosts:
            workers = {}
            peak = ConnectionPeak(database_url)
            try:
                for host in hosts:
                    env = worker_env(
                        _with_host(database_url, host.gateway),
                        _with_host(broker_url, host.gateway),
                        tmp / f"media-{host.name}",  # stays empty: media is in the bucket
                        weights,
                        **s3.env(bucket, endpoint=f"http://{host.gateway}:{s3.port}"),
                        MEDIA_CACHE_DIR=str(tmp / f"cache-{host.name}"),
                        ANALYSIS_TILE_SIZE="256",
                    )
                    workers[host.name] = Worker(
                        f"host-{host.name}", env, tmp / f"{host.name}.log", wrap=host.command
                    )
                for worker in workers.values():
                    worker.wait_ready(timeout=180)
                t0 = time.monotonic()
                ids = _upload(slides, size)
                t_queued = time.monotonic() - t0

                def a_mid_run() -> tuple[str, str] | None:
                    from papreview.analysis.models import AnalysisRun, RunStatus

                    started = STARTED.findall(workers["a"].output())
                    done = {r for r, _s in DONE.findall(workers["a"].output())}
                    live = [(s, r) for s, r, _a in started if r not in done]
                    if len(done) >= 2 and live:
                        run = AnalysisRun.objects.get(pk=int(live[-1][1]))
                        if run.status == RunStatus.RUNNING and run.tiles_done >= 1:
                            return live[-1]
                    return None

                lost_slide, lost_run = wait_for(
                    a_mid_run, timeout=120, interval=0.02, what="a mid-run"
                )
                workers["a"].kill()
                t_kill = time.monotonic()
                restarted = f"slide {lost_slide}: run {lost_run} attempt 2 started"
                wait_for(
                    lambda: restarted in workers["b"].output(), timeout=120, what="restart on b"
                )
                t_restart = time.monotonic()

                def slide_done(slide_id: int | str) -> bool:
                    from papreview.cases.models import Slide, SlideStatus

                    return Slide.objects.get(pk=slide_id).status == SlideStatus.ANALYSED

                wait_for(lambda: slide_done(lost_slide), timeout=120, what="the lost slide")
                t_recovered = time.monotonic()
                wait_for(lambda: all(slide_done(i) for i in ids), timeout=300, interval=0.2)
                t_all = time.monotonic()
                logs = {name: w.output() for name, w in workers.items()}
            finally:
                for worker in workers.values():
                    worker.stop()
                connections_peak = peak.stop()
            check = _check_exactly_once(ids, logs)
        media_files = [p for p in tmp.glob("media-*/**/*") if p.is_file()]
        result = {
            "simulation": "network namespaces + veth links"
            if namespaces
            else "NOT namespaces: two workers on distinct loopback addresses (no CAP_NET_ADMIN)",
            "hosts": [h.__dict__ for h in hosts],
            "slides": slides,
            "slide_px": f"{size}x{size}",
            "queued_s": round(t_queued, 2),
            "lost_run": {"slide": int(lost_slide), "run": int(lost_run)},
            "kill_to_restart_on_b_s": round(t_restart - t_kill, 2),
            "time_to_recover_s": round(t_recovered - t_kill, 2),
            "total_s": round(t_all - t0, 2),
            "files_in_bucket": len(s3.keys(bucket)),
            # 2 hosts x (worker + pool child) x POOL, plus this process (uploads, checks)
            "db_pool_max_size": POOL,
            "db_connections_peak": connections_peak,
            "files_in_local_media": len(media_files),
            **check,
        }
        shutil.rmtree(tmp, ignore_errors=True)  # kept, with the workers' logs, on failure
        return result
    finally:
        s3.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024, help="field image side, pixels")
    args = parser.parse_args()
    result = run(args.slides, args.size)
    print(json.dumps(result, indent=2))
    print("RESULT", json.dumps(result))
    if result["problems"]:
        raise SystemExit(1)
    print(
        f"{result['slides']} slides, host a killed mid-run: every slide analysed exactly once "
        f"({result['completed_by_host']}); time to recover {result['time_to_recover_s']} s "
        f"(restart on b after {result['kill_to_restart_on_b_s']} s); total {result['total_s']} s"
    )


if __name__ == "__main__":
    main()
