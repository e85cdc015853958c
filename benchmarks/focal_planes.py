"""Which focal plane analysis reads (issue 15, item 2): the sharpest plane of each region (what
`focus.PlaneStackReader` does) against a fixed middle plane and an extended-depth-of-field merge,
scored on real CRIC validation fields made into Z stacks. Prints figures, writes
`<out>/focal_planes.json` and `<out>/focal_planes.png`; not a test.

We have no real Z stack, so each field becomes one: a smooth random depth map (cells of a thick
preparation lie at different depths, in patches a few hundred pixels wide) and three planes one
depth unit apart, each pixel blurred by a Gaussian of `BLUR_PX_PER_PLANE` x its distance from that
plane's focus. The merge is the classic one (per pixel, the plane with the most local Laplacian
energy, the choice median-filtered). Synthetic defocus is kind to the merge: it has none of the
halos and doubled nuclei a real stack's merge shows at depth edges, so the merge's figure here is
an upper bound for it.

    .venv/bin/python benchmarks/focal_planes.py [--fields 40] [--out docs/figures]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.focus import PlaneStackReader, focus_measure  # noqa: E402
from inference.slides import FieldReader, crop_padded  # noqa: E402
from inference.types import SlideInfo, SlideKind  # noqa: E402

if TYPE_CHECKING:
    from inference.interface import CellAnalyser

PLANES = 5
BLUR_PX_PER_PLANE = 2.0  # Gaussian sigma per depth unit out of focus
DEPTH_PATCH_PX = 300  # how wide a patch of one depth is
VARIANTS = ("in focus", "middle plane", "sharpest per region", "EDF merge")


def depth_map(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Depths in [0, PLANES - 1], smooth over about DEPTH_PATCH_PX."""
    coarse = rng.random((max(2, h // DEPTH_PATCH_PX + 2), max(2, w // DEPTH_PATCH_PX + 2)))
    d = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    d = (d - d.min()) / max(1e-6, float(d.max() - d.min()))
    return d * (PLANES - 1)


def focal_stack(image: np.ndarray, depth: np.ndarray) -> list[np.ndarray]:
    """Plane k: each pixel blurred by BLUR_PX_PER_PLANE x |depth - k| (interpolated between
    precomputed blur levels)."""
    sigmas = np.arange(0, PLANES) * BLUR_PX_PER_PLANE
    blurred = [image.astype(np.float32)] + [
        cv2.GaussianBlur(image, (0, 0), float(s)).astype(np.float32) for s in sigmas[1:]
    ]
    planes = []
    for k in range(PLANES):
        pos = np.abs(depth - k)  # in blur levels
        lo = np.clip(np.floor(pos).astype(int), 0, PLANES - 1)
        hi = np.clip(lo + 1, 0, PLANES - 1)
        t = (pos - lo)[..., None]
        out = np.zeros_like(blurred[0])
        for level in range(PLANES):
            out += np.where((lo == level)[..., None], blurred[level] * (1 - t), 0)
            out += np.where((hi == level)[..., None], blurred[level] * t, 0)
        planes.append(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    return planes


def edf_merge(planes: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the plane with the most local Laplacian energy (choice median-filtered)."""
    energy = []
    for p in planes:
        grey = cv2.cvtColor(p, cv2.COLOR_RGB2GRAY).astype(np.float32)
        energy.append(cv2.GaussianBlur(np.abs(cv2.Laplacian(grey, cv2.CV_32F)), (0, 0), 4))
    choice = cv2.medianBlur(np.argmax(np.stack(energy), axis=0).astype(np.uint8), 5)
    stack = np.stack(planes)
    return np.take_along_axis(stack, choice[None, ..., None].astype(np.int64), axis=0)[0]


class ArrayStack(PlaneStackReader):
    """Planes held in memory, one level (the sharpest plane of each region read)."""

    def __init__(self, planes: list[np.ndarray], info: SlideInfo) -> None:
        self._planes = planes
        self.info = info
        self.plane_count = len(planes)
        self._pick_plane(None)
        self.level_dimensions = ((info.width, info.height),)
        self.level_downsamples = (1.0,)

    def _read_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int], plane: int
    ) -> np.ndarray:
        x, y = int(location[0]), int(location[1])
        return crop_padded(self._planes[plane], x, y, int(size[0]), int(size[1]))


class _Variant:
    """`analyse(path)` of one way to read a field's stack (what `analyse_annotated` calls)."""

    def __init__(self, pipeline: Any, name: str, seed: int) -> None:
        self.pipeline, self.name, self.seed = pipeline, name, seed
        self.crops: dict[str, np.ndarray] = {}
        self.sharpness: list[float] = []

    def analyse(self, path: Path) -> Any:
        from inference.slides import read_image

        image = read_image(path)
        h, w = image.shape[:2]
        rng = np.random.default_rng(self.seed + sum(path.name.encode()))
        planes = focal_stack(image, depth_map(h, w, rng))
        info = SlideInfo(format="stack", kind=SlideKind.FIELD, width=w, height=h)
        if self.name == "in focus":
            reader: Any = FieldReader(image, info)
        elif self.name == "middle plane":
            reader = FieldReader(planes[PLANES // 2], info)
        elif self.name == "EDF merge":
            reader = FieldReader(edf_merge(planes), info)
        else:
            reader = ArrayStack(planes, info)
        result = self.pipeline.analyse_reader(reader)
        for cell in result.cells:  # what stage 2 saw: the sharpness of its crops
            cx, cy = cell.box.centre
            crop, _ = reader.read_region_plane((round(cx) - 40, round(cy) - 40), 0, (80, 80))
            self.sharpness.append(focus_measure(crop))
        self.crops[path.name] = reader.read_region((w // 2 - 100, h // 2 - 75), 0, (200, 150))
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=40, help="CRIC validation fields scored")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args()

    import torch

    from inference.commands import model_splits
    from inference.data.cric import CricDataset
    from inference.evaluation import analyse_annotated, split_filter
    from inference.interface import open_analyser
    from inference.reviewer_load import reviewer_load

    torch.set_num_threads(2)
    pipeline: Any = open_analyser(device="cpu")  # as a CPU worker runs it
    data = CricDataset.load()
    names, _ = split_filter(sorted(data.images), "val", model_splits(pipeline))
    names = names[: args.fields]
    results: dict[str, Any] = {}
    variants = {}
    for name in VARIANTS:
        variant = _Variant(pipeline, name, args.seed)
        # analyse_annotated only calls analyse(path): the variant stands in for the pipeline
        evals, _ = analyse_annotated(cast("CellAnalyser", variant), data, names)
        load = reviewer_load(evals, radius=30)
        results[name] = {
            "abnormal_recall_30px": load["abnormal_recall_by_radius_px"]["30"],
            "far_calls_per_field": load["abnormal_calls_per_field"]["far_from_marked"]["mean"],
            "top1_hit": load["top_k_hit"].get("top_1"),
            "crop_sharpness_median": float(np.median(variant.sharpness))
            if variant.sharpness
            else None,
        }
        variants[name] = variant
        print(name, json.dumps(results[name]))
    out = {
        "fields": len(names),
        "planes": PLANES,
        "blur_px_per_plane": BLUR_PX_PER_PLANE,
        "depth_patch_px": DEPTH_PATCH_PX,
        "model_versions": pipeline.versions,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "focal_planes.json").write_text(json.dumps(out, indent=2) + "\n")
    _figure(args.out / "focal_planes.png", results, variants, names[0])
    print(f"wrote {args.out / 'focal_planes.json'} and focal_planes.png")
    return 0


def _figure(path: Path, results: dict[str, Any], variants: dict[str, Any], example: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 6.5))
    for i, name in enumerate(VARIANTS):
        ax = fig.add_subplot(2, 4, i + 1)
        ax.imshow(variants[name].crops[example])
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    keys = [
        ("abnormal_recall_30px", "abnormal recall at 30 px"),
        ("far_calls_per_field", "abnormal calls far from marks / field"),
        ("top1_hit", "top-1 hit (abnormal fields)"),
    ]
    colours = ["#7f7f7f", "#d62728", "#1f77b4", "#ff7f0e"]
    for j, (key, label) in enumerate(keys):
        ax = fig.add_subplot(2, 3, 4 + j)
        values = [results[n][key] or 0.0 for n in VARIANTS]
        ax.bar(range(len(VARIANTS)), values, color=colours)
        ax.set_xticks(range(len(VARIANTS)), [n.replace(" ", "\n", 1) for n in VARIANTS], fontsize=8)
        ax.set_title(label, fontsize=10)
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(
        f"CRIC validation fields as {PLANES}-plane Z stacks (synthetic defocus): "
        "what analysis reads"
    )
    fig.subplots_adjust(left=0.04, right=0.98, top=0.9, bottom=0.08, hspace=0.3, wspace=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
