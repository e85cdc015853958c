"""Analysis throughput and queue delay, end to end through real Celery workers. Prints figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/papreview_analysis \
    CELERY_BROKER_URL=redis://127.0.0.1:6379/2 \
    .venv/bin/python benchmarks/bench_analysis.py [--images 20] [--workers 1,2]

1. Throughput: N field images (CRIC images from PAPREVIEW_DATA_DIR when present, synthetic fields
   otherwise) uploaded through `slide_upload` (each commit queues its job), analysed by 1 and by 2
   CPU worker processes (`--concurrency 1` each, torch threads = cores / workers); slides/min from
   the first commit to the last run finished.
2. Queue delay: one slide at a time to an idle worker; the delay from the upload's commit to the
   task claiming its run (AnalysisRun.started_at); median and p90 over --latency-samples.
3. Read-ahead: one large synthetic whole-slide image (pyramidal TIFF) analysed in this process
   with the pipeline's read-ahead (the analyser's `prefetch` option) and without it
   (`--no-prefetch-check` to skip).

Weights: the committed defaults (inference/weights/) when present; otherwise untrained
default-size architectures (the cost of the real models, not their predictions), saying so.
Migrates the database it is given, and needs a real broker (Redis). Not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from testkit.checkpoints import write_random_checkpoints  # noqa: E402
from testkit.workers import celery_worker_command  # noqa: E402


def _setup_django(media: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")
    os.environ["MEDIA_ROOT"] = str(media)
    import django

    django.setup()


def _random_checkpoints(out: Path) -> tuple[Path, Path]:
    """Default-size detector and classifier with random weights; detection threshold just above
    the detector's prior so stage 2 gets candidates to classify."""
    return write_random_checkpoints(
        out,
        small=False,
        detector_meta={"thresholds": {"cell": 0.0105, "abnormal": 0.0105}},
        classifier_meta={"temperature": 1.0},
    )


def _images(n: int, out: Path) -> tuple[list[bytes], str]:
    data_dir = Path(os.environ.get("PAPREVIEW_DATA_DIR", ROOT.parent / "shared" / "data"))
    cric = sorted((data_dir / "cric" / "images").glob("*.jpg"))
    if len(cric) >= n:
        return [p.read_bytes() for p in cric[:n]], f"CRIC field images ({cric[0].parent})"
    import io

    import cv2
    import numpy as np
    from PIL import Image

    images = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        img = np.full((1020, 1376, 3), (236, 232, 238), np.uint8)
        for _ in range(40):
            x, y = int(rng.integers(30, 1346)), int(rng.integers(30, 990))
            r = int(rng.integers(8, 16))
            cv2.circle(img, (x, y), 3 * r, (200, 170, 205), -1)
            cv2.circle(img, (x, y), r, (70, 50, 120), -1)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=92)
        images.append(buf.getvalue())
    return images, "synthetic 1376x1020 fields"


class Workers:
    def __init__(self, count: int, env: dict[str, str], logs: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for i in range(count):
            log = logs / f"worker-{count}-{i}.log"
            self.logs.append(log)
            cmd = celery_worker_command(hostname=f"bench-{count}-{i}@%h", queues="inference")
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 180
        while not all("worker process ready" in p.read_text(errors="replace") for p in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise SystemExit("workers did not start:\n" + self.logs[0].read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _upload(patient: Any, content: bytes, name: str) -> tuple[int, float]:
    """Create a slide (its job is published on commit); returns its id and the commit time."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from papreview.uploads.services import slide_upload

    committed: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.time()))  # runs before the publish
        slide = slide_upload(patient=patient, file=SimpleUploadedFile(name, content))
    return slide.pk, committed[0]


def _wait_done(slide_ids: list[int], timeout: float) -> float:
    from papreview.analysis.models import AnalysisRun, RunStatus

    deadline = time.monotonic() + timeout
    while True:
        runs = AnalysisRun.objects.filter(slide_id__in=slide_ids)
        states = list(runs.values_list("status", flat=True))
        if len(states) == len(slide_ids) and all(
            s in (RunStatus.SUCCEEDED, RunStatus.FAILED) for s in states
        ):
            failed = runs.filter(status=RunStatus.FAILED)
            if failed.exists():
                raise SystemExit(f"runs failed: {list(failed.values_list('error', flat=True))[:3]}")
            return time.time()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out; run states: {states}")
        time.sleep(0.05)


def _patient(tag: str) -> Any:
    from papreview.cases.services import patient_create

    return patient_create(identifier=f"BENCH-{tag}-{os.getpid()}-{time.time_ns()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument(
        "--workers", default="1,2,1,2", help="worker counts, in order (repeats show the noise)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)"
    )
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--weights", choices=("auto", "random"), default="auto")
    parser.add_argument("--no-prefetch-check", action="store_true")
    parser.add_argument("--wsi-size", type=int, default=8192, help="read-ahead check slide side")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's rows")
    args = parser.parse_args()

    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
        raise SystemExit("set CELERY_BROKER_URL to a Redis URL (and DATABASE_URL to PostgreSQL)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    media = tmp / "media"
    _setup_django(media)

    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from papreview.analysis.models import AnalysisRun, ModelStage
    from papreview.analysis.services import model_version_register
    from papreview.cases.models import Patient, Slide
    from papreview.celery import celery_app

    default_det = Path(settings.ANALYSIS_DEFAULT_DETECTOR)
    default_cls = Path(settings.ANALYSIS_DEFAULT_CLASSIFIER)
    if args.weights == "auto" and default_det.is_file() and default_cls.is_file():
        det, cls, weights = default_det, default_cls, "committed default weights"
    else:
        det, cls = _random_checkpoints(tmp)
        weights = "UNTRAINED default-size architectures (no committed weights yet)"
    detector = model_version_register(stage=ModelStage.DETECTOR, path=det, activate=True)
    classifier = model_version_register(stage=ModelStage.CLASSIFIER, path=cls, activate=True)
    images, source = _images(args.images, tmp)
    cores = os.cpu_count() or 1
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("inference")

    print(f"weights: {weights}: {detector.name} + {classifier.name}")
    print(f"images: {len(images)} x {source}; cores: {cores}; load avg: {os.getloadavg()}")
    created: list[int] = []
    latency_done = False
    base_env = {
        **os.environ,
        "MEDIA_ROOT": str(media),
        "INFERENCE_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    try:
        for count in [int(c) for c in args.workers.split(",") if c.strip()]:
            threads = args.threads or max(1, cores // count)
            env = {**base_env, "INFERENCE_TORCH_THREADS": str(threads)}
            workers = Workers(count, env, tmp)
            try:
                patient = _patient(f"w{count}")
                created.append(patient.pk)
                ids: list[int] = []
                first_commit = None
                for i, content in enumerate(images):
                    slide_id, committed = _upload(patient, content, f"field-{i}.jpg")
                    ids.append(slide_id)
                    first_commit = first_commit or committed
                assert first_commit is not None
                finished = _wait_done(ids, timeout=3600)
                elapsed = finished - first_commit
                runs = AnalysisRun.objects.filter(slide_id__in=ids)
                per_slide = statistics.median(r.timings.get("total", 0.0) for r in runs)
                cells = sum(r.cells.count() for r in runs)
                print(
                    f"{count} CPU worker(s) x {threads} torch thread(s): {len(ids)} slides in "
                    f"{elapsed:.1f} s = {len(ids) / elapsed * 60:.1f} slides/min "
                    f"(median pipeline time per slide {per_slide:.2f} s, {cells} cells)"
                )
                if count == 1 and args.latency_samples and not latency_done:
                    latency_done = True
                    delays = []
                    for i in range(args.latency_samples):
                        patient = _patient(f"latency{i}")
                        created.append(patient.pk)
                        content = images[i % len(images)]
                        slide_id, committed = _upload(patient, content, f"l{i}.jpg")
                        _wait_done([slide_id], timeout=600)
                        run = AnalysisRun.objects.get(slide_id=slide_id)
                        assert run.started_at is not None
                        delays.append((run.started_at.timestamp() - committed) * 1000)
                    delays.sort()
                    p90 = delays[max(0, round(0.9 * len(delays)) - 1)]
                    print(
                        f"queue delay, commit -> task start (idle worker, {len(delays)} slides): "
                        f"median {statistics.median(delays):.1f} ms, p90 {p90:.1f} ms, "
                        f"min {delays[0]:.1f} ms, max {delays[-1]:.1f} ms"
                    )
            finally:
                workers.stop()

        if not args.no_prefetch_check:
            _prefetch_check(tmp, detector, classifier, args.wsi_size, cores)
    finally:
        if not args.keep:
            Slide.objects.filter(patient_id__in=created).delete()
            Patient.objects.filter(pk__in=created).delete()


def _prefetch_check(tmp: Path, detector: Any, classifier: Any, side: int, cores: int) -> None:
    import torch
    from django.conf import settings

    from inference.interface import open_analyser
    from inference.synthetic import write_pyramidal_tiff
    from papreview.analysis import adapter

    torch.set_num_threads(max(1, cores - 1))  # leave the reader a core, as a GPU worker would
    path = write_pyramidal_tiff(tmp / "wsi.tiff", side, side, levels=4, mpp=0.25)
    paths = [adapter.model_version_local_path(mv) for mv in (detector, classifier)]
    batch = settings.ANALYSIS_BATCH_SIZE
    analysers = {  # read-ahead of `depth` batches of detector tiles
        depth: open_analyser(*paths, device="cpu", batch_size=batch, prefetch=depth * batch)
        for depth in (0, 2)
    }
    analysers[0].analyse(path)  # warm caches
    results: dict[int, list[float]] = {}
    timings: dict[int, dict[str, float]] = {}
    for depth in (0, 2, 0, 2):
        t = time.perf_counter()
        result = analysers[depth].analyse(path)
        results.setdefault(depth, []).append(time.perf_counter() - t)
        timings[depth] = result.timings
    plain, ahead = min(results[0]), min(results[2])
    print(
        f"read-ahead ({side}x{side} px pyramidal TIFF, {int(timings[0]['tiles'])} detector "
        f"tiles, {torch.get_num_threads()} torch threads): without {plain:.2f} s (reading "
        f"{timings[0]['read']:.2f} s of it), with 2 batches ahead {ahead:.2f} s (model waited "
        f"{timings[2]['wait']:.2f} s for tiles); {(plain - ahead) / plain * 100:+.0f}% time saved"
    )


if __name__ == "__main__":
    main()
