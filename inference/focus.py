"""Focal planes of a Z stack: how sharp a region is, and a reader that picks the sharpest plane.

`PlaneStackReader` is the `SlideReader` of every stack we read ourselves (OME-TIFF Z through
tifffile, DICOM WSI focal planes through wsidicom): `plane=k` reads plane k (the viewer's focus
control); `plane=None` (what analysis opens) reads every plane of the region and returns the
sharpest, by the variance of its Laplacian (`focus_measure`). Per region, hence per detector tile
and per cell crop: a thick preparation's cells lie at different depths, and each is classified in
its own best focus. We pick planes rather than merge them (extended depth of field) because a merge
invents pixels no plane holds (halos, doubled nuclei at depth edges) that the models never saw in
training, while the sharpest plane is real pixels; the price is reading every plane (N decodes).
"""

from __future__ import annotations

import numpy as np

from .slides import SlideReader

_BACKGROUND = 255  # outside the slide reads white, as everywhere (slides.py)


def focus_measure(rgb: np.ndarray) -> float:
    """How sharp a region is: the variance of the Laplacian of its grey levels (higher: sharper)."""
    g = rgb.astype(np.float32).mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


class PlaneStackReader(SlideReader):
    """A slide of `plane_count` focal planes; `plane` is the one read, None the sharpest of each
    region. Subclasses read one plane (`_read_plane`) and set `plane_count` before `_pick_plane`."""

    plane: int | None = 0

    def _pick_plane(self, plane: int | None) -> None:
        self.plane = None if plane is None else min(max(0, plane), self.plane_count - 1)

    def _set_levels(self, dimensions: list[tuple[int, int]]) -> None:
        """The levels' (width, height), level 0 first, and their downsamples from it."""
        self.level_dimensions = tuple(dimensions)
        w0 = dimensions[0][0]
        self.level_downsamples = tuple(w0 / w for w, _ in dimensions)

    def _read_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int], plane: int
    ) -> np.ndarray:
        raise NotImplementedError

    def _window(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, int, int, tuple[int, int, int, int] | None]:
        """For a `read_region` of `level`: a white canvas of the region, its origin (x, y) in
        that level's pixels, and the part of it inside the level (x0, y0, x1, y1), None when
        the region lies wholly outside (then the canvas is the answer)."""
        w, h = int(size[0]), int(size[1])
        ds = self.level_downsamples[level]
        x, y = round(location[0] / ds), round(location[1] / ds)
        out = np.full((h, w, 3), _BACKGROUND, np.uint8)
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        return out, x, y, ((x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        return self.read_region_plane(location, level, size)[0]

    def read_region_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, int]:
        if self.plane is not None or self.plane_count == 1:
            plane = self.plane or 0
            return self._read_plane(location, level, size, plane), plane
        best: tuple[float, int, np.ndarray] | None = None
        for plane in range(self.plane_count):
            pixels = self._read_plane(location, level, size, plane)
            score = focus_measure(pixels)
            if best is None or score > best[0]:
                best = (score, plane, pixels)
        assert best is not None
        return best[2], best[1]
