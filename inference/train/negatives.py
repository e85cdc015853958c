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
`sources.csv` (patch, source image, SHA-256 of the source file), read back by `read_mined`
into training patches (`train-classifier --negatives DIR`), so the leak checks see their sources.

`mine_positives` is the other side of fields with a field label only (issue 17, item 4): a field
of an abnormal class holds at least one abnormal cell (a multiple-instance signal), and the
pipeline's most suspicious call there is taken as one, of the field's class
(`mine-negatives --fields F --positives`, `train-classifier --positives DIR`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.leaks import file_sha256
from ..errors import InputError
from ..slides import centred_patch, crop_padded, read_image
from ..types import BETHESDA_CLASSES, STAGE2_CLASSES, is_abnormal
from .samples import CellPatches

if TYPE_CHECKING:
    from ..calibration import AnnotatedImages
    from ..interface import CellAnalyser
    from ..types import SlideResult

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

    def calls(name: str, result: SlideResult) -> list[tuple[float, float, float, str]]:
        marked = np.array([(c.x, c.y) for c in images.images[name].cells]).reshape(-1, 2)
        found = []
        for cell in result.cells:
            if not is_abnormal(cell.label):
                continue
            x, y = cell.box.centre
            if len(marked) and np.hypot(*(marked - (x, y)).T).min() <= far_px:
                continue
            found.append((1.0 - cell.probabilities["NILM"], x, y, "NILM"))
        return found

    written = _mine(analyser, images, names, out, calls, patch, max_per_field, source_files)
    return {"fields": len(names), "negatives": written, "out": str(out)}


def mine_positives(
    analyser: CellAnalyser,
    images: AnnotatedImages,
    field_classes: dict[str, str],
    out: Path,
    *,
    patch: int,
    per_field: int = 1,
    source_files: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Multiple-instance positives from fields with a field label only: a field of an abnormal
    class holds at least one abnormal cell, most likely the pipeline's most suspicious call
    there. Write the `per_field` calls with the highest P(abnormal) of each field in
    `field_classes` (name -> its Bethesda class) as patches of that class."""

    def calls(name: str, result: SlideResult) -> list[tuple[float, float, float, str]]:
        found = []
        for cell in result.cells:
            x, y = cell.box.centre
            found.append((1.0 - cell.probabilities["NILM"], x, y, field_classes[name]))
        return found

    names = sorted(field_classes)
    written = _mine(analyser, images, names, out, calls, patch, per_field, source_files)
    return {"fields": len(names), "positives": written, "out": str(out)}


def _mine(
    analyser: CellAnalyser,
    images: AnnotatedImages,
    names: list[str],
    out: Path,
    calls: Callable[[str, SlideResult], list[tuple[float, float, float, str]]],
    patch: int,
    per_field: int,
    source_files: dict[str, Path] | None,
) -> int:
    """Analyse each field, keep the `per_field` highest-scoring of its `calls` (score, x, y,
    Bethesda class) and write them as `<out>/<class>/<field>_<i>.png` with `sources.csv`."""
    rows = []
    half = patch // 2
    for name in tqdm(names, desc="mine", unit="img"):
        path = images.image_path(name)
        found = calls(name, analyser.analyse(path))
        if not found:
            continue
        pixels = read_image(path)
        sha = file_sha256((source_files or {}).get(name, path))
        for i, (_, x, y, label) in enumerate(sorted(found, reverse=True)[:per_field]):
            crop = crop_padded(pixels, round(x) - half, round(y) - half, patch, patch)
            file = f"{label}/{Path(name).stem}_{i:03d}.png"
            (out / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(out / file)
            rows.append({"patch": file, "image": name, "sha256": sha})
    out.mkdir(parents=True, exist_ok=True)
    with (out / SOURCES).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["patch", "image", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def read_mined(folder: Path, patch: int, negative: str = "NILM") -> CellPatches:
    """The patches of a `mine_negatives` / `mine_positives` folder as training patches of the
    class their sub-folder names (the negatives, under NILM, as `negative`: NILM or
    NOT_A_CELL), cut (or padded) to `patch` around their centre: never resized, the cells keep
    their size in pixels."""
    sources = Path(folder) / SOURCES
    if not sources.is_file():
        raise InputError(f"{folder}: {SOURCES} is missing (made by mine-negatives)")
    with sources.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    images, labels, names, sha = [], [], [], []
    for row in rows:
        label = Path(row["patch"]).parts[0]
        if label not in BETHESDA_CLASSES:
            raise InputError(f"{folder}: {row['patch']} is not under a Bethesda class folder")
        images.append(centred_patch(read_image(Path(folder) / row["patch"]), patch))
        labels.append(STAGE2_CLASSES.index(negative if label == "NILM" else label))
        names.append(row["image"])
        sha.append(row["sha256"])
    if not images:
        return CellPatches.empty(patch)
    return CellPatches(np.stack(images), np.array(labels, np.int64), names, sha)
