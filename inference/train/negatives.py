"""Hard negatives for stage 2: the pipeline's own false alarms, taught back to it as NILM.

Stage 2 learns from marked nuclei only, so it never sees what floods reviewers: neutrophil
clusters, overlapping groups, debris and mucus that stage 1 proposes and stage 2 calls abnormal.
`mine_negatives` runs the pipeline (`CellAnalyser`) over fields and keeps its abnormal calls that
cannot be abnormal cells:

* on annotated fields, the calls farther than `far_px` from every marked cell (the CRIC fields
  mark the abnormal cells; an unmarked abnormal cell is possible, hence only training fields and
  a margin well beyond the marks' 10-30 px offset);
* on fields known to hold no abnormal cell (a field label NILM, or a slide signed out NILM),
  every abnormal call.

They are written as an ImageFolder (`<out>/NILM/*.png`, level-0 patches centred on the call) with
`sources.csv` (patch, source image, SHA-256 of the source file), read back by `read_negatives`
into training patches (`train-classifier --negatives DIR`), so the leak checks see their sources.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.leaks import file_sha256
from ..errors import InputError
from ..slides import crop_padded, read_image
from ..types import BETHESDA_CLASSES, is_abnormal
from .samples import CellPatches

if TYPE_CHECKING:
    from ..calibration import AnnotatedImages
    from ..interface import CellAnalyser

SOURCES = "sources.csv"


def mine_negatives(
    analyser: CellAnalyser,
    images: AnnotatedImages,
    names: list[str],
    out: Path,
    *,
    patch: int,
    far_px: float = 40.0,
    max_per_field: int = 40,
    source_files: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Write the abnormal calls far from every marked cell (all of them on a field with no mark)
    as NILM patches under `out`; `source_files` names the original file of each image (for its
    SHA-256) when `images` holds resized copies. The most confident calls first, at most
    `max_per_field` per field."""
    folder = out / "NILM"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    half = patch // 2
    for name in tqdm(names, desc="mine negatives", unit="img"):
        path = images.image_path(name)
        result = analyser.analyse(path)
        marked = np.array([(c.x, c.y) for c in images.images[name].cells]).reshape(-1, 2)
        calls = []
        for cell in result.cells:
            if not is_abnormal(cell.label):
                continue
            x, y = cell.box.centre
            if len(marked) and np.hypot(*(marked - (x, y)).T).min() <= far_px:
                continue
            calls.append((1.0 - cell.probabilities["NILM"], x, y))
        if not calls:
            continue
        pixels = read_image(path)
        source = (source_files or {}).get(name, path)
        sha = file_sha256(source)
        for i, (_, x, y) in enumerate(sorted(calls, reverse=True)[:max_per_field]):
            crop = crop_padded(pixels, round(x) - half, round(y) - half, patch, patch)
            file = f"{Path(name).stem}_{i:03d}.png"
            Image.fromarray(crop).save(folder / file)
            rows.append({"patch": f"NILM/{file}", "image": name, "sha256": sha})
    with (out / SOURCES).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["patch", "image", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return {"fields": len(names), "negatives": len(rows), "out": str(out)}


def read_negatives(folder: Path, patch: int) -> CellPatches:
    """The patches of a `mine_negatives` folder as NILM training patches, cut (or padded) to
    `patch` around their centre: never resized, the cells keep their size in pixels."""
    sources = Path(folder) / SOURCES
    if not sources.is_file():
        raise InputError(f"--negatives {folder}: {SOURCES} is missing (made by mine-negatives)")
    with sources.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    images, names, sha = [], [], []
    for row in rows:
        img = read_image(Path(folder) / row["patch"])
        h, w = img.shape[:2]
        images.append(crop_padded(img, (w - patch) // 2, (h - patch) // 2, patch, patch))
        names.append(row["image"])
        sha.append(row["sha256"])
    if not images:
        return CellPatches.empty(patch)
    labels = np.full(len(images), BETHESDA_CLASSES.index("NILM"), np.int64)
    return CellPatches(np.stack(images), labels, names, sha)
