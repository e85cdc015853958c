"""Building an export's zip (the task's service), see `dataset_export_build`.

It takes the export's advisory lock, streams the chosen slides ONE AT A TIME through the format
writers (`papreview.datasets.writers`) into a temporary folder, saving progress after each
slide, then writes the manifest (sha256 of every file), zips the folder next to its final place
and renames it into place; only then is the row marked `ready`. A rerun (redelivery after a
crash) starts again from scratch; a ready export is never rebuilt or changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from inference.data.export import EXPORT_FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, file_sha256
from inference.slides import Tile, open_slide, tile_grid
from inference.types import BETHESDA_CLASSES, SlideKind
from papreview.analysis.adapter import slide_local_path
from papreview.cases.models import Slide
from papreview.core.locks import advisory_lock
from papreview.core.storage import local_path_of
from papreview.core.tasks import TRANSIENT_ERRORS
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.params import ExportFilters, ExportParams, patient_split
from papreview.datasets.provenance import PSEUDO_LABEL, cell_provenance
from papreview.datasets.selectors import export_slides, slide_cells_for_export
from papreview.datasets.services import EmptyExportError
from papreview.datasets.writers import (
    BoxTuple,
    ExportCell,
    ExportImage,
    ExportSlide,
    FormatWriter,
    format_writers,
)
from papreview.review.models import Cell, ReviewStatus

logger = logging.getLogger(__name__)

_LOCK_NAMESPACE = 0x50415058  # "PAPX": one build of an export at a time


def _export_lock(export_id: int) -> contextlib.AbstractContextManager[bool]:
    """One build of an export at a time (see papreview.core.locks.advisory_lock)."""
    return advisory_lock(namespace=_LOCK_NAMESPACE, key=export_id, what=f"export {export_id}")


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


@dataclass
class _Build:
    """What one build has written so far (counts only; pixels are on disk)."""

    root: Path
    params: ExportParams
    writers: list[FormatWriter]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    label_sources: Counter[str] = field(default_factory=Counter)
    images: Counter[str] = field(default_factory=Counter)
    empty_tiles: Counter[str] = field(default_factory=Counter)
    crops: Counter[str] = field(default_factory=Counter)
    rejected_crops: Counter[str] = field(default_factory=Counter)
    model_versions: set[tuple[str, str]] = field(default_factory=set)
    slides: list[dict[str, Any]] = field(default_factory=list)
    # per image file: its slide, the SHA-256 of the slide's file, and where on the slide it is
    image_sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: int = 0


def _build(export: DatasetExport) -> None:
    params = ExportParams.from_dict(export.params)
    slides_qs = export_slides(filters=ExportFilters.from_dict(export.filters))
    slide_ids = list(slides_qs.values_list("pk", flat=True))
    if not slide_ids:
        raise EmptyExportError("No signed-out slide matches the export's filter any more.")
    patients = list(slides_qs.values_list("patient__identifier", flat=True).distinct())
    split_of = patient_split(patients, fractions=params.split, seed=params.seed)
    work = _work_dir()
    root = work / "export"
    info = {
        "description": f"PapReview export {export.name} v{export.version}",
        "version": str(export.version),
        "date_created": timezone.now().isoformat(),
    }
    build = _Build(root=root, params=params, writers=[])
    try:
        root.mkdir()
        (work / "parts").mkdir()
        build.writers = format_writers(
            root, info=info, scratch=work / "parts", crop_size=params.crop_size
        )
        DatasetExport.objects.filter(pk=export.pk).update(slide_count=len(slide_ids))
        for done, slide_id in enumerate(slide_ids, start=1):
            slide = Slide.objects.select_related(
                "patient", "interpretation", "interpretation__signed_out_by"
            ).get(pk=slide_id)
            _export_slide(build, slide, split_of[slide.patient.identifier])
            _progress(export.pk, done, len(slide_ids))
        for writer in build.writers:
            writer.close()
        manifest = _manifest(export, build, split_of)
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        local_zip = work / "export.zip"
        _zip(root, local_zip)
        digest, size = file_sha256(local_zip), local_zip.stat().st_size
        stored = _place(local_zip, _storage_name(export))
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
            for writer in build.writers:
                with contextlib.suppress(OSError):
                    writer.abort()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _export_slide(build: _Build, slide: Slide, split: str) -> None:
    """Hand the slide, then each of its images, to every writer; count what was written."""
    cells, first_boxes = slide_cells_for_export(slide_id=slide.pk)
    interpretation = getattr(slide, "interpretation", None)
    category = interpretation.bethesda_category if interpretation else None
    exported = [_export_cell(build, c, first_boxes.get(c.pk), category) for c in cells]
    n_images = 0
    with slide_local_path(slide) as path, open_slide(path) as reader:
        part = ExportSlide(
            slide_id=slide.pk,
            patient=slide.patient.identifier,
            split=split,
            mpp=slide.mpp,
            cells=exported,
            reader=reader,
        )
        for writer in build.writers:
            writer.add_slide(part)
        for image in _images(slide, part, build.params):
            for writer in build.writers:
                writer.add_image(image)
            n_images += 1
            build.images[split] += 1
            build.image_sources[image.file_name] = {
                "slide_id": slide.pk,
                "sha256": slide.sha256,
                "origin": [image.tile.x, image.tile.y],
            }
            if not image.cells:
                build.empty_tiles[split] += 1
    kept = part.kept
    build.counts.setdefault(split, Counter()).update(str(c.label) for c in kept)
    build.cells += len(kept)
    build.crops[split] += len(kept)  # CropsWriter: one per kept cell
    build.rejected_crops[split] += len(part.rejected)  # and one per rejected call
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
            "interpretation": category,
            "signed_out_by": interpretation.signed_out_by.get_username() if interpretation else "",
            "signed_out_at": interpretation.signed_out_at.isoformat() if interpretation else None,
            "cells": len(kept),
            "rejected": sum(1 for c in cells if c.review_status == ReviewStatus.REJECTED),
            "left_out": len(cells) - len(kept),  # rejected, and undecided ones not carried
            "images": n_images,
            "geojson": f"geojson/{part.stem}.geojson",
        }
    )


def _export_cell(
    build: _Build, cell: Cell, original_box: BoxTuple | None, category: str | None
) -> ExportCell:
    """The cell with its label and provenance (see papreview.datasets.provenance), counted."""
    prov = cell_provenance(
        cell,
        original_box=original_box,
        slide_category=category,
        include_undecided=build.params.include_undecided,
    )
    build.actions[prov["action"]] += 1
    build.label_sources[prov["label_source"]] += 1
    for stage in ("detector", "classifier"):
        if prov[f"{stage}_version"]:
            build.model_versions.add((stage, prov[f"{stage}_version"]))
    return ExportCell(
        id=cell.pk,
        box=(cell.x, cell.y, cell.width, cell.height),
        label=prov["final_class"],
        pseudo=prov["label_source"] == PSEUDO_LABEL,
        provenance=prov,
    )


def _images(slide: Slide, part: ExportSlide, params: ExportParams) -> Iterator[ExportImage]:
    """A field image whole; a whole-slide image tile by tile: the tiles holding a kept cell's
    centre, and a seeded share (`empty_tile_ratio`) of the others."""
    whole = slide.kind != SlideKind.WHOLE_SLIDE
    if whole:
        tiles = [Tile(0, 0, slide.width, slide.height)]
    else:
        tiles = tile_grid(
            slide.width, slide.height, tile=params.tile_size, overlap=params.tile_overlap
        )
    rng = random.Random(f"{params.seed}:{slide.pk}")
    kept = part.kept
    for tile in tiles:
        inside = [
            c
            for c in kept
            if tile.x <= c.centre[0] < tile.x + tile.width
            and tile.y <= c.centre[1] < tile.y + tile.height
        ]
        if not inside and not whole and rng.random() >= params.empty_tile_ratio:
            continue
        name = part.stem if whole else f"{part.stem}_x{tile.x}_y{tile.y}"
        pixels = part.reader.read_region((tile.x, tile.y), 0, (tile.width, tile.height))
        yield ExportImage(slide=part, name=name, tile=tile, pixels=pixels, cells=inside)


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
    # the name in any script is kept in the database; the file name needs ASCII
    return f"exports/{slugify(export.name) or 'export'}-v{export.version}-{export.pk}.zip"


def _place(local_zip: Path, name: str) -> str:
    """Put the zip in media storage under `name`, atomically: a rename on local disk (the file
    is complete or absent), an upload of the finished file otherwise."""
    final = local_path_of(name)
    if final is None:  # object storage: uploaded in parts (multipart), streamed from the zip
        if default_storage.exists(name):
            default_storage.delete(name)
        with local_zip.open("rb") as fh:
            return default_storage.save(name, File(fh))
    final.parent.mkdir(parents=True, exist_ok=True)
    local_zip.replace(final)
    return name


def _work_dir() -> Path:
    base = Path(settings.DATASET_EXPORT_TMP_DIR)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=base))


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
        # every image by the SHA-256 of its source file (a field: the image's uploaded file; a
        # tile: its whole slide's, at `origin`): the identity the leak checks of training use
        "images": build.image_sources,
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
            "rejected_crops": {s: build.rejected_crops.get(s, 0) for s in SPLITS},
            "actions": dict(sorted(build.actions.items())),
            "label_sources": dict(sorted(build.label_sources.items())),
        },
        "model_versions": _model_versions(build.model_versions),
        "files": files,
    }
