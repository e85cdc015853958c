"""Benchmarks: our pipeline against a reference built like the published two-stage method, and
peak memory on a generated whole-slide image.

The reference (cost only, random weights): each field is cut into 150x150 px regions; each region
is shrunk to 20x20 px for a ~7k-parameter cell/no-cell CNN (stage 1); every flagged region is
resized to 250x250 px and classified by a torchvision ResNet-152 (stage 2). A trained stage 1
flags the regions that hold cells; with random weights we flag, deterministically, the regions
with stained material (>= 1% of pixels darker than the background), and report how many.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

REGION = 150
TINY_INPUT = 20
RESNET_INPUT = 250


class TinyCellCNN(nn.Module):
    """About 7k parameters: the published stage 1 cell/no-cell network's size class."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 10
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 5
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 5 * 5, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class ReferencePipeline:
    def __init__(self, device: torch.device, batch_size: int = 16) -> None:
        import torchvision

        self.device = device
        self.tiny = TinyCellCNN().to(device).eval()
        self.resnet = torchvision.models.resnet152(weights=None, num_classes=4).to(device).eval()
        self.batch_size = batch_size

    @property
    def params(self) -> dict[str, int]:
        return {"tiny_cnn": _param_count(self.tiny), "resnet152": _param_count(self.resnet)}

    @staticmethod
    def regions(image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        return [
            image[y : y + REGION, x : x + REGION]
            for y in range(0, h - REGION + 1, REGION)
            for x in range(0, w - REGION + 1, REGION)
        ]

    @staticmethod
    def flagged(regions: list[np.ndarray]) -> list[np.ndarray]:
        return [r for r in regions if (r.min(axis=2) < 200).mean() >= 0.01]

    def warmup(self, images: Sequence[np.ndarray]) -> None:
        """Run once every batch shape the timed fields will use (the CPU backend prepares
        kernels per shape), so both pipelines are timed in their steady state."""
        tiny_shapes, resnet_shapes = set(), set()
        for im in images:
            regions = self.regions(im)
            tiny_shapes.add(len(regions))
            f = len(self.flagged(regions))
            resnet_shapes.update({min(self.batch_size, f), f % self.batch_size} - {0})
        with torch.inference_mode():
            for n in sorted(tiny_shapes):
                self.tiny(torch.zeros(n, 3, TINY_INPUT, TINY_INPUT, device=self.device))
            for n in sorted(resnet_shapes):
                self.resnet(torch.zeros(n, 3, RESNET_INPUT, RESNET_INPUT, device=self.device))

    def run_field(self, image: np.ndarray) -> dict[str, int]:
        regions = self.regions(image)
        small = np.stack(
            [cv2.resize(r, (TINY_INPUT, TINY_INPUT), interpolation=cv2.INTER_AREA) for r in regions]
        )
        with torch.inference_mode():
            x = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            self.tiny(x)  # stage 1 cost (random weights: its output is not used to flag)
        flagged = self.flagged(regions)
        with torch.inference_mode():
            for s in range(0, len(flagged), self.batch_size):
                batch = np.stack(
                    [
                        cv2.resize(r, (RESNET_INPUT, RESNET_INPUT), interpolation=cv2.INTER_LINEAR)
                        for r in flagged[s : s + self.batch_size]
                    ]
                )
                x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() / 255.0
                self.resnet(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {"regions": len(regions), "flagged": len(flagged)}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux VmHWM (reset by exec, unlike ru_maxrss, which a child started from a big parent
    inherits); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_fields(
    pipeline: Any,
    images: Sequence[np.ndarray],
    *,
    reference_limit: int = 2,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time our pipeline (batched, in memory) and the reference on the same fields."""
    from tqdm import tqdm

    device = pipeline.device
    n = len(images)
    if n == 0:
        raise ValueError("no images to benchmark")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # steady state, as in a worker that has served a few slides: detector batch shapes and every
    # stage-2 batch shape seen once
    pipeline.warmup()
    for _ in range(max(1, warmup)):
        pipeline.analyse_arrays(list(images[: max(1, min(pipeline.batch_size, n))]))
    step = max(1, pipeline.batch_size)

    def time_ours() -> tuple[float, list[Any]]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res: list[Any] = []
        for s in range(0, n, step):
            res += pipeline.analyse_arrays(list(images[s : s + step]))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, res

    ours_s, results = time_ours()
    ours_rss = peak_rss_mib()
    ours_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    stage = {
        k: float(np.mean([r.timings.get(k, 0.0) for r in results]))
        for k in ("read", "detector", "crops", "classifier")
    }

    # The machine may be shared: time the reference field by field, each paired with a fresh
    # timing of ours on all fields right after it, so both see the same load.
    ref = ReferencePipeline(device)
    m = max(1, min(reference_limit, n))
    ref.warmup(images[:m])
    counts = []
    ref_times: list[float] = []
    ours_times: list[float] = [ours_s / n]
    for im in tqdm(images[:m], desc="reference (paired)", unit="field", leave=False):
        t0 = time.perf_counter()
        counts.append(ref.run_field(im))
        ref_times.append(time.perf_counter() - t0)
        t_ours, _ = time_ours()
        ours_times.append(t_ours / n)
    ref_s = float(sum(ref_times))
    paired = [r / o for r, o in zip(ref_times, ours_times[1:], strict=True)]
    ours_s = float(np.mean(ours_times)) * n
    ours_fps = n / ours_s
    ref_fps = m / ref_s
    h, w = images[0].shape[:2]
    out: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "field_size": [int(w), int(h)],
        "ours": {
            "fields": n,
            "batch_size": pipeline.batch_size,
            "runs": len(ours_times),
            "seconds": ours_s,
            "fields_per_s": ours_fps,
            "seconds_per_field": ours_s / n,
            "cells_per_field": float(np.mean([len(r.cells) for r in results])),
            "stage_seconds_per_field": stage,
            "peak_rss_mib": ours_rss,
            "cuda_max_allocated_mib": ours_cuda,
        },
        "reference": {
            "fields": m,
            "seconds": ref_s,
            "fields_per_s": ref_fps,
            "seconds_per_field": ref_s / m,
            "regions_per_field": float(np.mean([c["regions"] for c in counts])),
            "flagged_per_field": float(np.mean([c["flagged"] for c in counts])),
            "params": ref.params,
            "peak_rss_mib_process": peak_rss_mib(),
        },
        "speedup": ours_fps / ref_fps,
        "speedup_paired": {
            "median": float(np.median(paired)),
            "min": float(np.min(paired)),
            "max": float(np.max(paired)),
            "per_field": paired,
        },
        "timing_note": "ours: mean of the first run and one run after each reference field; "
        "the reference is timed field by field on the same fields",
    }
    del ref
    gc.collect()
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


_WSI_CHILD = r"""
import json, sys, time, torch
from pathlib import Path
torch.set_num_threads(int(sys.argv[5]))
from inference.bench import peak_rss_mib
from inference.pipeline import Pipeline
kw = {"device": sys.argv[4], "batch_size": 4, "cpu_bf16": sys.argv[6] == "1"}
if sys.argv[2] != "-":
    p = Pipeline.from_checkpoints(Path(sys.argv[2]), Path(sys.argv[3]), **kw)
else:
    p = Pipeline.default(**kw)
base = peak_rss_mib()
if p.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
r = p.analyse(Path(sys.argv[1]))
secs = time.perf_counter() - t
print(json.dumps({
    "seconds": secs,
    "cells": len(r.cells),
    "tiles": r.timings.get("tiles"),
    "timings": r.timings,
    "peak_rss_mib": peak_rss_mib(),
    "rss_after_model_load_mib": base,
    "cuda_max_allocated_mib": (
        torch.cuda.max_memory_allocated() / 2**20 if p.device.type == "cuda" else None
    ),
}))
"""


def bench_wsi(
    side: int,
    path: Path,
    *,
    detector: Path | None,
    classifier: Path | None,
    device: str,
    threads: int,
    cpu_bf16: bool = False,
) -> dict[str, Any]:
    """Generate (once) a side x side pyramidal TIFF and run the pipeline on it in a fresh
    process, reporting that process's peak RSS."""
    from .slides import probe_slide
    from .synthetic import write_pyramidal_tiff

    path = Path(path)
    t0 = time.perf_counter()
    levels = 1
    while max(side, side) / 2**levels >= 1024:
        levels += 1
    if not path.exists():
        write_pyramidal_tiff(path, side, side, levels=levels, mpp=0.25)
    gen_s = time.perf_counter() - t0
    info = probe_slide(path, max_pixels=1)
    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-c",
        _WSI_CHILD,
        str(path),
        str(detector) if detector else "-",
        str(classifier) if classifier else "-",
        device,
        str(threads),
        "1" if cpu_bf16 else "0",
    ]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
    if proc.returncode != 0:
        raise RuntimeError(f"WSI benchmark failed: {proc.stderr.strip()[-500:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "slide": {
            "path": str(path),
            "width": info.width,
            "height": info.height,
            "levels": info.level_count,
            "file_mib": path.stat().st_size / 2**20,
            "generate_seconds": gen_s,
        },
        **child,
        "peak_below_2_gib": child["peak_rss_mib"] < 2048,
    }


def bench_images(
    folder: Path, *, limit: int, size: tuple[int, int] | None, required: bool = False
) -> tuple[list[np.ndarray], str]:
    """Up to `limit` field images from `folder` (synthetic ones when it holds none and is not
    `required`), resized to `size` when given; and where they came from."""
    from .errors import InputError
    from .slides import IMAGE_SUFFIXES, read_image
    from .synthetic import synthetic_field

    images: list[np.ndarray] = []
    source = str(folder)
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        images = [read_image(f) for f in files]
    elif required:
        raise InputError(f"--images {folder} is not a folder")
    if not images:
        rng = np.random.default_rng(0)
        images = [
            synthetic_field(
                1280,
                960,
                cells=[(float(x), float(y), 10.0) for x, y in rng.uniform(50, 900, (40, 2))],
                seed=i,
            )
            for i in range(limit)
        ]
        source = "synthetic"
    if size is not None:
        images = [cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in images]
    return images, source
