"""Crops at one physical magnification for the gallery (issue 15, item 6): `?fov=<µm>&size=<px>`
shows the same micrometres across every crop, read at the pyramid level that matches the scale."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from papreview.cases.services import slide_create
from papreview.imaging import selectors as imaging
from papreview.review.models import Cell, ReviewStatus
from testkit.images import field_image
from testkit.slidefiles import write_ome_tiff
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


def _cell(slide, x: int, y: int, w: int = 40, h: int = 30) -> Cell:
    return Cell.objects.create(
        slide=slide, x=x, y=y, width=w, height=h, predicted_class="", current_class="HSIL",
        review_status=ReviewStatus.ADDED,
    )  # fmt: skip


@pytest.fixture
def wsi(tmp_path: Path):
    image = field_image(3000, 2000, seed=9)
    path = write_ome_tiff(tmp_path / "s.ome.tif", image, mpp=0.5, levels=3)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile(path.name, path.read_bytes()),
        original_filename=path.name,
    )
    return slide, image


def _levels_read(slide, monkeypatch) -> list[int]:
    opened = imaging.opened_slide(slide)
    seen: list[int] = []
    original = opened.slide.read_region

    def spy(location, level, size):
        seen.append(level)
        return original(location, level, size)

    monkeypatch.setattr(opened.slide, "read_region", spy)
    return seen


def test_fixed_magnification_crops_read_the_matching_level(
    wsi, api, pathologist, monkeypatch
) -> None:
    slide, image = wsi
    cell = _cell(slide, 1480, 985)  # centre (1500, 1000)
    levels = _levels_read(slide, monkeypatch)
    client = api(pathologist)
    # 100 µm = 200 level-0 px into 50 px: 1/4, the level at /4 serves it
    response = client.get(f"/api/cells/{cell.pk}/crop/?fov=100&size=50")
    assert response.status_code == 200
    crop = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), float)
    assert crop.shape == (50, 50, 3) and levels == [2]
    expected = Image.fromarray(image[900:1100, 1400:1600]).resize((50, 50), Image.Resampling.BOX)
    assert np.abs(crop - np.asarray(expected, float)).mean() < 12
    # 100 µm into 160 px: level 0 (never a coarser level upscaled)
    levels.clear()
    response = client.get(f"/api/cells/{cell.pk}/crop/?fov=100&size=160")
    assert Image.open(io.BytesIO(response.content)).size == (160, 160) and levels == [0]
    # the same micrometres across whatever the cell's size
    big = _cell(slide, 100, 100, w=300, h=280)
    response = client.get(f"/api/cells/{big.pk}/crop/?fov=100&size=50")
    assert Image.open(io.BytesIO(response.content)).size == (50, 50)
    assert response["ETag"].endswith('-f100-s50"')


def test_fixed_magnification_without_mpp_assumes_a_40x_scan(api, pathologist, stored_slide):
    slide = stored_slide(cells=0)
    cell = _cell(slide, 600, 400)
    response = api(pathologist).get(f"/api/cells/{cell.pk}/crop/?fov=40&size=80")
    assert response.status_code == 200  # 40 µm at 0.25 µm/px: 160 px of level 0 into 80
    assert Image.open(io.BytesIO(response.content)).size == (80, 80)
    bad = api(pathologist).get(f"/api/cells/{cell.pk}/crop/?fov=4000")
    assert bad.status_code == 400
