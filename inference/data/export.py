"""Reader of PapReview dataset exports (the zip made by the web app), for training and evaluation.

An export (folder, or the zip itself) holds::

    manifest.json                  slides, counts, split by patient, model versions, sha256 of
                                   files, and per image the SHA-256 of its source slide's file
    data.yaml                      YOLO dataset file (path, train/val/test image folders, names)
    images/<split>/<stem>.png      field images whole; whole-slide images cut into tiles
    points/<split>.csv             cell centres per image, CRIC cells-table format (stage 1 points)
    labels/<split>/<stem>.txt      YOLO labels: "<class> <cx> <cy> <w> <h>", normalised to the image
    coco/<split>.json              COCO detection: boxes in image pixels, Bethesda categories,
                                   provenance as annotation `attributes`; images without cells kept
    crops/<split>/<class>/*.png    ImageFolder crops (stage 2), centred on each cell
    rejected/<split>/*.png         crops of the calls a person rejected (hard negatives)
    geojson/<slide stem>.geojson   QuPath annotations per slide, level-0 pixels
    provenance.csv                 every cell, rejected ones included: prediction, final class,
                                   action, reviewer, model versions

Every image (and crop) is identified by the SHA-256 of its slide's uploaded file
(`ExportImage.source_sha256`; `Export.sources` for the leak checks of `inference.data.leaks`).

`Export.open(path)` reads it; `export_fields` / `export_patches` turn a split into the training
samples of `inference.train` (`inference.data.inputs` assembles them, optionally merged with the
base CRIC data); `inference.evaluation.evaluate_export` scores a pair of checkpoints on one
split. No torch at import time.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..types import BETHESDA_CLASSES, STAGE2_CLASSES, Bethesda, Box
from .cric import CellsTable
from .leaks import ImageRef, file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from ..train.samples import CellPatches, FieldSample

EXPORT_FORMAT = "papreview-export"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "manifest.json"
ACTIONS: tuple[str, ...] = ("accepted", "relabelled", "moved", "rejected", "added")
# COCO category ids: 1-based, in BETHESDA_CLASSES order. YOLO class ids: 0-based, same order.
COCO_CATEGORIES: list[dict[str, Any]] = [
    {"id": i + 1, "name": code, "supercategory": "cell"} for i, code in enumerate(BETHESDA_CLASSES)
]
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "slide_id",
    "patient",
    "split",
    "x",
    "y",
    "width",
    "height",
    "predicted_class",
    "predicted_score",
    "detection_score",
    "final_class",
    "action",
    "label_source",
    "reviewer",
    "reviewed_at",
    "detector_version",
    "classifier_version",
    "run_id",
)
_SLIDE_STEM = re.compile(r"^s(\d+)(?:_|\.|$)")

# `file_sha256` (from .leaks) is also imported from here by the web side's export build.


def slide_stem(slide_id: int) -> str:
    """The stem every file of a slide starts with (images, crops, GeoJSON)."""
    return f"s{slide_id:06d}"


def slide_id_of(file_name: str) -> int | None:
    """The slide id in an export file's name (`slide_stem`), or None."""
    m = _SLIDE_STEM.match(Path(file_name).name)
    return int(m.group(1)) if m else None


def coco_category_id(code: str) -> int:
    return BETHESDA_CLASSES.index(code) + 1


def yolo_line(code: str, box: Box, width: int, height: int) -> str:
    """One YOLO label line for a box in pixels of a `width` x `height` image."""
    cx = (box.x + box.width / 2) / width
    cy = (box.y + box.height / 2) / height
    return (
        f"{BETHESDA_CLASSES.index(code)} {cx:.6f} {cy:.6f} "
        f"{box.width / width:.6f} {box.height / height:.6f}"
    )


@dataclass(frozen=True)
class YoloLabel:
    class_id: int
    cx: float
    cy: float
    w: float
    h: float

    @property
    def code(self) -> str:
        return BETHESDA_CLASSES[self.class_id]

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """x, y, width, height in pixels of a `width` x `height` image."""
        bw, bh = self.w * width, self.h * height
        return (self.cx * width - bw / 2, self.cy * height - bh / 2, bw, bh)


def read_yolo_labels(path: Path) -> list[YoloLabel]:
    """Parse a YOLO label file (an empty or missing file: no objects)."""
    path = Path(path)
    if not path.is_file():
        return []
    labels = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise InputError(f"{path.name}:{n}: expected 5 fields, got {len(parts)}")
        cls = int(parts[0])
        values = [float(v) for v in parts[1:]]
        if not 0 <= cls < len(BETHESDA_CLASSES) or not all(0.0 <= v <= 1.0 for v in values):
            raise InputError(f"{path.name}:{n}: class or coordinates out of range")
        labels.append(YoloLabel(cls, *values))
    return labels


@dataclass(frozen=True)
class ExportAnnotation:
    box: Box  # in the image's pixels
    label: str  # final Bethesda code
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportImage:
    file_name: str  # relative to the export root
    path: Path
    width: int
    height: int
    split: str
    slide_id: int
    origin: tuple[int, int]  # level-0 offset of this image in its slide (tiles), else (0, 0)
    annotations: list[ExportAnnotation] = field(default_factory=list)
    # SHA-256 of the source slide's file: a field image's own file; a tile's whole slide (with
    # `origin` telling where); "" when the manifest does not say
    source_sha256: str = ""


@dataclass
class Export:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: Path) -> Export:
        """Read an unpacked export folder (see `opened` for a zip)."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise InputError(f"{root} is not a PapReview export: {MANIFEST} is missing")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
        if manifest.get("format") != EXPORT_FORMAT:
            raise InputError(f"{path}: not a PapReview export manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{path}: export format version {manifest.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        return cls(root=root, manifest=manifest)

    @property
    def label(self) -> str:
        return f"{self.manifest.get('name', '?')} v{self.manifest.get('version', '?')}"

    def verify(self) -> list[str]:
        """Problems with the files against the manifest's checksums (empty: all good)."""
        problems = []
        listed: dict[str, str] = self.manifest.get("files", {})
        for rel, digest in sorted(listed.items()):
            p = self.root / rel
            if not p.is_file():
                problems.append(f"missing: {rel}")
            elif file_sha256(p) != digest:
                problems.append(f"checksum differs: {rel}")
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and rel != MANIFEST and rel not in listed:
                problems.append(f"not in the manifest: {rel}")
        return problems

    def coco_path(self, split: str) -> Path:
        return self.root / "coco" / f"{split}.json"

    @property
    def slide_sha256(self) -> dict[int, str]:
        """The SHA-256 of each exported slide's file, by slide id."""
        return {
            int(sl["id"]): str(sl.get("sha256") or "") for sl in self.manifest.get("slides", [])
        }

    def source_sha256(self, file_name: str, slide_id: int | None = None) -> str:
        """The SHA-256 of the source file of an exported image (the manifest's per-image entry;
        for a crop, or an export without one, its slide's)."""
        entry = self.manifest.get("images", {}).get(file_name)
        if isinstance(entry, dict) and entry.get("sha256"):
            return str(entry["sha256"])
        sid = slide_id if slide_id else slide_id_of(file_name)
        return self.slide_sha256.get(sid, "") if sid is not None else ""

    def refs(self, split: str) -> list[ImageRef]:
        """The split's images as leak-check identities (`inference.data.leaks`)."""
        return [ImageRef(im.source_sha256, im.file_name) for im in self.images(split)]

    def sources(self) -> dict[str, list[ImageRef]]:
        return {s: self.refs(s) for s in SPLITS}

    def images(self, split: str) -> list[ExportImage]:
        """The split's images with their annotations, read from its COCO file."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        path = self.coco_path(split)
        if not path.is_file():
            return []
        coco = json.loads(path.read_text())
        categories = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[int, ExportImage] = {}
        for im in coco["images"]:
            slide_id = int(im.get("slide_id", 0))
            by_image[im["id"]] = ExportImage(
                file_name=im["file_name"],
                path=self.root / im["file_name"],
                width=int(im["width"]),
                height=int(im["height"]),
                split=split,
                slide_id=slide_id,
                origin=(int(im.get("origin_x", 0)), int(im.get("origin_y", 0))),
                source_sha256=self.source_sha256(im["file_name"], slide_id),
            )
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            by_image[ann["image_id"]].annotations.append(
                ExportAnnotation(
                    box=Box(round(x), round(y), round(w), round(h)),
                    label=categories[ann["category_id"]],
                    attributes=dict(ann.get("attributes", {})),
                )
            )
        return list(by_image.values())

    def points_path(self, split: str) -> Path:
        """The split's cell centres as a CRIC cells table (read with `cric.read_cells_csv`;
        `python -m inference evaluate --images images/<split> --cells points/<split>.csv`)."""
        return self.root / "points" / f"{split}.csv"

    def points(self, split: str) -> CellsTable:
        """The split's images with their cell centres (`images/<split>/`, `points_path`)."""
        return CellsTable.read(self.root / "images" / split, self.points_path(split))

    def crops(self, split: str) -> list[tuple[Path, str]]:
        """(crop file, Bethesda code) of the split's ImageFolder, sorted."""
        base = self.root / "crops" / split
        out = []
        for code in BETHESDA_CLASSES:
            folder = base / code
            if folder.is_dir():
                out += [(p, code) for p in sorted(folder.iterdir()) if p.is_file()]
        return out

    def rejected(self, split: str) -> list[Path]:
        """Crops of the split's rejected calls (`rejected/<split>/`), sorted."""
        folder = self.root / "rejected" / split
        return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def provenance(self) -> list[dict[str, str]]:
        with (self.root / "provenance.csv").open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Export]:
    """An export from its folder or its zip (unpacked to a temporary folder while open)."""
    path = Path(path)
    if path.is_dir():
        yield Export.open(path)
        return
    if not zipfile.is_zipfile(path):
        raise InputError(f"--data {path}: neither an export folder nor an export zip")
    with tempfile.TemporaryDirectory(prefix="papreview-export-") as tmp:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                target = (Path(tmp) / member).resolve()
                if not target.is_relative_to(Path(tmp).resolve()):
                    raise InputError(f"{path.name}: unsafe path in the zip: {member}")
            zf.extractall(tmp)
        yield Export.open(Path(tmp))


# --------------------------------------------------------------------------------------------
# Training inputs
# --------------------------------------------------------------------------------------------


def export_fields(export: Export, split: str, *, scale: float = 1.0) -> list[FieldSample]:
    """Detector samples: each export image (downscaled by `scale`) with its cell centres."""
    import numpy as np

    from ..scale import rescaled
    from ..slides import read_image
    from ..train.samples import FieldSample

    out = []
    for im in export.images(split):
        image = rescaled(read_image(im.path), scale)
        pts = np.array([a.box.centre for a in im.annotations], np.float64).reshape(-1, 2) * scale
        labels = [a.label for a in im.annotations]
        out.append(FieldSample(im.file_name, image, pts, labels, scale, im.source_sha256))
    return out


def export_patches(
    export: Export, split: str, patch: int, rejected_label: str = Bethesda.NILM.value
) -> CellPatches:
    """Classifier samples: the split's ImageFolder crops, then the calls people rejected as
    `rejected_label` (hard negatives: NILM, or NOT_A_CELL for a classifier with that outcome),
    each cut or padded (white, as the
    export pads beyond the slide) to `patch` x `patch` around its centre, never resized: a crop
    keeps its level-0 scale whatever the export's crop size."""
    import numpy as np

    from ..slides import centred_patch, read_image
    from ..train.samples import CellPatches

    images, labels, names, sha = [], [], [], []
    rejected = [(p, rejected_label) for p in export.rejected(split)]
    for path, code in [*export.crops(split), *rejected]:
        images.append(centred_patch(read_image(path), patch))
        labels.append(STAGE2_CLASSES.index(code))
        names.append(path.relative_to(export.root).as_posix())
        sha.append(export.source_sha256(names[-1]))
    arr = np.stack(images) if images else np.zeros((0, patch, patch, 3), np.uint8)
    return CellPatches(arr, np.array(labels, np.int64), names, sha)


def class_counts(labels: Sequence[str]) -> dict[str, int]:
    c = Counter(labels)
    return {code: c.get(code, 0) for code in BETHESDA_CLASSES}
