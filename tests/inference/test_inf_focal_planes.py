"""Focal planes (issue 15, item 2): a Z stack (OME-TIFF, axes ZYXS) is read plane by plane, and
analysis uses the sharpest plane of each region it reads (variance of the Laplacian), so each
cell is classified, and stored, in its own best focus.

The figure printed (run with -s): on a stack whose planes are each in focus over one third of the
slide and blurred elsewhere, the focus measure of what analysis reads against one fixed plane.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.slides import open_slide, probe_slide
from inference.synthetic import synthetic_field
from inference.tiffreader import TiffPyramidReader, focus_measure
from testkit.slidefiles import write_ome_tiff
from tests.inference.test_inf_pipeline import NUCLEI, _pipeline

W, H = 1536, 1024


def _blur(img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _stack_sharp_by_thirds(img: np.ndarray) -> list[np.ndarray]:
    """Plane k is in focus over the k-th vertical third of the slide, blurred elsewhere."""
    blurred = _blur(img)
    planes = []
    for k in range(3):
        plane = blurred.copy()
        x0, x1 = k * W // 3, (k + 1) * W // 3
        plane[:, x0:x1] = img[:, x0:x1]
        planes.append(plane)
    return planes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    img = synthetic_field(W, H, seed=11)
    path = tmp_path_factory.mktemp("z") / "stack.ome.tif"
    write_ome_tiff(path, img, mpp=0.5, levels=2, planes=_stack_sharp_by_thirds(img))
    return path, img


def test_a_z_stack_is_read_plane_by_plane(stack: tuple[Path, np.ndarray]) -> None:
    path, img = stack
    info = probe_slide(path)
    assert (info.format, info.planes, info.level_count) == ("ome-tiff", 3, 2)
    planes = _stack_sharp_by_thirds(img)
    for k in range(3):
        reader = TiffPyramidReader(path, info, plane=k)
        region = reader.read_region((100, 50), 0, (300, 200))
        assert np.array_equal(region, planes[k][50:250, 100:400])
        reader.close()


def test_analysis_reads_the_sharpest_plane_of_each_region(stack) -> None:
    path, img = stack
    with open_slide(path) as reader:
        assert isinstance(reader, TiffPyramidReader)
        assert reader.plane_count == 3 and reader.plane is None  # what analysis opens
        gains = []
        for k in range(3):
            x = k * W // 3 + 60
            region, plane = reader.read_region_plane((x, 100), 0, (256, 256))
            assert plane == k  # the plane in focus there
            fixed = _stack_sharp_by_thirds(img)[1][100:356, x : x + 256]
            assert np.array_equal(region, img[100:356, x : x + 256])
            gains.append(focus_measure(region) / focus_measure(fixed))
    # the figure: sharpness read by analysis against always the middle plane
    shown = ", ".join(f"{g:.1f}x" for g in gains)
    print(f"focus measure, sharpest plane per region / middle plane: {shown}")
    assert gains[1] == pytest.approx(1.0) and min(gains[0], gains[2]) > 3


def test_each_cell_is_found_and_classified_in_its_own_plane(tmp_path: Path) -> None:
    """Nuclei in the left half are in focus in plane 0, those in the right half in plane 1."""
    img = synthetic_field(700, 520, cells=NUCLEI, seed=3)
    left, right = _blur(img, 4.0), _blur(img, 4.0)
    left[:, :350], right[:, 350:] = img[:, :350], img[:, 350:]
    path = write_ome_tiff(tmp_path / "z.ome.tif", img, mpp=0.5, levels=2, planes=[left, right])
    result = _pipeline(tile_size=256, tile_overlap=32).analyse(path)
    assert len(result.cells) == len(NUCLEI)
    for cell in result.cells:
        cx = cell.box.x + cell.box.width / 2
        if abs(cx - 350) > 40:  # a crop across the seam is sharp in both halves
            assert cell.plane == (0 if cx < 350 else 1), (cx, cell.plane)
