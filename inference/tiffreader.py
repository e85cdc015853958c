"""Region reads of tiled, pyramidal TIFFs that OpenSlide does not see as pyramids (OME-TIFF with
SubIFD levels), through tifffile: only the tiles a region touches are read and decoded.

`TiffPyramidReader(path, info)` is a `SlideReader`; `tiff_pyramid_levels(path)` says whether a file
is such a pyramid (levels of its first series, each tiled) and how many focal planes it has.

Focal planes (a Z stack, OME axes ZYXS) are read as `focus.PlaneStackReader` reads every stack.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnreadableSlideError
from .focus import PlaneStackReader
from .slides import to_rgb8
from .types import SlideInfo

# SlideInfo.format of the slides this module reads (OpenSlide reads the other whole slides).
TIFFFILE_FORMATS = frozenset({"ome-tiff", "pyramidal-tiff"})


def _series(tif: Any) -> Any:
    return tif.series[0]


def tiff_pyramid_levels(path: Path) -> tuple[int, int]:
    """(levels, focal planes) of a tiled TIFF pyramid in its first series; (0, 0) when the file
    is not one (not a TIFF, not tiled, a single level)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = _series(tif)
            levels = list(getattr(series, "levels", [series]))
            if len(levels) < 2 or not all(lv.keyframe.is_tiled for lv in levels):
                return 0, 0
            axes = series.axes
            planes = int(series.shape[axes.index("Z")]) if "Z" in axes else 1
            return len(levels), planes
    except Exception:
        return 0, 0


class TiffPyramidReader(PlaneStackReader):
    """Levels of a tiled TIFF pyramid; `plane` picks the focal plane (Z) of stacks, None the
    sharpest plane of each region read."""

    def __init__(self, path: Path, info: SlideInfo, *, plane: int | None = 0) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
            series = _series(self._tif)
            self._levels = list(getattr(series, "levels", [series]))
        except Exception as exc:
            raise UnreadableSlideError(f"{Path(path).name}: cannot be read ({exc}).") from exc
        self.info = info
        axes = series.axes
        self.plane_count = int(series.shape[axes.index("Z")]) if "Z" in axes else 1
        self._pick_plane(plane)
        self._set_levels(
            [(int(lv.keyframe.imagewidth), int(lv.keyframe.imagelength)) for lv in self._levels]
        )
        self._lock = threading.Lock()

    def _page(self, level: int, plane: int) -> Any:
        pages = self._levels[level].pages
        return pages[plane] if len(pages) > plane else pages[0]

    def _read_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int], plane: int
    ) -> np.ndarray:
        out, x, y, inside = self._window(location, level, size)
        page = self._page(level, plane)
        if inside is None or page is None or not hasattr(page, "dataoffsets"):
            return out
        x0, y0, x1, y1 = inside
        key = self._levels[level].keyframe  # geometry and codec (a plane may be a TiffFrame)
        lw, lh = self.level_dimensions[level]
        tw, th = int(key.tilewidth), int(key.tilelength)
        across = (lw + tw - 1) // tw
        fh = self._tif.filehandle
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                index = ty * across + tx
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if not count:
                    continue  # a sparse tile: background
                with self._lock:
                    fh.seek(offset)
                    data = fh.read(count)
                try:
                    segment, _, _ = key.decode(data, index, jpegtables=key.jpegtables)
                except Exception as exc:
                    raise UnreadableSlideError(
                        f"{self.info.format} slide: tile {index} of level {level} cannot be "
                        f"decoded ({exc})."
                    ) from exc
                tile = to_rgb8(np.asarray(segment).reshape(segment.shape[-3:]))
                gx, gy = tx * tw, ty * th
                sx0, sy0 = max(x0, gx), max(y0, gy)
                sx1, sy1 = min(x1, gx + tw, lw), min(y1, gy + th, lh)
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                    sy0 - gy : sy1 - gy, sx0 - gx : sx1 - gx
                ]
        return out

    def close(self) -> None:
        self._tif.close()
