"""Writes for dataset exports.

The life of an export:

1. `dataset_export_create(...)` (page, API) checks the filter (signed-out slides only), takes the
   next version of the export's name and creates a `pending` row; on commit the id goes to the
   `celery` queue (`dataset_export_build_task`).
2. `dataset_export_build(export_id=...)` (the task) takes the export's advisory lock, streams the
   chosen slides ONE AT A TIME into a temporary folder (images or tiles, YOLO labels, COCO entries,
   crops, GeoJSON, provenance rows), saving progress after each slide, then writes the manifest
   (sha256 of every file), zips the folder next to its final place and renames it into place;
   only then is the row marked `ready`. A rerun (redelivery after a crash) starts again from
   scratch; a ready export is never rebuilt or changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from inference.data.export import (
    EXPORT_FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    file_sha256,
    yolo_line,
)
from inference.slides import SlideReader, Tile, open_slide, tile_grid
from inference.types import BETHESDA_CLASSES, Bethesda, Box, SlideKind
from papreview.accounts.roles import user_can_write
from papreview.analysis.adapter import slide_local_path
from papreview.analysis.services import TRANSIENT_ERRORS
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.models import Slide
from papreview.core.exceptions import ApplicationError, ConflictError, PermissionDeniedError
from papreview.core.locks import advisory_lock
from papreview.datasets.models import DatasetExport, ExportFormat, ExportStatus
from papreview.datasets.selectors import export_slides, slide_cells_for_export
from papreview.datasets.writers import (
    CocoWriter,
    PointsWriter,
    ProvenanceWriter,
    data_yaml,
    write_geojson,
)
from papreview.review.models import Cell, ReviewStatus

logger = logging.getLogger(__name__)

_LOCK_NAMESPACE = 0x50415058  # "PAPX": one build of an export at a time


class EmptyExportError(ApplicationError):
    code = "empty_export"


# --------------------------------------------------------------------------------------------
# Parameters and filters
# --------------------------------------------------------------------------------------------


def _number(value: Any, kind: type) -> Any:
    """`value` as an int or float when it is one (bools and text are not), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() and abs(value) < 2**31 else None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class ExportParams:
    tile_size: int = 1024  # YOLO tiles of whole-slide images, level-0 px
    tile_overlap: int = 128
    empty_tile_ratio: float = 0.1  # share of tiles without cells that are kept
    crop_size: int = 168  # ImageFolder crops, level-0 px (the classifier's patch side)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train/val/test, by patient
    seed: int = 0
    # Undecided predictions in the training formats too, marked `pseudo_label` (off: only what a
    # person decided, plus the undecided cells of NILM sign-outs as NILM).
    include_undecided: bool = False

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        if not 64 <= self.tile_size <= 8192:
            errors["tile_size"] = "Choose a tile size between 64 and 8192 px."
        if not 0 <= self.tile_overlap < self.tile_size // 2:
            errors["tile_overlap"] = "The overlap must be at least 0 and under half a tile."
        if not 0.0 <= self.empty_tile_ratio <= 1.0:
            errors["empty_tile_ratio"] = "Choose a share between 0 and 1."
        if not 16 <= self.crop_size <= 1024:
            errors["crop_size"] = "Choose a crop size between 16 and 1024 px."
        if len(self.split) != 3 or any(f < 0 for f in self.split) or sum(self.split) <= 0:
            errors["split"] = "Give three non-negative train/val/test fractions."
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportParams:
        """Parameters from JSON-like input; wrong names or types are a ValidationError."""
        if not isinstance(data, dict):
            raise ValidationError({"params": "Give the parameters as an object."})
        unknown = sorted(str(k) for k in data if k not in cls.__dataclass_fields__)
        if unknown:
            raise ValidationError({"params": f"Unknown parameter(s): {', '.join(unknown)}."})
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, value in data.items():
            if name == "split":
                if not isinstance(value, list | tuple) or len(value) != 3:
                    errors[name] = "Give three train/val/test fractions, e.g. [0.7, 0.15, 0.15]."
                    continue
                parts = [_number(v, float) for v in value]
                if any(v is None for v in parts):
                    errors[name] = "The fractions must be numbers."
                    continue
                values[name] = tuple(parts)
                continue
            if name == "include_undecided":
                if not isinstance(value, bool):
                    errors[name] = "Must be true or false."
                else:
                    values[name] = value
                continue
            kind = float if name == "empty_tile_ratio" else int
            number = _number(value, kind)
            if number is None:
                errors[name] = f"Must be {'a number' if kind is float else 'a whole number'}."
            else:
                values[name] = number
        if errors:
            raise ValidationError(errors)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        return d


@dataclass(frozen=True)
class ExportFilters:
    signed_out_from: date | None = None
    signed_out_to: date | None = None
    categories: tuple[str, ...] = ()  # slide interpretation (Bethesda), any when empty
    patients: tuple[str, ...] = ()  # patient identifiers, any when empty
    slide_ids: tuple[int, ...] = ()
    reviewed_by: tuple[int, ...] = field(default=())  # user ids who signed out

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in BETHESDA_CLASSES]
        if unknown:
            raise ValidationError({"categories": f"Unknown class(es): {', '.join(unknown)}."})
        start, end = self.signed_out_from, self.signed_out_to
        if start and end and start > end:
            raise ValidationError({"signed_out_to": "The end date is before the start date."})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportFilters:
        """Filters from JSON-like input; wrong names or types are a ValidationError."""
        if not isinstance(data, dict):
            raise ValidationError({"filters": "Give the filters as an object."})
        unknown = sorted(str(k) for k in data if k not in cls.__dataclass_fields__)
        if unknown:
            raise ValidationError({"filters": f"Unknown filter(s): {', '.join(unknown)}."})
        errors: dict[str, str] = {}

        def day(name: str) -> date | None:
            value = data.get(name)
            if not value:
                return None
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                errors[name] = "Give a date as YYYY-MM-DD."
                return None

        def items(name: str, kind: type) -> tuple[Any, ...]:
            value = data.get(name) or ()
            if not isinstance(value, list | tuple):
                errors[name] = "Give a list."
                return ()
            parsed = [v if kind is str and isinstance(v, str) else _number(v, int) for v in value]
            if kind is str and not all(isinstance(v, str) for v in value):
                errors[name] = "Give a list of text values."
                return ()
            if kind is int and any(v is None for v in parsed):
                errors[name] = "Give a list of ids."
                return ()
            return tuple(parsed)

        values: dict[str, Any] = {
            "signed_out_from": day("signed_out_from"),
            "signed_out_to": day("signed_out_to"),
            "categories": items("categories", str),
            "patients": items("patients", str),
            "slide_ids": items("slide_ids", int),
            "reviewed_by": items("reviewed_by", int),
        }
        if errors:
            raise ValidationError(errors)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed_out_from": self.signed_out_from.isoformat() if self.signed_out_from else None,
            "signed_out_to": self.signed_out_to.isoformat() if self.signed_out_to else None,
            "categories": list(self.categories),
            "patients": list(self.patients),
            "slide_ids": list(self.slide_ids),
            "reviewed_by": list(self.reviewed_by),
        }


def patient_split(
    identifiers: list[str], *, fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Patient identifier -> train/val/test; deterministic in `seed`. With 3 or more patients
    val and test get at least one patient each (when their fraction is not 0)."""
    names = sorted(set(identifiers))
    random.Random(seed).shuffle(names)
    total = sum(fractions)
    n = len(names)
    n_val = round(n * fractions[1] / total)
    n_test = round(n * fractions[2] / total)
    if n >= 3:
        n_val = max(n_val, 1) if fractions[1] > 0 else 0
        n_test = max(n_test, 1) if fractions[2] > 0 else 0
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


# --------------------------------------------------------------------------------------------
# Creating an export (the request)
# --------------------------------------------------------------------------------------------


def dataset_export_create(
    *,
    name: str,
    created_by: User,
    filters: dict[str, Any] | ExportFilters | None = None,
    params: dict[str, Any] | ExportParams | None = None,
) -> DatasetExport:
    """A new version of the named export, queued for building (on commit)."""
    if not user_can_write(created_by):
        raise PermissionDeniedError("Your role can read exports but not make them.")
    name = name.strip()
    if not name or slugify(name) == "":
        raise ValidationError({"name": "Give the export a name (letters or digits)."})
    if len(name) > 100:
        raise ValidationError({"name": "At most 100 characters."})
    f = filters if isinstance(filters, ExportFilters) else ExportFilters.from_dict(filters or {})
    p = params if isinstance(params, ExportParams) else ExportParams.from_dict(params or {})
    count = export_slides(filters=f).count()
    if count == 0:
        raise EmptyExportError(
            "No signed-out slide matches this filter; only signed-out slides are exported."
        )
    from papreview.datasets.tasks import dataset_export_build_task

    with transaction.atomic():
        # Serialise version numbers per name: lock the name's rows (or the table's first row).
        existing = list(
            DatasetExport.objects.select_for_update()
            .filter(name=name)
            .values_list("version", flat=True)
        )
        export = DatasetExport.objects.create(
            name=name,
            version=max(existing, default=0) + 1,
            formats=[f.value for f in ExportFormat],
            filters=f.to_dict(),
            params=p.to_dict(),
            slide_count=count,
            created_by=created_by,
        )
        export_id = export.pk
        audit_record(
            action=AuditAction.EXPORT_CREATED,
            actor=created_by,
            target=export,
            data={"name": name, "version": export.version, "slide_count": count},
        )
        transaction.on_commit(lambda: dataset_export_build_task.delay(export_id))
    return export


def dataset_export_requeue(*, export: DatasetExport) -> DatasetExport:
    """Queue a failed or stuck (pending/running with no live build) export again. A ready
    export never changes: make a new version instead."""
    if export.status == ExportStatus.READY:
        raise ConflictError(f"Export {export} is ready and never changes; make a new version.")
    from papreview.datasets.tasks import dataset_export_build_task

    with transaction.atomic():
        DatasetExport.objects.filter(pk=export.pk).exclude(status=ExportStatus.READY).update(
            status=ExportStatus.PENDING, error="", progress=0, slides_done=0,
            updated_at=timezone.now(),
        )  # fmt: skip
        export_id = export.pk
        transaction.on_commit(lambda: dataset_export_build_task.delay(export_id))
    export.refresh_from_db()
    return export


# --------------------------------------------------------------------------------------------
# Building an export (the task)
# --------------------------------------------------------------------------------------------


def _export_lock(export_id: int) -> contextlib.AbstractContextManager[bool]:
    """One build of an export at a time (see papreview.core.locks.advisory_lock)."""
    return advisory_lock(namespace=_LOCK_NAMESPACE, key=export_id, what=f"export {export_id}")


# Where a cell's label in an export comes from (provenance.csv `label_source`).
DECIDED = "decided"  # a person's action: accepted, relabelled, moved, rejected, added, cleared
IMPLIED_BY_NILM = "implied_by_nilm_signout"  # undecided on a slide signed out NILM: NILM
PSEUDO_LABEL = "pseudo_label"  # undecided, the model's class (only with include_undecided)
UNDECIDED = "undecided"  # undecided: in provenance.csv only, never in the training formats


def cell_action(cell: Cell, original_box: tuple[int, int, int, int] | None) -> str:
    """What a person did with the cell: accepted, relabelled, moved, rejected, added, cleared
    ("reviewed, none abnormal"), or `undecided` when nobody decided it (sign-out decides
    nothing)."""
    status = cell.review_status
    if status == ReviewStatus.PREDICTED:
        return "undecided"
    if status in (ReviewStatus.ADDED, ReviewStatus.REJECTED, ReviewStatus.CLEARED):
        return str(status)
    if status == ReviewStatus.RELABELLED or (
        cell.predicted_class and cell.current_class != cell.predicted_class
    ):
        return "relabelled"
    box = (cell.x, cell.y, cell.width, cell.height)
    if original_box is not None and tuple(original_box) != box:
        return "moved"
    return "accepted"


def cell_label(
    cell: Cell, *, action: str, slide_category: str | None, include_undecided: bool
) -> tuple[str | None, str]:
    """The class a cell carries in the training formats (None: left out) and its source."""
    if action == "rejected":
        return None, DECIDED
    if action != "undecided":
        return cell.current_class, DECIDED
    if slide_category == Bethesda.NILM:
        return Bethesda.NILM.value, IMPLIED_BY_NILM
    if include_undecided:
        return cell.current_class, PSEUDO_LABEL
    return None, UNDECIDED


def cell_provenance(
    cell: Cell,
    *,
    original_box: tuple[int, int, int, int] | None,
    slide_category: str | None,
    include_undecided: bool,
) -> dict[str, Any]:
    run = cell.run
    versions = (run.model_versions or {}) if run is not None else {}
    detector = run.detector_version.name if run and run.detector_version else None
    classifier = run.classifier_version.name if run and run.classifier_version else None
    score = cell.probabilities.get(cell.predicted_class) if cell.predicted_class else None
    action = cell_action(cell, original_box)
    final_class, source = cell_label(
        cell, action=action, slide_category=slide_category, include_undecided=include_undecided
    )
    decided = source == DECIDED
    reviewer = cell.last_reviewed_by
    return {
        "cell_id": cell.pk,
        "predicted_class": cell.predicted_class or None,
        "predicted_score": None if score is None else round(float(score), 6),
        "detection_score": cell.detection_score,
        "final_class": final_class,
        "action": action,
        "label_source": source,
        # Only a person who decided the cell is named: nobody reviewed an undecided one.
        "reviewer": reviewer.get_username() if decided and reviewer else None,
        "reviewed_at": (
            cell.last_reviewed_at.isoformat() if decided and cell.last_reviewed_at else None
        ),
        "detector_version": detector or versions.get("detector"),
        "classifier_version": classifier or versions.get("classifier"),
        "run_id": cell.run_id,
    }


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


@dataclass
class _Build:
    """What one build has written so far (counts only; pixels are on disk)."""

    root: Path
    params: ExportParams
    coco: dict[str, CocoWriter]
    provenance: ProvenanceWriter
    points: dict[str, PointsWriter]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    label_sources: Counter[str] = field(default_factory=Counter)
    images: Counter[str] = field(default_factory=Counter)
    empty_tiles: Counter[str] = field(default_factory=Counter)
    crops: Counter[str] = field(default_factory=Counter)
    model_versions: set[tuple[str, str]] = field(default_factory=set)
    slides: list[dict[str, Any]] = field(default_factory=list)
    cells: int = 0


def _export_slide(build: _Build, slide: Slide, split: str) -> None:
    interpretation = getattr(slide, "interpretation", None)
    signed_out_by = interpretation.signed_out_by.get_username() if interpretation else ""
    category = interpretation.bethesda_category if interpretation else None
    cells, first_boxes = slide_cells_for_export(slide_id=slide.pk)
    stem = f"s{slide.pk:06d}"
    # The cells the training formats carry, each with its label (see cell_label).
    kept: list[tuple[Cell, dict[str, Any]]] = []
    for cell in cells:
        prov = cell_provenance(
            cell,
            original_box=first_boxes.get(cell.pk),
            slide_category=category,
            include_undecided=build.params.include_undecided,
        )
        build.provenance.write(
            {
                **prov,
                "slide_id": slide.pk,
                "patient": slide.patient.identifier,
                "split": split,
                "x": cell.x,
                "y": cell.y,
                "width": cell.width,
                "height": cell.height,
            }
        )
        build.actions[prov["action"]] += 1
        build.label_sources[prov["label_source"]] += 1
        for stage in ("detector", "classifier"):
            if prov[f"{stage}_version"]:
                build.model_versions.add((stage, prov[f"{stage}_version"]))
        if prov["final_class"] is not None:
            kept.append((cell, prov))
    build.counts.setdefault(split, Counter()).update(prov["final_class"] for _, prov in kept)
    build.cells += len(kept)
    write_geojson(
        build.root / "geojson" / f"{stem}.geojson",
        ((c.pk, prov["final_class"], (c.x, c.y, c.width, c.height)) for c, prov in kept),
    )
    p = build.params
    n_images = 0
    rng = random.Random(f"{p.seed}:{slide.pk}")
    with slide_local_path(slide) as path, open_slide(path) as reader:
        if slide.kind == SlideKind.WHOLE_SLIDE:
            tiles = tile_grid(slide.width, slide.height, tile=p.tile_size, overlap=p.tile_overlap)
        else:
            tiles = [Tile(0, 0, slide.width, slide.height)]
        for tile in tiles:
            inside = [
                (c, prov)
                for c, prov in kept
                if tile.x <= c.x + c.width / 2 < tile.x + tile.width
                and tile.y <= c.y + c.height / 2 < tile.y + tile.height
            ]
            whole = slide.kind != SlideKind.WHOLE_SLIDE
            if not inside and not whole and rng.random() >= p.empty_tile_ratio:
                continue
            name = stem if whole else f"{stem}_x{tile.x}_y{tile.y}"
            rel = f"images/{split}/{name}.png"
            pixels = reader.read_region((tile.x, tile.y), 0, (tile.width, tile.height))
            _png(build.root / rel, pixels)
            image_id = build.coco[split].add_image(
                file_name=rel,
                width=tile.width,
                height=tile.height,
                slide_id=slide.pk,
                patient=slide.patient.identifier,
                origin_x=tile.x,
                origin_y=tile.y,
                mpp=slide.mpp,
            )
            lines = []
            for c, prov in inside:
                x0, y0 = max(c.x, tile.x), max(c.y, tile.y)
                x1 = min(c.x + c.width, tile.x + tile.width)
                y1 = min(c.y + c.height, tile.y + tile.height)
                bbox = (x0 - tile.x, y0 - tile.y, x1 - x0, y1 - y0)
                label = prov["final_class"]
                build.coco[split].add_annotation(
                    image_id=image_id, code=label, bbox=bbox, attributes=prov
                )
                lines.append(yolo_line(label, Box(*bbox), tile.width, tile.height))
                build.points[split].write(
                    f"{name}.png", c.x + c.width / 2 - tile.x, c.y + c.height / 2 - tile.y, label
                )
            label_path = build.root / "labels" / split / f"{name}.txt"
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.write_text("".join(line + "\n" for line in lines))
            n_images += 1
            build.images[split] += 1
            if not inside:
                build.empty_tiles[split] += 1
        half = p.crop_size // 2
        for c, prov in kept:
            cx, cy = round(c.x + c.width / 2), round(c.y + c.height / 2)
            crop = _read_crop(reader, cx - half, cy - half, p.crop_size)
            # A pseudo-label's crop says so in its name (its class is the model's, not a person's).
            mark = "_pseudo" if prov["label_source"] == PSEUDO_LABEL else ""
            folder = build.root / "crops" / split / prov["final_class"]
            _png(folder / f"{stem}_c{c.pk}{mark}.png", crop)
            build.crops[split] += 1
    build.slides.append(
        {
            "id": slide.pk,
            "patient": slide.patient.identifier,
            "split": split,
            "original_filename": slide.original_filename,
            "sha256": slide.sha256,
            "kind": slide.kind,
            "width": slide.width,
            "height": slide.height,
            "mpp": slide.mpp,
            "interpretation": interpretation.bethesda_category if interpretation else None,
            "signed_out_by": signed_out_by,
            "signed_out_at": interpretation.signed_out_at.isoformat() if interpretation else None,
            "cells": len(kept),
            "rejected": sum(1 for c in cells if c.review_status == ReviewStatus.REJECTED),
            "left_out": len(cells) - len(kept),  # rejected, and undecided ones not carried
            "images": n_images,
            "geojson": f"geojson/{stem}.geojson",
        }
    )


def _read_crop(reader: SlideReader, x: int, y: int, size: int) -> np.ndarray:
    """A size x size level-0 crop; areas outside the slide are white."""
    return reader.read_region((x, y), 0, (size, size))


def _progress(export_id: int, done: int, total: int) -> None:
    percent = min(99, round(100 * done / total)) if total else 99
    DatasetExport.objects.filter(pk=export_id, status=ExportStatus.RUNNING).update(
        slides_done=done, progress=percent, updated_at=timezone.now()
    )


def _zip(root: Path, target: Path) -> None:
    """Zip the folder's files (relative names); PNGs stored, the rest deflated."""
    with zipfile.ZipFile(target, "w", allowZip64=True) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                compress = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                zf.write(path, path.relative_to(root).as_posix(), compress_type=compress)


def _storage_name(export: DatasetExport) -> str:
    return f"exports/{slugify(export.name)}-v{export.version}-{export.pk}.zip"


def _place(local_zip: Path, name: str) -> str:
    """Put the zip in media storage under `name`, atomically: a rename on local disk (the file
    is complete or absent), an upload of the finished file otherwise."""
    try:
        final = Path(default_storage.path(name))
    except NotImplementedError:
        if default_storage.exists(name):
            default_storage.delete(name)
        with local_zip.open("rb") as fh:
            from django.core.files import File

            return default_storage.save(name, File(fh))
    final.parent.mkdir(parents=True, exist_ok=True)
    local_zip.replace(final)
    return name


def _work_dir() -> Path:
    base = Path(settings.DATASET_EXPORT_TMP_DIR)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=base))


def dataset_export_build(*, export_id: int, task_id: str = "") -> str:
    """Build the export's zip (see the module docstring). Returns what happened: `ready`,
    `already_ready`, `busy` (another live process builds it) or `failed`."""
    with _export_lock(export_id) as taken:
        if not taken:
            return "busy"
        with transaction.atomic():
            export = DatasetExport.objects.select_for_update().get(pk=export_id)
            if export.status == ExportStatus.READY:
                return "already_ready"
            export.status = ExportStatus.RUNNING
            export.started_at = timezone.now()
            export.finished_at = None
            export.progress = 0
            export.slides_done = 0
            export.error = ""
            export.task_id = (task_id or export.task_id)[:255]
            export.save()
        try:
            _build(export)
        except TRANSIENT_ERRORS:
            raise  # the task retries; the next attempt starts again from scratch
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if isinstance(exc, SoftTimeLimitExceeded):
                message = "the export took longer than DATASET_EXPORT_SOFT_TIME_LIMIT_S"
            logger.exception("export %s failed", export_id)
            DatasetExport.objects.filter(pk=export_id).exclude(status=ExportStatus.READY).update(
                status=ExportStatus.FAILED,
                error=f"{type(exc).__name__}: {message}"[:2000],
                finished_at=timezone.now(),
                updated_at=timezone.now(),
            )
            return "failed"
        return "ready"


def _build(export: DatasetExport) -> None:
    params = ExportParams.from_dict(export.params)
    filters = ExportFilters.from_dict(export.filters)
    slides_qs = export_slides(filters=filters)
    slide_ids = list(slides_qs.values_list("pk", flat=True))
    if not slide_ids:
        raise EmptyExportError("No signed-out slide matches the export's filter any more.")
    patients = list(slides_qs.values_list("patient__identifier", flat=True).distinct())
    split_of = patient_split(patients, fractions=params.split, seed=params.seed)
    work = _work_dir()
    root = work / "export"
    root.mkdir()
    info = {
        "description": f"PapReview export {export.name} v{export.version}",
        "version": str(export.version),
        "date_created": timezone.now().isoformat(),
    }
    (root / "coco").mkdir()
    (work / "parts").mkdir()
    coco = {
        split: CocoWriter(root / "coco" / f"{split}.json", info=info, scratch=work / "parts")
        for split in SPLITS
    }
    build = _Build(
        root=root,
        params=params,
        coco=coco,
        provenance=ProvenanceWriter(root / "provenance.csv"),
        points={split: PointsWriter(root / "points" / f"{split}.csv") for split in SPLITS},
    )
    try:
        DatasetExport.objects.filter(pk=export.pk).update(slide_count=len(slide_ids))
        for done, slide_id in enumerate(slide_ids, start=1):
            slide = Slide.objects.select_related(
                "patient", "interpretation", "interpretation__signed_out_by"
            ).get(pk=slide_id)
            _export_slide(build, slide, split_of[slide.patient.identifier])
            _progress(export.pk, done, len(slide_ids))
        for writer in coco.values():
            writer.close()
        for points in build.points.values():
            points.close()
        build.provenance.close()
        (root / "data.yaml").write_text(data_yaml())
        manifest = _manifest(export, build, split_of)
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        name = _storage_name(export)
        local_zip = work / "export.zip"
        _zip(root, local_zip)
        digest, size = file_sha256(local_zip), local_zip.stat().st_size
        stored = _place(local_zip, name)
        now = timezone.now()
        DatasetExport.objects.filter(pk=export.pk).update(
            status=ExportStatus.READY,
            file=stored,
            sha256=digest,
            size_bytes=size,
            manifest=manifest,
            cell_count=build.cells,
            slides_done=len(slide_ids),
            progress=100,
            finished_at=now,
            updated_at=now,
        )
        logger.info("export %s ready: %s (%d bytes)", export, stored, size)
    finally:
        # Closing flushes buffers: on a full disk that fails again. The work folder is removed
        # whatever happens, and the first error is the one reported.
        try:
            for writer in coco.values():
                with contextlib.suppress(OSError):
                    writer.abort()
            closables: list[PointsWriter | ProvenanceWriter] = [
                *build.points.values(),
                build.provenance,
            ]
            for closable in closables:
                with contextlib.suppress(OSError):
                    closable.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _model_versions(seen: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The model versions that predicted the exported cells, with their weights' sha256."""
    from papreview.analysis.models import ModelVersion

    digests = {
        (mv.stage, mv.name): mv.sha256
        for mv in ModelVersion.objects.filter(name__in=[n for _, n in seen])
    }
    return [{"stage": s, "name": n, "sha256": digests.get((s, n)) or None} for s, n in sorted(seen)]


def _manifest(export: DatasetExport, build: _Build, split_of: dict[str, str]) -> dict[str, Any]:
    files = {
        p.relative_to(build.root).as_posix(): file_sha256(p)
        for p in sorted(build.root.rglob("*"))
        if p.is_file()
    }
    total: Counter[str] = Counter()
    for c in build.counts.values():
        total.update(c)
    by_split = {s: sorted(p for p, sp in split_of.items() if sp == s) for s in SPLITS}
    return {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "export_id": export.pk,
        "name": export.name,
        "version": export.version,
        "created_at": timezone.now().isoformat(),
        "exported_by": export.created_by.get_username() if export.created_by else None,
        "exporter": {
            "app": "papreview",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "task_id": export.task_id,
        },
        "filters": export.filters,
        "params": export.params,
        "split": by_split,
        "split_method": "by patient: every slide of a patient is in the same split; patients "
        f"shuffled with seed {build.params.seed}, fractions {list(build.params.split)}",
        "slides": build.slides,
        "counts": {
            "slides": len(build.slides),
            "patients": len(split_of),
            "cells": build.cells,
            "per_class": {c: total.get(c, 0) for c in BETHESDA_CLASSES},
            "per_split": {
                s: {c: build.counts.get(s, Counter()).get(c, 0) for c in BETHESDA_CLASSES}
                for s in SPLITS
            },
            "images": {s: build.images.get(s, 0) for s in SPLITS},
            "empty_images": {s: build.empty_tiles.get(s, 0) for s in SPLITS},
            "crops": {s: build.crops.get(s, 0) for s in SPLITS},
            "actions": dict(sorted(build.actions.items())),
            "label_sources": dict(sorted(build.label_sources.items())),
        },
        "model_versions": _model_versions(build.model_versions),
        "files": files,
    }
