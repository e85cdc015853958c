"""The one place the web side calls the `inference` library.

* `pipeline_for(detector=..., classifier=...)` opens the two-stage analyser
  (`inference.interface.open_analyser`, the library's one interface) for two ModelVersion
  rows ONCE per process and caches it (module cache; a worker warms it up in
  `worker_process_init`, see tasks.py). A new active version loads a new pipeline on the next job.
* `checkpoint_describe(path)` reads a checkpoint's stage, version and metadata (for registering a
  ModelVersion row; the registration itself is a service).
* `slide_analyse(pipeline, path, progress=...)` runs the analyser over a slide (`analyse`); it was
  opened with the library's read-ahead (a background thread reads the next
  ANALYSIS_PREFETCH_BATCHES batches of detector tiles while the models work on the current one).
  Result: `inference.types.SlideResult`.
* `cells_from_result(...)` turns the result's `CellPrediction`s into unsaved `Cell` rows.

Errors: everything a bad input causes arrives as `inference.errors.InputError` (unreadable slide,
too large, bad checkpoint); the services turn it into a failed run with the message as reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.data.leaks import file_sha256
from inference.errors import CheckpointError, UnreadableSlideError
from inference.interface import CellAnalyser, open_analyser
from inference.types import ProgressCallback, SlideResult
from papreview.analysis.models import AnalysisRun, ModelVersion
from papreview.cases.models import Slide
from papreview.core.storage import StoredFileMissingError, storage_local_file, storage_local_path
from papreview.review.models import Cell, ReviewStatus

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Checkpoints and model versions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointDescription:
    stage: str
    version: str
    sha256: str
    meta: dict[str, Any]


def checkpoint_describe(path: Path, *, stage: str) -> CheckpointDescription:
    """Validate a checkpoint of `stage` and read its version string and metadata.

    Raises `CheckpointError` (an InputError) when the file is missing, corrupt or of another stage.
    """
    from inference.checkpoints import load_checkpoint  # torch: only where a checkpoint is read

    ckpt = load_checkpoint(Path(path), stage=stage)
    meta = {k: v for k, v in ckpt.meta.items() if k != "config"}
    return CheckpointDescription(
        stage=stage, version=ckpt.version, sha256=file_sha256(Path(path)), meta=meta
    )


def model_version_local_path(model_version: ModelVersion) -> Path:
    """A local file with the version's weights (`storage_local_path`: in place on local disk,
    else from this host's media cache, fetched once from object storage)."""
    name = model_version.file.name
    if not name:
        raise CheckpointError(f"model version {model_version} has no weights file")
    try:
        return storage_local_path(name, version=model_version.sha256)
    except StoredFileMissingError as exc:
        raise CheckpointError(f"weights of {model_version} not found in storage ({name})") from exc


# --------------------------------------------------------------------------------------------
# The pipeline, once per process
# --------------------------------------------------------------------------------------------

_pipeline_lock = threading.Lock()
_pipeline_cache: dict[str, Any] = {"key": None, "pipeline": None, "loads": 0}


def _pipeline_key(detector: ModelVersion, classifier: ModelVersion) -> tuple[Any, ...]:
    """The same weights (by digest) on the same device with the same options: the same pipeline."""
    return (
        detector.sha256 or detector.pk,
        classifier.sha256 or classifier.pk,
        settings.INFERENCE_DEVICE,
        settings.ANALYSIS_BATCH_SIZE,
        settings.ANALYSIS_TILE_SIZE,
        settings.ANALYSIS_PREFETCH_BATCHES,
    )


def pipeline_for(*, detector: ModelVersion, classifier: ModelVersion) -> CellAnalyser:
    """The analyser for these two versions, loaded at most once per process (cached)."""
    key = _pipeline_key(detector, classifier)
    with _pipeline_lock:
        if _pipeline_cache["key"] == key:
            pipeline: CellAnalyser = _pipeline_cache["pipeline"]
            return pipeline
        _pipeline_cache.update(key=None, pipeline=None)  # free the old models first
        t0 = time.perf_counter()
        paths = []
        for mv in (detector, classifier):
            path = model_version_local_path(mv)
            if mv.sha256 and file_sha256(path) != mv.sha256:
                raise CheckpointError(
                    f"weights of {mv} do not match their recorded sha256 (file changed or "
                    "corrupt); register the file again"
                )
            paths.append(path)
        batch = settings.ANALYSIS_BATCH_SIZE
        pipeline = open_analyser(
            paths[0],
            paths[1],
            device=settings.INFERENCE_DEVICE,
            cpu_bf16=settings.INFERENCE_CPU_BF16,
            batch_size=batch,
            tile_size=settings.ANALYSIS_TILE_SIZE,
            max_pixels=settings.SLIDE_MAX_PIXELS,
            # read-ahead: a reader thread keeps this many detector tiles decoded ahead
            prefetch=max(0, settings.ANALYSIS_PREFETCH_BATCHES) * batch,
        )
        _pipeline_cache.update(key=key, pipeline=pipeline, loads=_pipeline_cache["loads"] + 1)
        logger.info(
            "pipeline loaded in %.2fs: %s + %s",
            time.perf_counter() - t0,
            detector.name,
            classifier.name,
        )
        return pipeline


def pipeline_loads() -> int:
    """How many times this process loaded a pipeline (for tests and operators)."""
    return int(_pipeline_cache["loads"])


def pipeline_forget() -> None:
    with _pipeline_lock:
        _pipeline_cache.update(key=None, pipeline=None)


# --------------------------------------------------------------------------------------------
# Slides
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def slide_local_path(slide: Slide) -> Iterator[Path]:
    """The slide's file as a local path (`storage_local_file`: in place on local disk, else this
    host's media cache, fetched once from object storage and held while the block runs).

    A file that storage no longer has is an `UnreadableSlideError` (permanent: show it, no retry).
    """
    name = slide.file.name
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(storage_local_file(name or "", version=slide.sha256))
        except StoredFileMissingError as exc:
            raise UnreadableSlideError(
                f"{slide.original_filename}: the stored file is missing ({name or 'no name'}); "
                "upload the slide again."
            ) from exc
        yield path


def slide_analyse(
    pipeline: CellAnalyser, path: Path, *, progress: ProgressCallback | None = None
) -> SlideResult:
    """Find and classify the cells of a slide file (the analyser's read-ahead applies)."""
    return pipeline.analyse(Path(path), progress=progress)


# --------------------------------------------------------------------------------------------
# Results -> rows
# --------------------------------------------------------------------------------------------


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def cells_from_result(
    result: SlideResult,
    *,
    slide: Slide,
    run: AnalysisRun,
    keep_boxes: Sequence[tuple[int, int, int, int]] = (),
    overlap: float = 0.5,
) -> list[Cell]:
    """Unsaved predicted cells for the run; boxes clipped to the slide.

    A prediction that overlaps a box in `keep_boxes` (cells a reviewer already handled) by IoU
    >= `overlap` is left out, so a re-run does not put a second cell on a reviewed one.
    """
    cells: list[Cell] = []
    for pred in result.cells:
        box = pred.box
        x0, y0 = max(0, box.x), max(0, box.y)
        x1, y1 = min(slide.width, box.x + box.width), min(slide.height, box.y + box.height)
        if x1 <= x0 or y1 <= y0:
            continue
        xywh = (x0, y0, x1 - x0, y1 - y0)
        if any(_iou(xywh, kept) >= overlap for kept in keep_boxes):
            continue
        cells.append(
            Cell(
                slide=slide,
                run=run,
                x=xywh[0],
                y=xywh[1],
                width=xywh[2],
                height=xywh[3],
                predicted_class=pred.label,
                current_class=pred.label,
                probabilities={k: round(float(v), 6) for k, v in pred.probabilities.items()},
                detection_score=min(1.0, max(0.0, float(pred.detection_score))),
                focal_plane=max(0, int(pred.plane)),
                review_status=ReviewStatus.PREDICTED,
            )
        )
    return cells


def most_severe(cells: Sequence[Cell]) -> tuple[str, float] | None:
    """The (class, confidence) that ranks the slide: the cell with the highest triage score
    (its class's severity weighted by the probability the classifier gave it)."""
    from papreview.cases.services import triage_score_for

    best: tuple[float, str, float] | None = None
    for cell in cells:
        confidence = float(cell.probabilities.get(cell.predicted_class, 0.0))
        score = triage_score_for(cell.predicted_class, confidence)
        if best is None or score > best[0]:
            best = (score, cell.predicted_class, confidence)
    return None if best is None else (best[1], best[2])


def progress_throttle(
    write: Callable[[int, int], None], *, interval_s: float
) -> Callable[[int, int], None]:
    """A progress callback that calls `write(done, total)` at most every `interval_s` seconds,
    always for the first and the last call."""
    last = {"t": -1e18}

    def callback(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last["t"] >= interval_s:
            last["t"] = now
            write(done, total)

    return callback
