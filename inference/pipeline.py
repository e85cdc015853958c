"""The two stages chained over a slide: batched, device-aware, memory bounded.

    pipeline = Pipeline.default()                       # committed weights, device auto
    result = pipeline.analyse(path, progress=callback)  # SlideResult (types.py)
    calls = pipeline.classify_crops(crops, scores)      # stage 2 alone, same decision rule

`Pipeline` is the implementation of `inference.interface.CellAnalyser`, the one interface the
worker, the registry's evaluation and the CLI use (open it with `interface.open_analyser`).

Stage 1 runs on a downsampled view (for a whole-slide image: the pyramid level at or just above
the detector's scale, read tile by tile and resized); stage 2 classifies level-0 crops centred
on each candidate. Tiles overlap, and each candidate belongs to the tile whose centre is nearest
(so nothing is found twice). Only one batch of tiles and its crops is in memory at a time
(with read-ahead, also up to `prefetch` tiles ahead and, stage 2 running one batch behind,
about 40 MB of stage-2 crops read ahead).

Longer than our ~400-line norm (about 790): `Pipeline` is one object whose tile reading,
batching, both stages and merging share its state (device, models, thresholds, prefetch
thread); split, its parts would only pass that state back and forth.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .checkpoints import Checkpoint, load_checkpoint, load_weights
from .classifier import (
    TTA_VIEW_COUNTS,
    CellClassifier,
    Classifier,
    ClassifierConfig,
    ClassifierEnsemble,
    build_classifier,
    decide_labels,
    dihedral_mean_logits,
    fold_not_a_cell,
    normalise_crops,
    not_a_cell_mask,
    stage2_classes,
)
from .detector import DetectorConfig, DetectorNet, Peak, build_detector, decode, normalise
from .errors import CheckpointError
from .folding import fold_batch_norms
from .fusion import Fusion
from .readahead import ReadAhead
from .slides import DEFAULT_MAX_PIXELS, FieldReader, SlideReader, Tile, open_slide, tile_grid
from .types import (
    BETHESDA_CLASSES,
    Box,
    CellPrediction,
    CropCalls,
    ProgressCallback,
    SlideInfo,
    SlideResult,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_DETECTOR = WEIGHTS_DIR / "detector.pt"
DEFAULT_CLASSIFIER = WEIGHTS_DIR / "classifier.pt"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for but no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r} (auto, cpu or cuda)")
    return torch.device(device)


_Candidate = tuple[float, float, float, int]  # a stage-1 peak: x, y, abnormal score, source


@dataclass
class _TileJob:
    """One detector tile: its pixels at the detector scale and where they sit at level 0."""

    pixels: np.ndarray  # (h, w, 3) uint8 at the detector's input scale
    origin: tuple[float, float]  # level-0 position of the tile's top-left pixel
    scale: float  # detector input pixels per level-0 pixel
    core: tuple[float, float, float, float]  # level-0 x0, y0, x1, y1 this tile owns
    source: int  # index of the slide/field it comes from


def _core_bounds(starts: list[int], tile: int, length: int) -> dict[int, tuple[float, float]]:
    """Per tile start: the half-open interval (in the same pixels) of points it owns, split at
    the midpoints between neighbouring tile centres."""
    centres = [s + min(tile, length - s) / 2.0 for s in starts]
    out = {}
    for i, s in enumerate(starts):
        lo = -math.inf if i == 0 else (centres[i - 1] + centres[i]) / 2.0
        hi = math.inf if i == len(starts) - 1 else (centres[i] + centres[i + 1]) / 2.0
        out[s] = (lo, hi)
    return out


def _padded_shape(tiles: Sequence[np.ndarray], multiple: int = 16) -> tuple[int, int]:
    """The (height, width) a batch of these tiles is padded to (multiples of `multiple`)."""
    H = max(t.shape[0] for t in tiles)
    W = max(t.shape[1] for t in tiles)
    return math.ceil(H / multiple) * multiple, math.ceil(W / multiple) * multiple


def _pad_batch(
    tiles: Sequence[np.ndarray], multiple: int = 16, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """The tiles in one (N, H, W, 3) array, padded with white to `shape` (by default the
    smallest multiple of `multiple` that holds them all)."""
    H, W = shape or _padded_shape(tiles, multiple)
    batch = np.full((len(tiles), H, W, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        batch[i, : t.shape[0], : t.shape[1]] = t
    return batch


class Pipeline:
    """Stage 1 detector + stage 2 classifier, loaded once, run on many slides."""

    def __init__(
        self,
        detector: DetectorNet,
        detector_meta: dict[str, Any],
        classifier: Classifier,
        classifier_meta: dict[str, Any],
        *,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        tile_size: int = 1024,
        tile_overlap: int = 64,
        crop_batch_size: int = 256,
        cell_threshold: float | None = None,
        abnormal_threshold: float | None = None,
        decision_threshold: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        model_mpp: float | None = None,
        amp: bool = True,
        cpu_bf16: bool = False,
        skip_background: bool = True,
        use_fusion: bool = True,
        tta_views: int | None = None,
        prefetch: int = 0,
    ) -> None:
        self.device = resolve_device(device)
        # channels-last weights: the NHWC input batches then run without layout conversions
        cl = torch.channels_last
        # batch norms folded into their convolutions (a copy: the caller's models stay as given)
        self.detector = fold_batch_norms(detector).to(self.device).to(memory_format=cl)
        self.classifier = fold_batch_norms(classifier).to(self.device).to(memory_format=cl)
        self.detector_meta = detector_meta
        self.classifier_meta = classifier_meta
        self.det_config: DetectorConfig = detector.config
        self.cls_config: ClassifierConfig = classifier.config
        self.classes = stage2_classes(self.cls_config)  # stage 2's outputs, in order
        thresholds = detector_meta.get("thresholds", {})
        self.cell_threshold = float(
            cell_threshold if cell_threshold is not None else thresholds.get("cell", 0.3)
        )
        self.abnormal_threshold = float(
            abnormal_threshold
            if abnormal_threshold is not None
            else thresholds.get("abnormal", 0.1)
        )
        self.decision_threshold = float(
            decision_threshold
            if decision_threshold is not None
            else classifier_meta.get("abnormal_threshold", 0.5)
        )
        # crops with no stage-1 score (a crop folder) are decided without the fusion, at the
        # classifier's own threshold
        self.unfused_threshold = self.decision_threshold
        self.temperature = float(classifier_meta.get("temperature", 1.0))
        # test-time augmentation: the fusion and thresholds are fitted with the checkpoint's views
        views = tta_views if tta_views is not None else classifier_meta.get("tta_views", 1)
        if views not in TTA_VIEW_COUNTS:
            raise ValueError(f"tta_views must be one of {TTA_VIEW_COUNTS}, got {views!r}")
        self.tta_views = int(views)
        # late fusion with stage 1's abnormal score, when fitted for this very detector
        self.fusion: Fusion | None = None
        fusion = classifier_meta.get("fusion")
        if use_fusion and isinstance(fusion, dict):
            candidate = Fusion.from_dict(fusion)
            if candidate.detector_version == detector_meta.get("version"):
                self.fusion = candidate
                if decision_threshold is None:
                    self.decision_threshold = candidate.abnormal_threshold
        self.batch_size = max(1, batch_size)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.crop_batch_size = crop_batch_size
        self.max_pixels = max_pixels
        self.model_mpp = model_mpp if model_mpp is not None else classifier_meta.get("model_mpp")
        self.amp = amp and self.device.type == "cuda"
        self.cpu_bf16 = cpu_bf16 and self.device.type == "cpu"
        self.skip_background = skip_background
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more tiles, not {prefetch}")
        self.prefetch = prefetch

    # -------------------------------------------------------------- construction

    @classmethod
    def from_checkpoints(
        cls,
        detector_path: Path,
        classifier_path: Path,
        *,
        device: str | torch.device = "auto",
        **kwargs: Any,
    ) -> Pipeline:
        det_ckpt = load_checkpoint(Path(detector_path), stage="detector")
        cls_ckpt = load_checkpoint(Path(classifier_path), stage="classifier")
        detector = load_weights(_build(det_ckpt, build_detector), det_ckpt)
        classifier = load_weights(_build(cls_ckpt, build_classifier), cls_ckpt)
        assert isinstance(detector, DetectorNet)
        assert isinstance(classifier, CellClassifier | ClassifierEnsemble)
        det_meta = dict(det_ckpt.meta, version=det_ckpt.version)
        cls_meta = dict(cls_ckpt.meta, version=cls_ckpt.version)
        return cls(detector, det_meta, classifier, cls_meta, device=device, **kwargs)

    @classmethod
    def default(cls, device: str | torch.device = "auto", **kwargs: Any) -> Pipeline:
        """The committed default weights (inference/weights/)."""
        return cls.from_checkpoints(DEFAULT_DETECTOR, DEFAULT_CLASSIFIER, device=device, **kwargs)

    @property
    def versions(self) -> dict[str, str]:
        return {
            "detector": str(self.detector_meta.get("version", "unknown")),
            "classifier": str(self.classifier_meta.get("version", "unknown")),
        }

    # -------------------------------------------------------------- public API

    def analyse(
        self, path: Path, *, progress: ProgressCallback | None = None, prefetch: int | None = None
    ) -> SlideResult:
        """Find and classify cells on a field image or whole-slide image file.

        `progress(done, total)` is called with 0 first, then after each batch of detector tiles.

        `prefetch` (read-ahead; the pipeline's `prefetch` option by default): 0 reads the tiles
        inline, the models waiting for each read. N > 0
        starts a background reader thread that keeps up to N detector tiles decoded (read,
        checked for background, resized) ahead of the models; reading (OpenSlide decoding,
        resizing) releases the GIL, so the reads hide behind model work. Memory stays bounded:
        at most N tiles wait in the queue, besides the batch being processed. The same tiles are
        read and the same cells found either way. An exception in the reader thread (e.g.
        `UnreadableSlideError`) is raised in the caller as it was raised; the thread is stopped
        and joined before `run` returns or raises, also when a model raises.
        """
        t0 = time.perf_counter()
        with open_slide(Path(path), max_pixels=self.max_pixels) as reader:
            t_open = time.perf_counter() - t0
            ahead = self.prefetch if prefetch is None else prefetch
            result = self.analyse_reader(reader, progress=progress, prefetch=ahead)
        result.timings["open"] = t_open
        result.timings["total"] = time.perf_counter() - t0
        return result

    def analyse_reader(
        self,
        reader: SlideReader,
        *,
        progress: ProgressCallback | None = None,
        prefetch: int = 0,
    ) -> SlideResult:
        """`analyse` on an open reader (the caller closes it); `prefetch` as in `analyse`."""
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more tiles, not {prefetch}")
        timings = {"read": 0.0, "detector": 0.0, "classifier": 0.0, "background": 0.0}
        if prefetch:
            timings["wait"] = 0.0  # time the models waited for the reader thread
        t_start = time.perf_counter()
        scale = self._detector_scale(reader.info)
        plans = self._plan_tiles(reader, scale)
        total = len(plans)
        cells: list[CellPrediction] = []
        set_aside: list[CellPrediction] = []
        done = 0
        if progress is not None:
            progress(0, total)
        ahead = (
            ReadAhead(functools.partial(self._read_tile, reader), plans, prefetch)
            if prefetch
            else None
        )
        batches = (
            ahead.batches(self.batch_size, timings)
            if ahead
            else self._tile_batches(reader, plans, timings)
        )

        def keep(calls: list[tuple[CellPrediction, int, bool]]) -> None:
            for cell, _, aside in calls:
                (set_aside if aside else cells).append(cell)

        # Stage 2 runs one batch behind stage 1: with read-ahead, the reader thread reads a
        # batch's crops while stage 1 runs on the next batch, then they are classified
        # (40,000 px slide with no glass, 2 cores: 2.04-2.09x the decode floor -> 1.74-1.86x);
        # without, they are read when classified.
        found: list[_Candidate] = []
        crops: list[Future[Any]] = []
        idle = ahead.idle if ahead else None
        with contextlib.closing(batches):
            for count, read in batches:
                tiles = [j for j in read if j is not None]
                timings["background"] += len(read) - len(tiles)  # tiles of glass, skipped
                following = self._stage1(tiles, timings, idle) if tiles else []
                keep(self._stage2(found, [reader], timings, crops))
                found = following
                crops = self._crops_ahead(ahead, [reader], found) if ahead else []
                done += count
                if progress is not None:
                    progress(done, total)
            keep(self._stage2(found, [reader], timings, crops))
        timings["total"] = time.perf_counter() - t_start
        timings["tiles"] = float(total)
        return SlideResult(
            info=reader.info,
            cells=cells,
            model_versions=self.versions,
            device=str(self.device),
            timings=timings,
            set_aside=set_aside,
        )

    def _tile_batches(
        self, reader: SlideReader, plans: list[_TilePlan], timings: dict[str, float]
    ) -> Generator[tuple[int, list[_TileJob | None]], None, None]:
        """Per batch of `batch_size` plans: (plans in it, their tiles; None for background),
        read inline."""
        for batch in _chunks(plans, self.batch_size):
            t = time.perf_counter()
            read = [self._read_tile(reader, plan) for plan in batch]
            timings["read"] += time.perf_counter() - t
            yield len(batch), read

    def analyse_arrays(
        self,
        images: Sequence[np.ndarray],
        *,
        progress: ProgressCallback | None = None,
    ) -> list[SlideResult]:
        """Fields already in memory (HxWx3 uint8), batched `batch_size` fields per detector pass
        (each field is one tile when it fits `tile_size` at the detector scale)."""
        readers = [FieldReader(im) for im in images]
        timings = [{"read": 0.0, "detector": 0.0, "classifier": 0.0} for _ in readers]
        all_jobs: list[tuple[int, _TilePlan]] = []
        for i, r in enumerate(readers):
            s = self._detector_scale(r.info)
            all_jobs += [(i, p) for p in self._plan_tiles(r, s, source=i)]
        results_cells: list[list[CellPrediction]] = [[] for _ in readers]
        results_aside: list[list[CellPrediction]] = [[] for _ in readers]
        shared = {"read": 0.0, "detector": 0.0, "classifier": 0.0}
        done = 0
        if progress is not None:
            progress(0, len(all_jobs))
        for batch in _chunks(all_jobs, self.batch_size):
            t = time.perf_counter()
            tiles = [self._read_tile(readers[i], plan) for i, plan in batch]
            shared["read"] += time.perf_counter() - t
            ready = [j for j in tiles if j is not None]
            if ready:
                for cell, src, aside in self._process_with_source(ready, readers, shared):
                    (results_aside if aside else results_cells)[src].append(cell)
            done += len(batch)
            if progress is not None:
                progress(done, len(all_jobs))
        n = max(len(readers), 1)
        out = []
        for i, r in enumerate(readers):
            timings[i].update({k: v / n for k, v in shared.items()})  # batch cost, evenly
            out.append(
                SlideResult(
                    info=r.info,
                    cells=results_cells[i],
                    model_versions=self.versions,
                    device=str(self.device),
                    timings=timings[i],
                    set_aside=results_aside[i],
                )
            )
        return out

    # -------------------------------------------------------------- internals

    def _detector_scale(self, info: SlideInfo) -> float:
        """Detector input pixels per level-0 pixel of this slide."""
        s = self.det_config.input_scale
        if self.model_mpp and info.mpp:
            s *= info.mpp / self.model_mpp
        return s

    def _crop_side(self, info: SlideInfo) -> int:
        """Level-0 pixels covered by a stage-2 crop on this slide."""
        c = self.cls_config.crop_px
        if self.model_mpp and info.mpp:
            return max(8, round(c * self.model_mpp / info.mpp))
        return c

    def _plan_tiles(self, reader: SlideReader, scale: float, source: int = 0) -> list[_TilePlan]:
        level = reader.best_level_for_downsample(1.0 / scale)
        ds = reader.level_downsamples[level]
        r = scale * ds  # detector input px per level-`level` px
        lw, lh = reader.level_dimensions[level]
        tile_l = max(16, math.ceil(self.tile_size / r))
        overlap_l = min(tile_l - 1, math.ceil(self.tile_overlap / r))
        grid = tile_grid(lw, lh, tile=tile_l, overlap=overlap_l)
        xs = sorted({t.x for t in grid})
        ys = sorted({t.y for t in grid})
        cx = _core_bounds(xs, tile_l, lw)
        cy = _core_bounds(ys, tile_l, lh)
        look = _look_level(reader, level) if self.skip_background else None
        plans = []
        for t in grid:
            core = (cx[t.x][0] * ds, cy[t.y][0] * ds, cx[t.x][1] * ds, cy[t.y][1] * ds)
            plans.append(_TilePlan(t, level, ds, r, scale, core, source, look))
        return plans

    def _read_tile(self, reader: SlideReader, plan: _TilePlan) -> _TileJob | None:
        t = plan.tile
        origin = (t.x * plan.downsample, t.y * plan.downsample)
        if plan.look_level is not None and _is_glass(reader, plan):
            return None  # empty glass on the low-resolution level: the tile is not read
        px = reader.read_region(
            (round(origin[0]), round(origin[1])), plan.level, (t.width, t.height)
        )
        if self.skip_background and _is_background(px):
            return None
        if abs(plan.resize - 1.0) > 1e-6:
            size = (max(1, round(t.width * plan.resize)), max(1, round(t.height * plan.resize)))
            px = cv2.resize(px, size, interpolation=cv2.INTER_AREA)
        return _TileJob(px, origin, plan.scale, plan.core, plan.source)

    @contextlib.contextmanager
    def _stage1_threads(
        self, reader_idle: Callable[[], bool] | None
    ) -> Iterator[Callable[[], None]]:
        """On the CPU with a read-ahead thread, the threads for each stage-1 pass (what the
        context gives sets them): every thread while the reader waits (its queue full, no job
        waiting), all but one while it reads, so that it has a core. Leaving the core always
        left it idle where reading is the lighter load (40,000 px slide on a 2-core AMD EPYC:
        with glass 2.24x the decode floor -> 1.85-1.98x, without 3.13x -> 2.70x); taking it
        always fought the reader (2.27x there with glass; 2.20x against 1.87-2.12x without, on
        a 2-core Xeon). Stage 2 runs on every thread."""
        threads = torch.get_num_threads()
        if reader_idle is None or self.device.type != "cpu" or threads < 2:
            yield lambda: None
            return

        def pick() -> None:
            torch.set_num_threads(threads if reader_idle() else threads - 1)

        try:
            yield pick
        finally:
            torch.set_num_threads(threads)

    def _autocast(self) -> Any:
        """fp16 autocast on CUDA; bfloat16 on CPU when asked (AMX/AVX512-BF16 CPUs)."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16)

    def _process_with_source(
        self,
        jobs: list[_TileJob],
        readers: Sequence[SlideReader],
        timings: dict[str, float],
    ) -> list[tuple[CellPrediction, int, bool]]:
        """Stage 1 on a batch of tiles, then stage 2 on all their candidates at once: (cell,
        index of its reader, set aside as not a cell) for each candidate."""
        return self._stage2(self._stage1(jobs, timings, None), readers, timings)

    def _stage1(
        self,
        jobs: list[_TileJob],
        timings: dict[str, float],
        reader_idle: Callable[[], bool] | None,
    ) -> list[_Candidate]:
        """The candidates of a batch of tiles, each in the core of its tile (`reader_idle`: the
        read-ahead thread's `idle`, with one)."""
        t = time.perf_counter()
        # every tile padded to the batch's shape (what a tile's padding is does not depend on
        # how the batch is cut); the CPU runs them a few at a time: the activations of one
        # 1024 px tile stay in cache, those of eight do not (faster, and far less memory)
        shape = _padded_shape([j.pixels for j in jobs])
        peaks: list[list[Peak]] = []
        with self._stage1_threads(reader_idle) as pick_threads:
            for part in _chunks(jobs, self._detector_chunk(len(jobs))):
                pick_threads()
                batch = _pad_batch([j.pixels for j in part], shape=shape)
                x = torch.from_numpy(batch).to(self.device, non_blocking=True)
                del batch
                with torch.inference_mode(), self._autocast():
                    x = normalise(x, self.det_config.mean, self.det_config.std)
                    heat, offsets = self.detector(x)
                    del x
                    peaks += decode(
                        heat,
                        offsets,
                        self.det_config,
                        cell_threshold=self.cell_threshold,
                        abnormal_threshold=self.abnormal_threshold,
                    )
                del heat, offsets
        candidates: list[_Candidate] = []
        for job, pk in zip(jobs, peaks, strict=True):
            h, w = job.pixels.shape[:2]
            job.pixels = job.pixels[:0, :0]  # the crops are read from the slide: free the tile
            x0c, y0c, x1c, y1c = job.core
            for p in pk:
                if p.x >= w or p.y >= h:
                    continue  # in the padding
                gx = job.origin[0] + p.x / job.scale
                gy = job.origin[1] + p.y / job.scale
                if x0c <= gx < x1c and y0c <= gy < y1c:
                    candidates.append((gx, gy, p.abnormal_score, job.source))
        timings["detector"] += time.perf_counter() - t
        return candidates

    def _read_crops(
        self, readers: Sequence[SlideReader], chunk: Sequence[_Candidate]
    ) -> list[tuple[np.ndarray, int]]:
        return [self._crop(readers[src], gx, gy) for gx, gy, _, src in chunk]

    def _crops_ahead(
        self,
        ahead: ReadAhead[_TilePlan, _TileJob | None],
        readers: Sequence[SlideReader],
        candidates: list[_Candidate],
    ) -> list[Future[list[tuple[np.ndarray, int]]]]:
        """The crops of the first stage-2 chunks, read by the reader thread while stage 1 runs
        on the next tiles; the rest, if any, are read when classified."""
        chunks = self._chunks_read_ahead(candidates)
        return [ahead.submit(self._read_crops, readers, chunk) for chunk in chunks]

    def _chunks_read_ahead(self, candidates: list[_Candidate]) -> list[list[_Candidate]]:
        """The first stage-2 chunks, holding about `_CROPS_AHEAD_PIXELS` (at least one chunk),
        so memory stays bounded whatever the crop side."""
        per_chunk = self.crop_batch_size * self.cls_config.crop_px**2
        n_ahead = max(1, round(_CROPS_AHEAD_PIXELS / per_chunk))
        return list(itertools.islice(_chunks(candidates, self.crop_batch_size), n_ahead))

    def _stage2(
        self,
        candidates: list[_Candidate],
        readers: Sequence[SlideReader],
        timings: dict[str, float],
        ahead: Sequence[Future[list[tuple[np.ndarray, int]]]] = (),
    ) -> list[tuple[CellPrediction, int, bool]]:
        """Stage 2 on the candidates, `crop_batch_size` at a time (the crops of the first
        chunks already being read when `ahead` holds them)."""
        out: list[tuple[CellPrediction, int, bool]] = []
        for i, chunk in enumerate(_chunks(candidates, self.crop_batch_size)):
            t = time.perf_counter()
            cut = ahead[i].result() if i < len(ahead) else self._read_crops(readers, chunk)
            crops = np.stack([crop for crop, _ in cut])
            tr = time.perf_counter()
            timings["crops"] = timings.get("crops", 0.0) + (tr - t)  # read, or waited for
            calls = self._decide(self._classify(crops), np.array([c[2] for c in chunk]))
            box = self.det_config.box_px
            not_cell = calls.not_cell if calls.not_cell is not None else np.zeros(len(chunk), bool)
            for (gx, gy, score, src), p, label, (_, plane), aside in zip(
                chunk, calls.probabilities, calls.labels, cut, not_cell, strict=True
            ):
                cell = CellPrediction(
                    box=Box(round(gx - box / 2), round(gy - box / 2), box, box),
                    label=label,
                    probabilities={c: float(v) for c, v in zip(BETHESDA_CLASSES, p, strict=True)},
                    detection_score=float(score),
                    plane=plane,
                )
                out.append((cell, src, bool(aside)))
            timings["classifier"] += time.perf_counter() - tr
        return out

    def _crop(self, reader: SlideReader, gx: float, gy: float) -> tuple[np.ndarray, int]:
        """The stage 2 crop around (gx, gy) and its focal plane (a Z stack's sharpest there)."""
        side = self._crop_side(reader.info)
        x0 = round(gx - side / 2)
        y0 = round(gy - side / 2)
        crop, plane = reader.read_region_plane((x0, y0), 0, (side, side))
        c = self.cls_config.crop_px
        if side != c:
            crop = cv2.resize(crop, (c, c), interpolation=cv2.INTER_AREA)
        return crop, plane

    def _detector_chunk(self, n: int) -> int:
        """Tiles per detector pass: all of them on a GPU, one at a time on the CPU."""
        return n if self.device.type == "cuda" else 1

    def _classifier_chunk(self) -> int:
        """Crops per classifier pass: the whole crop batch on a GPU; on the CPU as many as hold
        the pixels of 128 crops of 112 px (128 of those: half the activations' memory of 256 as
        fast; fewer cost more than they save when the cores are shared, each pass's many short
        parallel steps waiting for both threads), so wider crops keep the same memory."""
        if self.device.type == "cuda":
            return math.ceil(max(self.crop_batch_size, 1) / _CROP_MULTIPLE) * _CROP_MULTIPLE
        crops = _CPU_PASS_PIXELS / self.cls_config.crop_px**2
        return max(1, round(crops / _CROP_MULTIPLE)) * _CROP_MULTIPLE

    def _classify(self, crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        # pad the batch to a multiple of 32: a handful of shapes, so the CPU backend reuses its
        # compiled kernels instead of preparing new ones for every candidate count
        padded = math.ceil(n / _CROP_MULTIPLE) * _CROP_MULTIPLE
        if padded != n:
            crops = np.concatenate([crops, np.zeros((padded - n, *crops.shape[1:]), crops.dtype)])
        logits = []
        for part in _chunks_array(crops, self._classifier_chunk()):
            x = torch.from_numpy(part).to(self.device, non_blocking=True)
            with torch.inference_mode(), self._autocast():
                x = normalise_crops(x, self.cls_config.mean, self.cls_config.std)
                logits.append(dihedral_mean_logits(self.classifier, x, self.tta_views))
            del x
        probs = torch.softmax(torch.cat(logits)[:n] / self.temperature, dim=1)
        return probs.cpu().numpy().astype(np.float64)

    def warmup(self) -> None:
        """Run each stage-2 pass shape once (multiples of 32 up to the pass size): the CPU
        backend prepares kernels per shape, which makes the first call of a shape slow."""
        c = self.cls_config.crop_px
        for n in range(_CROP_MULTIPLE, self._classifier_chunk() + 1, _CROP_MULTIPLE):
            self._classify(np.zeros((n, c, c, 3), np.uint8))

    @property
    def operating_point(self) -> dict[str, Any]:
        """The decisions in force: thresholds, temperature, test-time views, fusion."""
        return {
            "stage1_cell_threshold": self.cell_threshold,
            "stage1_abnormal_threshold": self.abnormal_threshold,
            "stage2_abnormal_threshold": self.decision_threshold,
            "stage2_unfused_threshold": self.unfused_threshold,
            "temperature": self.temperature,
            "tta_views": self.tta_views,
            "fusion": self.fusion is not None,
            "cpu_bf16": self.cpu_bf16,
            "not_a_cell": self.cls_config.not_a_cell,
        }

    @property
    def device_name(self) -> str:
        """Where the models run ("cpu", "cuda:0")."""
        return str(self.device)

    @property
    def crop_px(self) -> int:
        """The side of the crops `classify_crops` takes."""
        return int(self.cls_config.crop_px)

    def classify_crops(
        self, crops: np.ndarray, detection_scores: np.ndarray | None = None
    ) -> CropCalls:
        """Stage 2 alone, decided as in `analyse`: (N, crop_px, crop_px, 3) uint8 crops ->
        calibrated probabilities (the checkpoint's test-time views and temperature) and labels.

        With `detection_scores` (stage 1's abnormal score of each crop's cell) the fusion and its
        threshold apply as on a slide; without, the classifier's own threshold decides."""
        out = [self._classify(c) for c in _chunks_array(crops, self.crop_batch_size)]
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classes)))
        scores = None if detection_scores is None else np.asarray(detection_scores, np.float64)
        return self._decide(probs, scores)

    def _decide(self, probs: np.ndarray, detection_scores: np.ndarray | None) -> CropCalls:
        """The decision rule: fusion with stage 1 when fitted for this detector (and scores are
        given), then the P(abnormal) threshold; a crop not called abnormal that stage 2 finds
        likelier not a cell than a NILM cell is marked `not_cell`."""
        folded, p_not_cell = fold_not_a_cell(probs)
        if detection_scores is None or self.fusion is None:
            threshold = (
                self.unfused_threshold if detection_scores is None else self.decision_threshold
            )
            labels = decide_labels(folded, threshold)
            return CropCalls(folded, labels, False, not_a_cell_mask(probs, p_not_cell, labels))
        fused = self.fusion.apply(folded, detection_scores)
        labels = decide_labels(fused, self.decision_threshold)
        return CropCalls(fused, labels, True, not_a_cell_mask(probs, p_not_cell, labels))


@dataclass(frozen=True)
class _TilePlan:
    tile: Tile  # in pixels of `level`
    level: int
    downsample: float  # level downsample
    resize: float  # detector input px per level px
    scale: float  # detector input px per level-0 px
    core: tuple[float, float, float, float]
    source: int
    look_level: int | None = None  # a coarse level that tells empty glass cheaply, if any


_CROP_MULTIPLE = 32  # stage-2 batches are padded to a multiple of this many crops
_CPU_PASS_PIXELS = 128 * 112 * 112  # crop pixels per stage-2 pass on the CPU
_CROPS_AHEAD_PIXELS = 1024 * 112 * 112  # crop pixels read ahead per batch (~40 MB)


# Background (empty glass) is skipped, conservatively: a tile is skipped only when nothing in it
# is darker than _DARK in any channel, bar a few specks far smaller than a nucleus.
_DARK = 215  # a pixel with a channel below this is stained material
_MIN_DARK_PX = 4  # dark pixels (on a 2 px grid of the detector's input) that make a tile tissue
# The low-resolution look: the coarsest level at most _LOOK_UM microns per pixel (a nucleus,
# 5 um or more, still darkens a whole pixel there), at least _LOOK_MIN_RATIO times coarser than
# the detector's level (else the look would cost about what the tile does). Averaging lightens
# small dark objects, so a look pixel below _LOOK_DARK already counts as stained material.
_LOOK_UM = 4.0
_LOOK_MPP_UNKNOWN = 0.25  # microns per level-0 pixel assumed when the file does not say
_LOOK_MIN_RATIO = 4.0
_LOOK_DARK = 225


def _is_background(px: np.ndarray) -> bool:
    """A tile with no stained material: skip it.

    Both rules must call it empty: the sparse one (under 0.2 % of a 1-in-8 grid dark: cheap,
    decides nearly every tile of tissue) and a dense count (fewer than `_MIN_DARK_PX` dark
    pixels on a 1-in-2 grid), which keeps a tile holding one small cell (a few dozen dark
    pixels, under 0.2 % of a 1024 px tile) that the sparse rule alone would drop."""
    if px.size == 0:
        return True
    small = px[::8, ::8]
    if (small.min(axis=2) < _DARK).mean() >= 0.002:
        return False
    grid = px[::2, ::2]
    darkest = np.minimum(np.minimum(grid[..., 0], grid[..., 1]), grid[..., 2])
    return int(np.count_nonzero(darkest < _DARK)) < _MIN_DARK_PX


def _look_level(reader: SlideReader, level: int) -> int | None:
    """The level the tiles of `level` are checked for glass on before they are read, if any."""
    mpp = reader.info.mpp or _LOOK_MPP_UNKNOWN
    best = None
    for i, ds in enumerate(reader.level_downsamples):
        if ds * mpp <= _LOOK_UM and ds >= _LOOK_MIN_RATIO * reader.level_downsamples[level]:
            best = i if best is None or ds > reader.level_downsamples[best] else best
    return best


def _is_glass(reader: SlideReader, plan: _TilePlan) -> bool:
    """Whether the tile's area (and one look pixel around it) is empty glass on the look
    level: no look pixel darker than `_LOOK_DARK` in any channel."""
    assert plan.look_level is not None
    ds = reader.level_downsamples[plan.look_level]
    t, d = plan.tile, plan.downsample
    x0 = math.floor(t.x * d / ds) - 1
    y0 = math.floor(t.y * d / ds) - 1
    x1 = math.ceil((t.x + t.width) * d / ds) + 1
    y1 = math.ceil((t.y + t.height) * d / ds) + 1
    px = reader.read_region((round(x0 * ds), round(y0 * ds)), plan.look_level, (x1 - x0, y1 - y0))
    darkest = np.minimum(np.minimum(px[..., 0], px[..., 1]), px[..., 2])
    return bool(darkest.min() >= _LOOK_DARK)


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for s in range(0, len(items), size):
        yield list(items[s : s + size])


def _chunks_array(arr: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(arr), size):
        yield arr[s : s + size]


def _build(
    ckpt: Checkpoint, builder: Callable[[dict[str, object]], torch.nn.Module]
) -> torch.nn.Module:
    config = ckpt.meta.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{ckpt.stage} checkpoint has no architecture config in its metadata")
    try:
        return builder(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt.stage} checkpoint has an invalid architecture config ({exc})"
        ) from exc
