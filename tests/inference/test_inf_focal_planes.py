"""Focal planes (issue 15, item 2): a Z stack (OME-TIFF, axes ZYXS, through tifffile; DICOM WSI
focal planes, through wsidicom since OpenSlide refuses them) is read plane by plane, and
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

from inference.focus import PlaneStackReader, focus_measure
from inference.slides import open_slide, probe_slide, stack_reader
from inference.synthetic import synthetic_field
from testkit.slidefiles import write_dicom_wsi, write_ome_tiff
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


# (format, writer, mean absolute error allowed: OME-TIFF tiles are zlib, DICOM frames JPEG)
STACKS = {
    "ome-tiff": (
        lambda d, img, planes: write_ome_tiff(
            d / "s.ome.tif", img, mpp=0.5, levels=2, planes=planes
        ),
        0,
    ),
    "dicom": (lambda d, img, planes: write_dicom_wsi(d / "s.dcm", img, mpp=0.5, planes=planes), 3),
}


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, str]:
    img = synthetic_field(W, H, seed=11)
    write, _ = STACKS[request.param]
    path = write(tmp_path_factory.mktemp("z"), img, _stack_sharp_by_thirds(img))
    return path, img, request.param


def _close(a: np.ndarray, b: np.ndarray, fmt: str) -> bool:
    error = float(np.abs(a.astype(float) - b.astype(float)).mean())
    return error <= STACKS[fmt][1] and a.shape == b.shape


def test_a_z_stack_is_read_plane_by_plane(stack: tuple[Path, np.ndarray, str]) -> None:
    path, img, fmt = stack
    info = probe_slide(path)
    assert (info.format, info.planes, info.mpp) == (fmt, 3, pytest.approx(0.5))
    planes = _stack_sharp_by_thirds(img)
    for k in range(3):
        reader = stack_reader(path, info, plane=k)
        assert reader is not None
        region = reader.read_region((100, 50), 0, (300, 200))
        assert _close(region, planes[k][50:250, 100:400], fmt), k
        edge = reader.read_region((W - 100, H - 50), 0, (200, 100))  # outside reads white
        assert (
            _close(edge[:50, :100], planes[k][H - 50 :, W - 100 :], fmt) and edge[50:].min() == 255
        )
        reader.close()


def test_analysis_reads_the_sharpest_plane_of_each_region(stack) -> None:
    path, img, fmt = stack
    middle = stack_reader(path, probe_slide(path), plane=1)
    assert middle is not None
    with open_slide(path) as reader, middle:
        assert isinstance(reader, PlaneStackReader)
        assert reader.plane_count == 3 and reader.plane is None  # what analysis opens
        gains = []
        for k in range(3):
            x = k * W // 3 + 60
            region, plane = reader.read_region_plane((x, 100), 0, (256, 256))
            assert plane == k  # the plane in focus there
            fixed = middle.read_region((x, 100), 0, (256, 256))
            assert _close(region, img[100:356, x : x + 256], fmt)
            gains.append(focus_measure(region) / focus_measure(fixed))
    # the figure: sharpness read by analysis against always the middle plane
    shown = ", ".join(f"{g:.1f}x" for g in gains)
    print(f"{fmt}: focus measure, sharpest plane per region / middle plane: {shown}")
    assert gains[1] == pytest.approx(1.0) and min(gains[0], gains[2]) > 3


@pytest.mark.parametrize("fmt", sorted(STACKS))
def test_each_cell_is_found_and_classified_in_its_own_plane(fmt: str, tmp_path: Path) -> None:
    """Nuclei in the left half are in focus in plane 0, those in the right half in plane 1."""
    img = synthetic_field(700, 520, cells=NUCLEI, seed=3)
    left, right = _blur(img, 4.0), _blur(img, 4.0)
    left[:, :350], right[:, 350:] = img[:, :350], img[:, 350:]
    path = STACKS[fmt][0](tmp_path, img, [left, right])
    result = _pipeline(tile_size=256, tile_overlap=32).analyse(path)
    assert len(result.cells) == len(NUCLEI)
    for cell in result.cells:
        cx = cell.box.x + cell.box.width / 2
        if abs(cx - 350) > 40:  # a crop across the seam is sharp in both halves
            assert cell.plane == (0 if cx < 350 else 1), (cx, cell.plane)
