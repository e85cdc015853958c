"""Focal planes in the web tier (issue 15, item 2): a Z-stack upload (OME-TIFF or DICOM WSI)
records its planes, the tile server serves each plane (`?z=`), a cell's crop comes from the plane
it was classified in, and analysis results store each cell's plane."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from inference.types import Box, CellPrediction, SlideInfo, SlideKind, SlideResult
from papreview.analysis.adapter import cells_from_result
from papreview.analysis.models import AnalysisRun
from papreview.cases.services import slide_create
from papreview.review.models import Cell, ReviewStatus
from testkit.images import field_image
from testkit.slidefiles import write_dicom_wsi, write_ome_tiff
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


WRITERS = {
    "ome-tiff": lambda d, img, planes: write_ome_tiff(
        d / "z.ome.tif", img, mpp=0.5, levels=2, planes=planes
    ),
    "dicom": lambda d, img, planes: write_dicom_wsi(d / "z.dcm", img, mpp=0.5, planes=planes),
}


@pytest.fixture(params=sorted(WRITERS))
def z_slide(request, tmp_path: Path):
    img = field_image(1024, 768, seed=12)
    planes = [img, 255 - img, (img // 2).astype(np.uint8)]
    path = WRITERS[request.param](tmp_path, img, planes)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile(path.name, path.read_bytes()),
        original_filename=path.name,
    )
    return slide, planes


def _image(response) -> np.ndarray:
    assert response.status_code == 200, response.content[:200]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), float)


def test_each_plane_is_served(z_slide, api, pathologist) -> None:
    slide, planes = z_slide
    assert (slide.focal_planes, slide.mpp) == (3, pytest.approx(0.5))
    client = api(pathologist)
    top = math.ceil(math.log2(1024))
    base = f"/api/slides/{slide.pk}/deepzoom_files/{top}/0_0.jpeg"
    for z, plane in enumerate(planes):
        tile = _image(client.get(f"{base}?z={z}"))
        assert np.abs(tile - plane[:256, :256]).mean() < 6, z
    assert client.get(f"{base}?z=3").status_code == 404
    assert client.get(f"{base}?z=-1").status_code == 404
    dzi = client.get(f"/api/slides/{slide.pk}/deepzoom.dzi?z=2")
    assert dzi.status_code == 200 and "-z2-" in dzi["ETag"]
    assert client.get(f"/api/slides/{slide.pk}/").json()["focal_planes"] == 3


def test_a_cells_crop_comes_from_its_plane(z_slide, api, pathologist) -> None:
    slide, planes = z_slide
    cell = Cell.objects.create(
        slide=slide, x=200, y=150, width=40, height=40, predicted_class="",
        current_class="HSIL", review_status=ReviewStatus.ADDED, focal_plane=1,
    )  # fmt: skip
    crop = _image(api(pathologist).get(f"/api/cells/{cell.pk}/crop/?pad=0"))
    assert np.abs(crop - planes[1][150:190, 200:240]).mean() < 8
    assert api(pathologist).get(f"/api/cells/{cell.pk}/").json()["focal_plane"] == 1


def test_analysis_results_store_each_cells_plane(z_slide) -> None:
    slide, _ = z_slide
    run = AnalysisRun.objects.create(slide=slide)
    probs = {"HSIL": 0.9, "NILM": 0.1}
    result = SlideResult(
        info=SlideInfo(format="ome-tiff", kind=SlideKind.WHOLE_SLIDE, width=1024, height=768),
        cells=[
            CellPrediction(Box(10, 10, 30, 30), "HSIL", probs, 0.8, plane=2),
            CellPrediction(Box(100, 100, 30, 30), "HSIL", probs, 0.7),
        ],
        model_versions={},
        device="cpu",
    )
    cells = cells_from_result(result, slide=slide, run=run)
    assert [c.focal_plane for c in cells] == [2, 0]
