"""Deep Zoom descriptor and tiles, and cell crops, from the stored image through OpenSlide."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from inference.slides import read_image
from inference.synthetic import write_pyramidal_tiff
from papreview.cases.models import Slide
from papreview.cases.services import slide_create
from papreview.imaging import selectors as imaging
from papreview.review.models import Cell
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db
DZ = "{http://schemas.microsoft.com/deepzoom/2008}"


def test_dzi_describes_the_whole_level_0_image(api, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0)
    response = api(pathologist).get(f"/api/slides/{slide.pk}/deepzoom.dzi")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml"
    assert "private" in response["Cache-Control"] and "max-age" in response["Cache-Control"]
    root = ET.fromstring(response.content)
    size = root.find(f"{DZ}Size")
    assert size is not None
    assert (int(size.get("Width", 0)), int(size.get("Height", 0))) == (slide.width, slide.height)
    assert root.get("TileSize") == "256" and root.get("Overlap") == "0"
    assert root.get("Format") == "jpeg"


def test_tiles_are_jpeg_pixels_of_the_stored_image(api, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0)
    client = api(pathologist)
    top = imaging.opened_slide(slide).deepzoom.level_count - 1
    response = client.get(f"/api/slides/{slide.pk}/deepzoom_files/{top}/0_0.jpeg")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert "immutable" in response["Cache-Control"] and response["ETag"]
    tile = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=float)
    # The full-resolution tile (0, 0) is the image's top-left 256 x 256 pixels (no overlap).
    assert tile.shape == (256, 256, 3)
    original = read_image(Path(slide.file.path))[:256, :256].astype(float)
    assert np.abs(tile - original).mean() < 6  # JPEG re-encoding only

    small = client.get(f"/api/slides/{slide.pk}/deepzoom_files/0/0_0.jpeg")
    assert Image.open(io.BytesIO(small.content)).size == (1, 1)
    assert client.get(f"/api/slides/{slide.pk}/deepzoom_files/{top}/99_0.jpeg").status_code == 404
    assert (
        client.get(f"/api/slides/{slide.pk}/deepzoom_files/{top + 1}/0_0.jpeg").status_code == 404
    )
    bad = client.get(f"/api/slides/{slide.pk}/deepzoom_files/{top}/0_0.gif")
    assert bad.status_code == 404 and "jpeg" in bad.json()["detail"]


def test_whole_slide_images_use_the_same_path(api, pathologist, tmp_path) -> None:
    """A pyramidal TIFF is read through openslide.OpenSlide (never decoded whole)."""
    path = write_pyramidal_tiff(tmp_path / "wsi.tiff", 2100, 1300, levels=3, mpp=0.5)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile("wsi.tiff", path.read_bytes()),
        original_filename="wsi.tiff",
    )
    assert slide.kind == "wsi"
    opened = imaging.opened_slide(slide)
    assert type(opened.slide).__name__ == "OpenSlide"
    top = opened.deepzoom.level_count - 1
    client = api(pathologist)
    response = client.get(f"/api/slides/{slide.pk}/deepzoom_files/{top}/0_0.jpeg")
    assert response.status_code == 200
    tile = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert tile.shape == (256, 256, 3)
    # The synthetic slide has a dark nucleus-like disc centred at (200, 200).
    assert tile[195:205, 195:205].mean() < 150 and tile[0:10, 0:10].mean() > 150
    dzi = ET.fromstring(client.get(f"/api/slides/{slide.pk}/deepzoom.dzi").content)
    size = dzi.find(f"{DZ}Size")
    assert size is not None and size.get("Width") == "2100" and size.get("Height") == "1300"


def test_opened_slides_are_cached_per_process(stored_slide) -> None:
    slide = stored_slide(cells=0)
    first = imaging.opened_slide(slide)
    assert imaging.opened_slide(Slide.objects.get(pk=slide.pk)) is first
    assert type(first.slide).__name__ == "PyramidImage"  # the field with its reduced levels
    assert first.slide.level_downsamples == pytest.approx((1.0, 4.0), rel=0.01)


def test_cell_crop_is_the_full_resolution_box(api, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=3)
    cell = Cell.objects.filter(slide=slide).first()
    assert cell is not None
    response = api(pathologist).get(f"/api/cells/{cell.pk}/crop/?pad=10&v={cell.version}")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert "immutable" in response["Cache-Control"]
    crop = Image.open(io.BytesIO(response.content))
    assert crop.size == (cell.width + 20, cell.height + 20)
    unversioned = api(pathologist).get(f"/api/cells/{cell.pk}/crop/")
    assert "max-age=0" in unversioned["Cache-Control"]


def test_missing_image_file_is_a_clear_404(api, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0)
    Path(slide.file.path).unlink()
    response = api(pathologist).get(f"/api/slides/{slide.pk}/deepzoom.dzi")
    assert response.status_code == 404
    assert response.json()["code"] == "slide_image_unavailable"


def test_viewers_may_read_tiles_but_anonymous_users_not(client, api, viewer, stored_slide) -> None:
    slide = stored_slide(cells=0)
    assert api(viewer).get(f"/api/slides/{slide.pk}/deepzoom.dzi").status_code == 200
    assert client.get(f"/api/slides/{slide.pk}/deepzoom.dzi").status_code in (401, 403)
