"""Fixtures for the dataset tests: signed-out slides with small synthetic images stored in media,
cells that went through the real review services (accepted, relabelled, moved, rejected, added),
and two registered model versions that 'predicted' them."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from inference.synthetic import write_pyramidal_tiff
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.review.models import Cell
from papreview.review.services import cell_add, cell_update
from papreview.workflow.services import slide_sign_out
from tests.factories import (
    AnalysisRunFactory,
    CellFactory,
    ModelVersionFactory,
    PatientFactory,
    SlideFactory,
)


def field_pixels(width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """A pale field with a few dark round nuclei."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (236, 232, 238), np.uint8)
    for _ in range(max(2, width * height // 20_000)):
        x, y = int(rng.integers(15, width - 15)), int(rng.integers(15, height - 15))
        cv2.circle(img, (x, y), 20, (200, 170, 205), -1)
        cv2.circle(img, (x, y), 8, (70, 50, 120), -1)
    return img


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ReviewedSlide:
    slide: Slide
    cells: dict[str, Cell] = field(default_factory=dict)  # expected action -> cell


@dataclass
class Versions:
    detector: ModelVersion
    classifier: ModelVersion


@pytest.fixture
def versions(db) -> Versions:
    return Versions(
        detector=ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="det-A"),
        classifier=ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="cls-A"),
    )


@pytest.fixture
def make_slide(versions: Versions, pathologist: User) -> Callable[..., ReviewedSlide]:
    """A slide with a stored image, analysed by `versions`, reviewed and signed out.

    `cells` lists (x, y, w, h, predicted class, action[, new class]) with action one of
    undecided (left as predicted: nobody decided it), accepted / confirmed (a reviewer accepted
    it), relabelled, moved, rejected, added.
    """

    def make(
        patient: Patient | None = None,
        *,
        cells: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
        size: tuple[int, int] = (256, 192),
        seed: int = 0,
        wsi: bool = False,
        category: str = "HSIL",
        by: User | None = None,
        sign_out: bool = True,
    ) -> ReviewedSlide:
        reviewer = by or pathologist
        patient = patient or PatientFactory.create()
        width, height = size
        if wsi:
            tmp = Path(default_storage.path("tmp-wsi"))
            tmp.mkdir(parents=True, exist_ok=True)
            path = write_pyramidal_tiff(tmp / f"wsi-{seed}.tiff", width, height, levels=2, mpp=0.5)
            name = default_storage.save(
                f"slides/test/wsi-{seed}.tiff", ContentFile(path.read_bytes())
            )
            kind, fmt = "wsi", "generic-tiff"
        else:
            data = png_bytes(field_pixels(width, height, seed=seed))
            name = default_storage.save(f"slides/test/field-{seed}.png", ContentFile(data))
            kind, fmt = "field", "png"
        slide = SlideFactory.create(
            patient=patient,
            file=name,
            original_filename=Path(name).name,
            kind=kind,
            format=fmt,
            width=width,
            height=height,
            status=SlideStatus.ANALYSED,
        )
        run = AnalysisRunFactory.create(
            slide=slide,
            detector_version=versions.detector,
            classifier_version=versions.classifier,
            model_versions={"detector": "det-A", "classifier": "cls-A"},
        )
        out = ReviewedSlide(slide)
        for n, spec in enumerate(cells):
            x, y, w, h, predicted, action, *rest = spec
            if action == "added":
                cell = cell_add(
                    slide=slide, by=reviewer, x=x, y=y, width=w, height=h, current_class=predicted
                )
            else:
                cell = CellFactory.create(
                    slide=slide,
                    run=run,
                    x=x,
                    y=y,
                    width=w,
                    height=h,
                    predicted_class=predicted,
                    current_class=predicted,
                    probabilities={predicted: 0.75, "NILM": 0.25}
                    if predicted != "NILM"
                    else {"NILM": 0.9, "LSIL": 0.1},
                    detection_score=0.6,
                )
                if action in ("accepted", "confirmed"):
                    cell = cell_update(
                        cell=cell, version=cell.version, by=reviewer, review_status="confirmed"
                    )
                elif action == "relabelled":
                    cell = cell_update(
                        cell=cell, version=cell.version, by=reviewer, current_class=rest[0]
                    )
                elif action == "moved":
                    cell = cell_update(
                        cell=cell, version=cell.version, by=reviewer, x=x + 5, y=y + 3
                    )
                elif action == "rejected":
                    cell = cell_update(
                        cell=cell, version=cell.version, by=reviewer, review_status="rejected"
                    )
            out.cells[f"{action}-{n}"] = cell
        slide.refresh_from_db()
        if sign_out:
            slide_sign_out(slide=slide, by=reviewer, bethesda_category=category)
            slide.refresh_from_db()
        return out

    return make


# The four classes the small training exports use (every stage-2 class seen in train and val).
TRAIN_CLASSES = ["NILM", "HSIL", "LSIL", "SCC"]


@pytest.fixture
def make_patients(make_slide: Callable[..., ReviewedSlide]) -> Callable[..., list[ReviewedSlide]]:
    """`patients` patients (identifiers `<prefix>-0`, ...) with two signed-out slides each, three
    accepted cells of several classes on every slide: a small export that trains and splits."""

    def make(prefix: str, *, patients: int = 3) -> list[ReviewedSlide]:
        out = []
        for p in range(patients):
            patient = PatientFactory.create(identifier=f"{prefix}-{p}")
            for s in range(2):
                seed = 10 * p + s
                cells = [
                    (
                        20 + 60 * k,
                        30 + 40 * (k % 3),
                        36,
                        36,
                        TRAIN_CLASSES[(seed + k) % 4],
                        "accepted",
                    )
                    for k in range(3)
                ]
                out.append(make_slide(patient, seed=seed, cells=cells))
        return out

    return make


@pytest.fixture(autouse=True)
def export_tmp_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Exports are built in the test's own temporary folder (checked empty afterwards)."""
    folder = tmp_path / "export-tmp"
    settings.DATASET_EXPORT_TMP_DIR = folder
    yield folder
    leftovers = list(folder.iterdir()) if folder.exists() else []
    assert leftovers == [], f"temporary export folders left behind: {leftovers}"
