"""The pipeline end to end: fields and a pyramidal TIFF through OpenSlide, tiling without
duplicates, border crops, progress, batching, read-ahead and its threads, the CLI, and no Django
import. Over ~400 lines: one module for one object's behaviour, sharing its small fake models."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inference.checkpoints import load_checkpoint
from inference.classifier import ClassifierConfig, build_classifier
from inference.detector import DetectorConfig, DetectorNet
from inference.errors import SlideTooLargeError, UnreadableSlideError
from inference.metrics import match_points
from inference.pipeline import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, Pipeline
from inference.slides import FieldReader
from inference.synthetic import synthetic_field, write_pyramidal_tiff
from inference.types import BETHESDA_CLASSES, SlideKind, SlideResult
from tests.inference.support import CRIC_DIR, needs_cric

REPO = Path(__file__).resolve().parents[2]


class DarkSpotDetector(DetectorNet):
    """A deterministic stand-in for stage 1: a peak at each dark, nucleus-sized blob. It tests
    the pipeline's mechanics (scales, tiles, ownership, crops) independently of training."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.config.stride
        dark = -x.mean(dim=1, keepdim=True)
        pooled = F.avg_pool2d(dark, s, s)
        pooled = F.avg_pool2d(pooled, 3, 1, 1, count_include_pad=False)
        logits = (pooled - 0.6) * 12.0
        return torch.cat([logits, logits], 1), torch.zeros_like(torch.cat([logits, logits], 1))


def _pipeline(**kwargs: Any) -> Pipeline:
    torch.manual_seed(0)
    det = DarkSpotDetector(DetectorConfig(widths=(8, 8, 8, 8), neck=8))
    ccfg = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    cls = build_classifier(ccfg)
    meta_d = {"version": "fake-detector", "thresholds": {"cell": 0.5, "abnormal": 0.5}}
    meta_c = {"version": "tiny-classifier", "temperature": 1.0, "abnormal_threshold": 0.5}
    return Pipeline(det, meta_d, cls, meta_c, device="cpu", **kwargs)


def _centres(result: SlideResult) -> np.ndarray:
    return np.array([c.box.centre for c in result.cells]).reshape(-1, 2)


NUCLEI = [(60.0 + 110 * i, 70.0 + 120 * j, 10.0) for i in range(6) for j in range(4)]


@pytest.fixture
def field_png(tmp_path: Path) -> Path:
    img = synthetic_field(700, 520, cells=NUCLEI, seed=3)
    path = tmp_path / "field.png"
    Image.fromarray(img).save(path)
    return path


def test_field_run_finds_each_nucleus_once(field_png: Path) -> None:
    calls: list[tuple[int, int]] = []
    res = _pipeline().analyse(field_png, progress=lambda d, t: calls.append((d, t)))
    assert res.info.kind == SlideKind.FIELD and (res.info.width, res.info.height) == (700, 520)
    truth = np.array([(x, y) for x, y, _ in NUCLEI])
    pairs = match_points(_centres(res), truth, radius=12)
    assert len(pairs) == len(NUCLEI) == len(res.cells)
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)
    for c in res.cells:
        assert c.label in BETHESDA_CLASSES
        assert sum(c.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= c.detection_score <= 1.0
        assert c.box.width == c.box.height == 96
    assert res.model_versions == {"detector": "fake-detector", "classifier": "tiny-classifier"}
    assert {"detector", "classifier", "read", "total"} <= set(res.timings)


def test_small_overlapping_tiles_give_the_same_cells(field_png: Path) -> None:
    whole = _pipeline().analyse(field_png)
    calls: list[tuple[int, int]] = []
    tiled = _pipeline(tile_size=96, tile_overlap=24, batch_size=3).analyse(
        field_png, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1][0] == calls[-1][1] > 4  # progress per tile
    assert len(tiled.cells) == len(whole.cells) == len(NUCLEI)  # no duplicates, none lost
    assert len(match_points(_centres(tiled), _centres(whole), radius=4)) == len(NUCLEI)


def test_run_arrays_matches_run(field_png: Path) -> None:
    img = np.asarray(Image.open(field_png).convert("RGB"))
    pipe = _pipeline(batch_size=2)
    batch = pipe.analyse_arrays([img, img[::-1].copy(), img])
    single = pipe.analyse(field_png)
    assert len(batch) == 3 and len(batch[0].cells) == len(single.cells)
    assert np.allclose(_centres(batch[0]), _centres(single))
    probs_a = np.array([list(c.probabilities.values()) for c in batch[0].cells])
    probs_b = np.array([list(c.probabilities.values()) for c in single.cells])
    assert np.allclose(probs_a, probs_b, atol=1e-4)


def test_crops_at_image_borders_are_padded() -> None:
    img = np.zeros((50, 60, 3), np.uint8)
    pipe = _pipeline()
    reader = FieldReader(img)
    crop, plane = pipe._crop(reader, 2.0, 3.0)  # crop_px = 32 centred near the corner
    assert crop.shape == (32, 32, 3) and plane == 0  # one focal plane
    assert (crop[:10, :10] == 255).all()  # outside the image: white
    assert (crop[20:, 20:] == 0).all()  # inside: the image


def test_pyramidal_tiff_read_tile_by_tile_through_openslide(tmp_path: Path) -> None:
    path = write_pyramidal_tiff(tmp_path / "slide.tiff", 2100, 1300, levels=3, mpp=0.5)
    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=4)
    calls: list[tuple[int, int]] = []
    res = pipe.analyse(path, progress=lambda d, t: calls.append((d, t)))
    assert res.info.kind == SlideKind.WHOLE_SLIDE
    # nuclei every 400 px from (200, 200): 5 x 3 of them
    truth = np.array([(200 + 400 * i, 200 + 400 * j) for i in range(5) for j in range(3)], float)
    assert len(match_points(_centres(res), truth, radius=12)) == 15
    assert len(res.cells) == 15
    assert calls[-1][0] == calls[-1][1] == res.timings["tiles"] > 1
    plans = pipe._plan_tiles(pipe_reader := _open(path), pipe._detector_scale(res.info))
    pipe_reader.close()
    assert {p.level for p in plans} == {1}  # stage 1 at the 2x-downsampled level


def _cells(result: SlideResult) -> list[Any]:
    return [(c.box, c.label, c.probabilities, c.detection_score) for c in result.cells]


def _run_recording(
    pipe: Pipeline, path: Path, **kwargs: Any
) -> tuple[SlideResult, list[tuple[int, int]]]:
    steps: list[tuple[int, int]] = []
    result = pipe.analyse(path, progress=lambda d, t: steps.append((d, t)), **kwargs)
    return result, steps


@pytest.mark.parametrize("prefetch", [1, 3, 16])
def test_prefetch_finds_the_same_cells_as_inline_reads(
    tmp_path: Path, field_png: Path, prefetch: int
) -> None:
    wsi = write_pyramidal_tiff(tmp_path / "slide.tiff", 2100, 1300, levels=3, mpp=0.5)
    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=4)
    for path in (wsi, field_png):
        inline, inline_steps = _run_recording(pipe, path)
        ahead, ahead_steps = _run_recording(pipe, path, prefetch=prefetch)
        assert ahead.timings["tiles"] == inline.timings["tiles"] > 1
        assert len(ahead.cells) > 0
        assert _cells(ahead) == _cells(inline)
        # progress: 0 first, then once per batch of tiles, up to the total
        assert ahead_steps == inline_steps
        total = int(inline.timings["tiles"])
        assert ahead_steps[0] == (0, total) and ahead_steps[-1] == (total, total)
        assert len(ahead_steps) == 1 + -(-total // pipe.batch_size)
        assert "wait" in ahead.timings and "wait" not in inline.timings
    assert not [t for t in threading.enumerate() if t.name == "tile-prefetch"]


@pytest.mark.parametrize(
    ("prefetch", "reader_idle", "stage1_threads"),
    [(0, None, 2), (2, False, 1), (2, True, 2)],
    ids=["no-reader-thread", "reader-reading", "reader-waiting"],
)
def test_stage1_leaves_a_core_to_the_read_ahead_thread_while_it_reads(
    field_png: Path,
    prefetch: int,
    reader_idle: bool | None,
    stage1_threads: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a reader thread decoding ahead, each stage-1 pass runs on one torch thread fewer
    while the reader reads (it has the other core), on all of them while it waits; stage 2 and
    what follows get them all back."""
    from inference.readahead import ReadAhead

    if reader_idle is not None:
        monkeypatch.setattr(ReadAhead, "idle", lambda self: reader_idle)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=2)
        seen: dict[str, list[int]] = {"detector": [], "classifier": []}

        def recording(stage: str, forward: Any) -> Any:
            def run(x: torch.Tensor) -> Any:
                seen[stage].append(torch.get_num_threads())
                return forward(x)

            return run

        for stage in seen:
            model = getattr(pipe, stage)
            model.forward = recording(stage, model.forward)
        result = pipe.analyse(field_png, prefetch=prefetch)
        assert result.cells and seen["detector"] and seen["classifier"]
        assert set(seen["detector"]) == {stage1_threads}
        assert set(seen["classifier"]) == {2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _BrokenReader(FieldReader):
    def __init__(self, image: np.ndarray, fail_after: int) -> None:
        super().__init__(image)
        self.reads = 0
        self.fail_after = fail_after

    def read_region(self, location: Any, level: int, size: Any) -> Any:
        if threading.current_thread().name == "tile-prefetch":  # the reader thread only
            self.reads += 1
            if self.reads > self.fail_after:
                raise UnreadableSlideError("slide.svs: tile unreadable")
        return super().read_region(location, level, size)


def test_a_reader_error_in_the_prefetch_thread_reaches_the_caller_with_its_type() -> None:
    image = synthetic_field(1200, 900, cells=NUCLEI, seed=3)
    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=2)
    reader = _BrokenReader(image, fail_after=5)
    with pytest.raises(UnreadableSlideError, match="tile unreadable") as caught:
        pipe.analyse_reader(reader, prefetch=2)
    assert caught.type is UnreadableSlideError
    # raised in the reader thread: reading a tile, or the crops it reads ahead
    assert {"_produce", "_run"} & {str(f.name) for f in caught.traceback}
    assert not [t for t in threading.enumerate() if t.name == "tile-prefetch"]


def test_the_prefetch_thread_is_stopped_when_a_model_raises(field_png: Path) -> None:
    pipe = _pipeline(tile_size=128, tile_overlap=16, batch_size=1)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    pipe._stage1 = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="out of memory"):
        pipe.analyse(field_png, prefetch=1)
    assert not [t for t in threading.enumerate() if t.name == "tile-prefetch"]


def _reading_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "tile-prefetch"]


def test_with_read_ahead_crops_are_read_by_the_reader_thread_a_few_chunks_per_batch_at_most(
    field_png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With read-ahead, a batch's first stage-2 chunks of crops are read by the reader thread
    (while stage 1 runs on the next batch); chunks beyond `_CROPS_AHEAD_PIXELS` are read when
    classified, so memory stays bounded; the cells are those found without read-ahead."""
    from inference import pipeline as pipeline_module

    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=2)
    inline = pipe.analyse(field_png)
    pipe.crop_batch_size = 1  # one crop per chunk: most of a batch's crops beyond the ahead ones
    ahead_chunks = 4  # the pixels of 4 crops: 4 chunks of one crop read ahead per batch
    monkeypatch.setattr(
        pipeline_module, "_CROPS_AHEAD_PIXELS", ahead_chunks * pipe.cls_config.crop_px**2
    )
    threads: list[str] = []
    crop = pipe._crop

    def recording(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return crop(*args)

    pipe._crop = recording  # type: ignore[method-assign,assignment]
    ahead = pipe.analyse(field_png, prefetch=2)
    assert _cells(ahead) == _cells(inline) and len(inline.cells) > 2 * 4
    by_thread = {name: threads.count(name) for name in set(threads)}
    read_ahead = by_thread.get("tile-prefetch", 0)
    batches = -(-int(ahead.timings["tiles"]) // pipe.batch_size)
    assert 0 < read_ahead <= ahead_chunks * batches
    assert by_thread.get("MainThread", 0) == len(inline.cells) - read_ahead > 0
    assert not _reading_threads()


class _BrokenCrops(FieldReader):
    def read_region_plane(self, location: Any, level: int, size: Any) -> Any:
        if threading.current_thread().name == "tile-prefetch":
            raise UnreadableSlideError("slide.svs: crop unreadable")
        return super().read_region_plane(location, level, size)


def test_wider_crops_go_fewer_to_a_cpu_pass_and_fewer_are_read_ahead() -> None:
    """On the CPU a stage-2 pass and the crops read ahead hold a set number of pixels, not of
    crops: 160 px crops (twice the pixels of 112 px ones) go half as many per pass."""
    passes, ahead = {}, {}
    for side in (112, 160):
        pipe = Pipeline(
            DarkSpotDetector(DetectorConfig(widths=(8, 8, 8, 8), neck=8)),
            {"version": "fake-detector"},
            build_classifier(ClassifierConfig(crop_px=side, widths=(8, 8, 16, 16))),
            {"version": f"tiny-{side}"},
            device="cpu",
        )
        passes[side] = pipe._classifier_chunk()
        ahead[side] = len(pipe._chunks_read_ahead([(0.0, 0.0, 0.0, 0)] * 4096))
    assert passes == {112: 128, 160: 64}
    assert ahead == {112: 4, 160: 2}


def test_a_crop_read_error_in_the_reader_thread_reaches_the_caller_and_stops_it() -> None:
    image = synthetic_field(1200, 900, cells=NUCLEI, seed=3)
    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=2)
    with pytest.raises(UnreadableSlideError, match="crop unreadable"):
        pipe.analyse_reader(_BrokenCrops(image), prefetch=2)
    assert not _reading_threads()


def test_prefetch_must_not_be_negative(field_png: Path) -> None:
    with pytest.raises(ValueError, match="prefetch"):
        _pipeline().analyse(field_png, prefetch=-1)


def _open(path: Path) -> Any:
    from inference.slides import open_slide

    return open_slide(path)


def test_mpp_scales_stage1_and_crops() -> None:
    pipe = _pipeline(model_mpp=0.25)
    from inference.types import SlideInfo

    info = SlideInfo("generic-tiff", SlideKind.WHOLE_SLIDE, 1000, 1000, mpp=0.5)
    assert pipe._detector_scale(info) == pytest.approx(1.0)  # 0.5 x 0.5 / 0.25
    assert pipe._crop_side(info) == 16  # 32 px at 0.25 um = 16 px at 0.5 um
    assert _pipeline()._crop_side(info) == 32  # model mpp unknown: pixels as trained


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    pipe = _pipeline(max_pixels=10_000)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableSlideError):
        pipe.analyse(empty)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(big)
    with pytest.raises(SlideTooLargeError):
        pipe.analyse(big)


def test_from_checkpoints(tiny_checkpoints: tuple[Path, Path], field_png: Path) -> None:
    det, cls = tiny_checkpoints
    pipe = Pipeline.from_checkpoints(det, cls, device="cpu")
    assert pipe.versions["detector"] == load_checkpoint(det, stage="detector").version
    assert pipe.temperature == 1.5 and pipe.decision_threshold == 0.4
    res = pipe.analyse(field_png)
    assert res.device == "cpu"


def test_committed_weights_are_present() -> None:
    # the default pipeline (workers, CLI, these tests) runs on them: missing is a failure
    for path in (DEFAULT_DETECTOR, DEFAULT_CLASSIFIER):
        assert path.is_file(), f"{path} is missing (inference/weights/*.pt are committed)"


def test_default_weights_load() -> None:
    pipe = Pipeline.default(device="cpu")
    assert set(pipe.versions) == {"detector", "classifier"}
    assert DEFAULT_DETECTOR.stat().st_size + DEFAULT_CLASSIFIER.stat().st_size < 10 * 2**20


@needs_cric
def test_default_weights_find_annotated_cells_on_real_val_images() -> None:
    from inference.data.cric import read_cells_csv

    pipe = Pipeline.default(device="cpu")
    val = load_checkpoint(DEFAULT_DETECTOR, stage="detector").meta["data"]["split"]["val"][:2]
    table = read_cells_csv(CRIC_DIR / "cells.csv")
    found = total = 0
    for name in val:
        res = pipe.analyse(CRIC_DIR / "images" / name)
        truth = np.array([(c.x, c.y) for c in table[name].cells])
        found += len(match_points(_centres(res), truth, radius=20))
        total += len(truth)
    assert found / total > 0.6


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference", *args], cwd=REPO, capture_output=True, text=True
    )


def _cli_json(checkpoints: tuple[Path, Path], *args: str) -> Any:
    """Run a command with the given detector and classifier on the CPU; its JSON result."""
    det, cls = checkpoints
    proc = _cli(*args, "--detector", str(det), "--classifier", str(cls), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_predict_writes_json_and_overlay(
    tiny_checkpoints: tuple[Path, Path], field_png: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    _cli_json(tiny_checkpoints, "predict", str(field_png), "--out", str(out))
    data = json.loads((out / "field.json").read_text())
    assert data["slide"]["width"] == 700 and isinstance(data["cells"], list)
    assert Image.open(out / "field_overlay.png").size == (700, 520)


def test_cli_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    det = tmp_path / "det.pt"
    det.write_bytes(b"junk")
    proc = _cli(
        "predict",
        str(bad),
        "--out",
        str(tmp_path / "o"),
        "--detector",
        str(det),
        "--classifier",
        str(det),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_cli_evaluate_on_synthetic_annotations(
    tiny_checkpoints: tuple[Path, Path], field_png: Path, tmp_path: Path
) -> None:
    det, cls = tiny_checkpoints
    csv = tmp_path / "cells.csv"
    rows = ["image_filename,nucleus_x,nucleus_y,bethesda_system"]
    rows += [
        f"field.png,{x},{y},{'HSIL' if i % 3 == 0 else 'NILM'}"
        for i, (x, y, _) in enumerate(NUCLEI)
    ]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval" / "metrics.json"
    result = _cli_json(
        (det, cls),
        "evaluate",
        "--images",
        str(field_png.parent),
        "--cells",
        str(csv),
        "--out",
        str(out),
    )
    assert result["images_evaluated"] == 1 and result["metrics"]["annotated_cells"] == len(NUCLEI)
    assert "targets" in result and (out.parent / "metrics_confusion_six_class.png").is_file()


def test_importing_pipeline_loads_no_django() -> None:
    code = (
        "import sys, inference, inference.pipeline, inference.commands, inference.__main__;"
        "print('django' in sys.modules or any(m.startswith('django.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(field_png: Path) -> None:
    cpu = _pipeline().analyse(field_png)
    torch.manual_seed(0)
    gpu_pipe = _pipeline()
    gpu_pipe.device = torch.device("cuda")
    gpu_pipe.detector.cuda()
    gpu_pipe.classifier.cuda()
    gpu_pipe.amp = True
    gpu = gpu_pipe.analyse(field_png)
    assert gpu.device.startswith("cuda")
    assert len(match_points(_centres(gpu), _centres(cpu), radius=4)) == len(cpu.cells)


def test_cli_evaluate_classifier_on_image_folder(
    tiny_checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    _, cls = tiny_checkpoints
    root = tmp_path / "crops"
    for code, radius in (("NILM", 4.0), ("HSIL", 12.0)):
        (root / code).mkdir(parents=True)
        for i in range(3):
            img = synthetic_field(40, 40, cells=[(20.0, 20.0, radius)], seed=i)
            Image.fromarray(img).save(root / code / f"{i}.png")
    out = tmp_path / "cls.json"
    proc = _cli(
        "evaluate-classifier",
        "--folder",
        str(root),
        "--classifier",
        str(cls),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["crops"] == 6
    assert result["six_class"]["per_class"]["HSIL"]["support"] == 3
    assert set(result) >= {"six_class", "four_class", "abnormal_vs_nilm"}
    (root / "BOGUS").mkdir()
    proc = _cli("evaluate-classifier", "--folder", str(root), "--classifier", str(cls))
    assert proc.returncode == 2 and "not Bethesda codes" in proc.stderr


def test_cli_bench_compares_with_reference(
    tiny_checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    det, cls = tiny_checkpoints
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_field(300, 300, cells=NUCLEI[:4], seed=i)).save(
            folder / f"{i}.png"
        )
    result = _cli_json(
        (det, cls),
        "bench",
        "--images",
        str(folder),
        "--limit",
        "2",
        "--reference-limit",
        "1",
    )
    assert result["ours"]["fields"] == 2 and result["reference"]["fields"] == 1
    assert result["reference"]["regions_per_field"] == 4  # 2 x 2 regions of 150 px
    assert 5_000 <= result["reference"]["params"]["tiny_cnn"] <= 9_000
    assert result["speedup"] == pytest.approx(
        result["ours"]["fields_per_s"] / result["reference"]["fields_per_s"]
    )
    assert result["ours"]["peak_rss_mib"] > 0 and result["device"] == "cpu"


def test_fusion_applies_only_to_its_detector(field_png: Path) -> None:
    fusion = {
        "w_classifier": 0.0,
        "w_detector": 0.0,
        "bias": 5.0,  # P(abnormal) = sigmoid(5) whatever the evidence
        "detector_version": "fake-detector",
        "abnormal_threshold": 0.5,
    }
    torch.manual_seed(0)
    base = _pipeline()
    det, cls = base.detector, base.classifier
    meta_c = {"version": "c", "temperature": 1.0, "abnormal_threshold": 0.5, "fusion": fusion}
    meta_d = {"version": "fake-detector", "thresholds": {"cell": 0.5, "abnormal": 0.5}}
    fused = Pipeline(det, meta_d, cls, meta_c, device="cpu").analyse(field_png)
    assert fused.cells and all(c.label != "NILM" for c in fused.cells)
    assert all(c.probabilities["NILM"] == pytest.approx(1 / (1 + np.exp(5))) for c in fused.cells)
    other = Pipeline(det, dict(meta_d, version="another"), cls, meta_c, device="cpu")
    assert other.fusion is None


def test_test_time_views_come_from_the_checkpoint_and_average_the_flips(field_png: Path) -> None:
    base = _pipeline()
    det, cls = base.detector, base.classifier
    meta_d = {"version": "fake-detector", "thresholds": {"cell": 0.5, "abnormal": 0.5}}
    meta_c = {"version": "c", "temperature": 1.0, "abnormal_threshold": 0.5, "tta_views": 4}
    pipe = Pipeline(det, meta_d, cls, meta_c, device="cpu")
    assert pipe.tta_views == 4 and Pipeline(det, meta_d, cls, meta_c, tta_views=1).tta_views == 1
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probs = pipe.classify_crops(crops).probabilities
    # averaged over the four flips: a mirrored crop gets the same probabilities, which a
    # single view does not give
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    assert np.allclose(pipe.classify_crops(mirrored).probabilities, probs, atol=1e-5)
    single = Pipeline(det, meta_d, cls, meta_c, device="cpu", tta_views=1)
    assert not np.allclose(
        single.classify_crops(mirrored).probabilities, single.classify_crops(crops).probabilities
    )
    assert len(pipe.analyse(field_png).cells) == len(single.analyse(field_png).cells)
    with pytest.raises(ValueError, match="tta_views must be one of"):
        Pipeline(det, meta_d, cls, dict(meta_c, tta_views=3), device="cpu")


def test_calibrate_pipeline_on_an_export_split_fits_the_fusion_or_says_why_not(
    tmp_path: Path,
) -> None:
    """The fusion fitted on any annotated images (an export's `images/<split>/` and
    `points/<split>.csv`); too few matched cells or a single class: `TooFewCellsError`."""
    from types import SimpleNamespace

    from inference.calibration import TooFewCellsError, calibrate_pipeline_on, calibrated_meta
    from inference.data.cric import CellsTable
    from inference.types import Box

    rng = np.random.default_rng(0)
    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    rows = ["image_filename,nucleus_x,nucleus_y,bethesda_system"]
    for i in range(4):
        (folder / f"f{i}.png").write_bytes(b"")
        rows += [f"f{i}.png,{20 + 30 * k},40,{'HSIL' if (i + k) % 2 else 'NILM'}" for k in range(5)]
    rows.append("absent.png,10,10,NILM")  # not in the folder: left out
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    table = CellsTable.read(folder, tmp_path / "val.csv")
    assert sorted(table.images) == [f"f{i}.png" for i in range(4)]

    def run(path: Path) -> Any:
        cells = []
        for c in table.images[path.name].cells:
            p_abn = float(np.clip((c.label != "NILM") * 0.6 + rng.uniform(0, 0.4), 0.01, 0.99))
            probs = dict.fromkeys(BETHESDA_CLASSES, p_abn / (len(BETHESDA_CLASSES) - 1))
            probs["NILM"] = 1.0 - p_abn
            cells.append(
                SimpleNamespace(
                    box=Box(int(c.x) - 5, int(c.y) - 5, 10, 10),
                    label="HSIL" if p_abn >= 0.5 else "NILM",
                    probabilities=probs,
                    detection_score=float(rng.uniform(0.3, 0.9)),
                )
            )
        return SimpleNamespace(cells=cells, candidates=cells)

    pipeline = SimpleNamespace(
        analyse=run, versions={"detector": "det-abc"}, operating_point={"tta_views": 2}
    )
    calibration = calibrate_pipeline_on(pipeline, table, sorted(table.images))
    assert calibration.report["val_matched_cells"] == 20
    assert calibration.fusion.detector_version == "det-abc"
    meta = calibrated_meta({"version": "cls-1"}, calibration, tta_views=2)
    assert meta["tta_views"] == 2 and ("fusion" in meta) != ("fusion_skipped" in meta)
    # every call sits on a marked cell: no far call, so a budget keeps every call abnormal-able
    budgeted = calibrate_pipeline_on(pipeline, table, sorted(table.images), far_budget=1.0)
    rule = budgeted.report["threshold_rule"]
    assert rule["far_per_field"] == 0.0 and budgeted.fusion.abnormal_threshold == 0.0
    assert budgeted.fusion.far_budget == 1.0 and rule["fields"] == 4
    with pytest.raises(TooFewCellsError, match="at least 10 needed"):
        calibrate_pipeline_on(pipeline, table, ["f0.png"])
    skipped = calibrated_meta(meta, None, tta_views=1, skipped="why")
    assert skipped["fusion_skipped"] == "why" and "fusion" not in skipped
    assert skipped["version"] == "cls-1"


# ------------------------------------------------------------------ background (glass) skip


def _pyramid_from_array(path: Path, image: np.ndarray, levels: int, mpp: float = 0.25) -> Path:
    """A tiled pyramidal TIFF of `image`, each level an area average of the one above (as
    scanners make them), read by OpenSlide as generic-tiff."""
    import cv2
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        level = image
        for i in range(levels):
            res = 1e4 / mpp / 2**i
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=0 if i == 0 else 1,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
            h, w = level.shape[:2]
            level = cv2.resize(level, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return path


def test_a_lone_small_cell_on_a_large_empty_tile_is_not_background() -> None:
    from inference.pipeline import _is_background

    glass = synthetic_field(1024, 1024, seed=5)
    assert _is_background(glass)
    # one small cell (nucleus r 6, cytoplasm r 18): a few dozen dark pixels, under 0.2 % of the
    # tile, which the sparse 1-in-8 rule alone called background
    cell = synthetic_field(1024, 1024, cells=[(500.0, 300.0, 6.0)], seed=5)
    sparse = (cell[::8, ::8].min(axis=2) < 215).mean()
    assert 0 < sparse < 0.002
    assert not _is_background(cell)


def test_glass_tiles_are_skipped_on_a_low_level_and_a_lone_cell_is_still_found(
    tmp_path: Path,
) -> None:
    cell = (1410.0, 630.0, 10.0)  # a 5 um nucleus on a slide of otherwise empty glass
    image = synthetic_field(2048, 1536, cells=[cell], seed=1)
    path = _pyramid_from_array(tmp_path / "glass.tiff", image, levels=5)
    pipe = _pipeline(tile_size=256, tile_overlap=32, batch_size=4)
    res = pipe.analyse(path, prefetch=2)
    assert len(res.cells) == 1
    assert np.hypot(*(np.array(res.cells[0].box.centre) - cell[:2])) < 8
    with _open(path) as reader:
        plans = pipe._plan_tiles(reader, pipe._detector_scale(reader.info))
    assert {p.look_level for p in plans} == {4}  # 4 um per px at most, 8x the detector's level
    # every tile but those touching the cell was skipped without reading it at full size
    assert 0 < res.timings["tiles"] - res.timings["background"] <= 4
    plain = _pipeline(tile_size=256, tile_overlap=32, batch_size=4, skip_background=False)
    assert _cells(plain.analyse(path)) == _cells(res)


def test_skipping_glass_finds_every_cell_of_a_spot_slide(tmp_path: Path) -> None:
    from inference.synthetic import slide_cell_centres

    path = write_pyramidal_tiff(tmp_path / "spot.tiff", 5200, 4400, levels=5, layout="spot")
    pipe = _pipeline(tile_size=256, batch_size=4)
    res = pipe.analyse(path, prefetch=4)
    truth = slide_cell_centres(5200, 4400, "spot")
    assert len(res.cells) == len(truth) > 0
    assert len(match_points(_centres(res), truth, radius=12)) == len(truth)
    assert res.timings["background"] > 0.2 * res.timings["tiles"]  # the glass around the spot
    plain = _pipeline(tile_size=256, batch_size=4, skip_background=False)
    assert _cells(plain.analyse(path)) == _cells(res)
