"""Fixtures shared by the test packages (a pytest plugin, see tests/conftest.py): stored slides
with real pixels and many cells, a private upload folder and a fresh slide cache per test."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.types import BETHESDA_CLASSES
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.cases.services import slide_create
from papreview.imaging.selectors import slide_cache_clear
from papreview.review.models import Cell, ReviewStatus
from tests.factories import PatientFactory


@pytest.fixture(autouse=True)
def upload_temp_dir(settings, tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    settings.UPLOAD_TEMP_DIR = path
    return path


@pytest.fixture(autouse=True)
def _fresh_slide_cache():
    """Ids repeat across tests (each test's database starts empty): drop opened slides and the
    cache (the audit's once-a-minute keys name users and slides by id)."""
    from django.core.cache import cache

    slide_cache_clear()
    cache.clear()
    yield
    slide_cache_clear()
    cache.clear()


def make_cells(slide: Slide, n: int, *, seed: int = 0) -> list[Cell]:
    """`n` predicted cells spread over the slide, with probabilities that sum to 1."""
    rng = random.Random(seed)
    run = AnalysisRun.objects.create(slide=slide, status=RunStatus.SUCCEEDED, progress=100)
    cells = []
    for _ in range(n):
        w, h = rng.randint(24, 70), rng.randint(24, 70)
        x, y = rng.randint(0, slide.width - w), rng.randint(0, slide.height - h)
        cls = rng.choices(BETHESDA_CLASSES, weights=[50, 12, 12, 8, 12, 6])[0]
        top = rng.uniform(0.4, 0.99)
        rest = (1 - top) / (len(BETHESDA_CLASSES) - 1)
        probs = {c: round(top if c == cls else rest, 4) for c in BETHESDA_CLASSES}
        cells.append(
            Cell(
                slide=slide,
                run=run,
                x=x,
                y=y,
                width=w,
                height=h,
                predicted_class=cls,
                current_class=cls,
                probabilities=probs,
                detection_score=round(rng.uniform(0.3, 1.0), 3),
                review_status=ReviewStatus.PREDICTED,
            )
        )
    return Cell.objects.bulk_create(cells, batch_size=2000)


@pytest.fixture
def stored_slide(db, pathologist: User) -> Callable[..., Slide]:
    """A field image stored through slide_create, marked analysed, with `cells` predicted cells."""

    def make(
        *, cells: int = 20, seed: int = 1, patient: Patient | None = None, **image: int
    ) -> Slide:
        data = synthetic_pap_bytes(seed=seed, fmt="JPEG", **image)
        slide = slide_create(
            patient=patient or PatientFactory.create(),
            file=SimpleUploadedFile(f"field-{seed}.jpg", data),
            uploaded_by=pathologist,
        )
        Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSED, triage_class="HSIL")
        slide.refresh_from_db()
        make_cells(slide, cells, seed=seed)
        return slide

    return make
