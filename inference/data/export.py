"""Reader of PapReview dataset exports (the zip made by the web app), for training and evaluation.

An export (folder, or the zip itself) holds::

    manifest.json                  slides, counts, split by patient, model versions, sha256 of files
    data.yaml                      YOLO dataset file (path, train/val/test image folders, names)
    images/<split>/<stem>.png      field images whole; whole-slide images cut into tiles
    points/<split>.csv             cell centres per image, CRIC cells-table format (stage 1 points)
    labels/<split>/<stem>.txt      YOLO labels: "<class> <cx> <cy> <w> <h>", normalised to the image
    coco/<split>.json              COCO detection: boxes in image pixels, Bethesda categories,
                                   provenance as annotation `attributes`; images without cells kept
    crops/<split>/<class>/*.png    ImageFolder crops (stage 2), centred on each cell
    geojson/<slide stem>.geojson   QuPath annotations per slide, level-0 pixels
    provenance.csv                 every cell, rejected ones included: prediction, final class,
                                   action, reviewer, model versions

`Export.open(path)` reads it; `detector_data` / `classifier_data` turn it (optionally merged with
the base CRIC data) into the training inputs of `inference.train`; `evaluate_checkpoint` scores a
checkpoint on one split (through `inference.evaluation`). No torch at import time.

A little over our ~400-line norm (about 430): the whole export format (constants the web
writer imports, the reader and the training inputs) in one place, so that writer and reader
cannot drift apart.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..types import BETHESDA_CLASSES, Box
from .cric import load_split, split_meta

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
_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
            by_image[im["id"]] = ExportImage(
                file_name=im["file_name"],
                path=self.root / im["file_name"],
                width=int(im["width"]),
                height=int(im["height"]),
                split=split,
                slide_id=int(im.get("slide_id", 0)),
                origin=(int(im.get("origin_x", 0)), int(im.get("origin_y", 0))),
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

    def crops(self, split: str) -> list[tuple[Path, str]]:
        """(crop file, Bethesda code) of the split's ImageFolder, sorted."""
        base = self.root / "crops" / split
        out = []
        for code in BETHESDA_CLASSES:
            folder = base / code
            if folder.is_dir():
                out += [(p, code) for p in sorted(folder.iterdir()) if p.is_file()]
        return out

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

    from ..slides import read_image
    from ..train.samples import FieldSample, resize_field

    out = []
    for im in export.images(split):
        image = resize_field(read_image(im.path), scale)
        pts = np.array([a.box.centre for a in im.annotations], np.float64).reshape(-1, 2) * scale
        out.append(FieldSample(im.file_name, image, pts, [a.label for a in im.annotations], scale))
    return out


def export_patches(export: Export, split: str, patch: int) -> CellPatches:
    """Classifier samples: the split's ImageFolder crops, resized to `patch` x `patch`."""
    import cv2
    import numpy as np

    from ..slides import read_image
    from ..train.samples import CellPatches

    images, labels, names = [], [], []
    for path, code in export.crops(split):
        img = read_image(path)
        if img.shape[:2] != (patch, patch):
            img = cv2.resize(img, (patch, patch), interpolation=cv2.INTER_AREA)
        images.append(img)
        labels.append(BETHESDA_CLASSES.index(code))
        names.append(path.name)
    arr = np.stack(images) if images else np.zeros((0, patch, patch, 3), np.uint8)
    return CellPatches(arr, np.array(labels, np.int64), names)


def export_meta(export: Export) -> dict[str, Any]:
    """What a checkpoint records about the export it was trained on."""
    m = export.manifest
    return {
        "name": f"PapReview export {export.label}",
        "export": {
            "name": m.get("name"),
            "version": m.get("version"),
            "id": m.get("export_id"),
            "created_at": m.get("created_at"),
            "files_sha256": hashlib.sha256(
                json.dumps(m.get("files", {}), sort_keys=True).encode()
            ).hexdigest(),
        },
        "split": {s: m.get("split", {}).get(s, []) for s in SPLITS},
        "split_method": "by patient (see the export's manifest)",
        "counts": m.get("counts", {}),
    }


def _check(export: Export) -> None:
    problems = export.verify()
    if problems:
        shown = "; ".join(problems[:5])
        raise InputError(f"export {export.label} does not match its manifest: {shown}")


def detector_data(
    path: Path,
    *,
    scale: float,
    merge_base: bool = False,
    data_dir: Path | None = None,
    split_seed: int = 2021,
) -> tuple[list[FieldSample], list[FieldSample], dict[str, Any]]:
    """(train, val, data meta) for stage 1 from an export, optionally plus the CRIC base data."""
    with opened(path) as export:
        _check(export)
        train = export_fields(export, "train", scale=scale)
        val = export_fields(export, "val", scale=scale)
        meta = export_meta(export)
    if merge_base:
        from ..train.samples import load_cric_fields

        dataset, split, seed = load_split(data_dir, split_seed)
        train += load_cric_fields(dataset, split["train"], scale=scale, desc="base train")
        val += load_cric_fields(dataset, split["val"], scale=scale, desc="base val")
        meta = {**meta, "merged_with": split_meta(dataset, split, seed)}
    return train, val, meta


def classifier_data(
    path: Path,
    *,
    patch: int,
    merge_base: bool = False,
    data_dir: Path | None = None,
    split_seed: int = 2021,
) -> tuple[CellPatches, CellPatches, dict[str, Any]]:
    """(train, val, data meta) for stage 2 from an export, optionally plus the CRIC base data."""
    with opened(path) as export:
        _check(export)
        train = export_patches(export, "train", patch)
        val = export_patches(export, "val", patch)
        meta = export_meta(export)
    if merge_base:
        from ..train.samples import CellPatches, cric_patches

        dataset, split, seed = load_split(data_dir, split_seed)
        base_train = cric_patches(dataset, split["train"], patch, desc="base train")
        base_val = cric_patches(dataset, split["val"], patch, desc="base val")
        train = CellPatches.joined([train, base_train])
        val = CellPatches.joined([val, base_val])
        meta = {**meta, "merged_with": split_meta(dataset, split, seed)}
    return train, val, meta


# --------------------------------------------------------------------------------------------
# Evaluation of a checkpoint on an export (the model registry's compare page)
# --------------------------------------------------------------------------------------------


def evaluate_checkpoint(
    checkpoint: Path, *, stage: str, export: Export, split: str = "test", radius_px: float = 20.0
) -> dict[str, Any]:
    """Score a checkpoint on one split of an export (through `inference.evaluation`).

    Classifier: the split's crops -> six-class / four-class / abnormal-vs-NILM reports with
    confusion matrices (labels decided as in the pipeline: the checkpoint's P(abnormal) threshold).
    Detector: the split's images -> recall of all and of abnormal cells, candidates per image at
    the checkpoint's thresholds, and a truth (normal / abnormal cell) x outcome (missed / found as
    normal / found as abnormal) confusion matrix.
    """
    from ..checkpoints import load_checkpoint
    from ..classifier import ClassifierConfig
    from ..detector import DetectorConfig
    from ..evaluation import classifier_scores, detector_scores

    ckpt = load_checkpoint(Path(checkpoint), stage=stage)
    head = {"stage": stage, "version": ckpt.version, "split": split}
    if stage == "classifier":
        crop_px = ClassifierConfig.from_dict(ckpt.meta["config"]).crop_px
        patches = export_patches(export, split, crop_px)
        if not len(patches.labels):
            raise InputError(f"export {export.label} has no {split} crops to evaluate")
        return {**head, **classifier_scores(ckpt, patches)}
    scale = DetectorConfig.from_dict(ckpt.meta["config"]).input_scale
    fields = export_fields(export, split, scale=scale)
    if not fields:
        raise InputError(f"export {export.label} has no {split} images to evaluate")
    return {**head, **detector_scores(ckpt, fields, radius_px=radius_px)}


def class_counts(labels: Sequence[str]) -> dict[str, int]:
    c = Counter(labels)
    return {code: c.get(code, 0) for code in BETHESDA_CLASSES}
