"""DICOM WSI with several focal planes, read through wsidicom (OpenSlide 4 refuses them: "Attribute
TotalPixelMatrixFocalPlanes value 3 != 1"); single-plane DICOM WSI stays with OpenSlide.

`dicom_focal_planes(path)` reads the header only; `probe_dicom_stack(path)` gives the `SlideInfo`;
`DicomStackReader(path, info, plane=...)` is a `focus.PlaneStackReader` (a fixed plane for the
viewer, the sharpest plane of each region for analysis). Only the frames a region touches are
read and decoded. An upload is one file, hence one level of the pyramid (each DICOM instance is
one level): the tile server's pixel budget then bounds what one tile may read.

wsidicom rather than our own frame parser: it knows TILED_FULL and TILED_SPARSE frame orders,
per-frame functional groups and the codecs, which a hand-written reader would each get wrong.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .archive import UNPACKED_SUFFIX
from .errors import UnreadableSlideError
from .focus import PlaneStackReader
from .formats import check_declared_size, positive_or_none
from .slides import to_rgb8
from .types import SlideInfo, SlideKind


def dicom_focal_planes(path: Path) -> int:
    """TotalPixelMatrixFocalPlanes of a DICOM file (1 when absent or unreadable)."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["TotalPixelMatrixFocalPlanes"]
        )
        return max(1, int(getattr(ds, "TotalPixelMatrixFocalPlanes", 1) or 1))
    except Exception:
        return 1


def _open(path: Path) -> Any:
    from wsidicom import WsiDicom

    # a zip's unpacked folder holds the slide's every level (`inference.archive`); any other
    # file is read alone (its folder may be a cache of other slides)
    source = path.parent if path.parent.name.endswith(UNPACKED_SUFFIX) else path
    try:
        return WsiDicom.open(Path(source))
    except Exception as exc:
        raise UnreadableSlideError(
            f"{Path(path).name}: looks like a DICOM WSI with focal planes but cannot be read "
            f"({exc}). Export the slide again from the scanner's software."
        ) from exc


def probe_dicom_stack(path: Path) -> SlideInfo:
    """The `SlideInfo` of a DICOM WSI Z stack (format "dicom", its planes, level and mpp)."""
    wsi = _open(path)
    try:
        width, height = int(wsi.size.width), int(wsi.size.height)
        check_declared_size(path, width, height)
        return SlideInfo(
            format="dicom",
            kind=SlideKind.WHOLE_SLIDE,
            width=width,
            height=height,
            mpp=positive_or_none(wsi.mpp.width) if wsi.mpp is not None else None,
            level_count=len(wsi.levels.levels),
            planes=len(wsi.levels.base_level.focal_planes),
        )
    finally:
        wsi.close()


class DicomStackReader(PlaneStackReader):
    """The levels and focal planes of a DICOM WSI: one file, or the files of an unpacked zip."""

    def __init__(self, path: Path, info: SlideInfo, *, plane: int | None = 0) -> None:
        self._wsi = _open(path)
        self.info = info
        self._levels = list(self._wsi.levels.levels)
        self._z = list(self._wsi.levels.base_level.focal_planes)
        self.plane_count = len(self._z)
        self._pick_plane(plane)
        self._set_levels([(int(lv.size.width), int(lv.size.height)) for lv in self._levels])
        self._lock = threading.Lock()

    def _read_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int], plane: int
    ) -> np.ndarray:
        out, x, y, inside = self._window(location, level, size)
        if inside is None:
            return out  # outside the slide: white
        x0, y0, x1, y1 = inside
        try:
            with self._lock:  # one file handle per instance
                pixels = self._wsi.read_region(
                    (x0, y0), self._levels[level].level, (x1 - x0, y1 - y0), z=self._z[plane],
                    as_array=True,
                )  # fmt: skip
        except Exception as exc:
            raise UnreadableSlideError(
                f"dicom slide: region {location} of plane {plane} at level {level} cannot be "
                f"read ({exc})."
            ) from exc
        out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb8(np.asarray(pixels))
        return out

    def close(self) -> None:
        self._wsi.close()
