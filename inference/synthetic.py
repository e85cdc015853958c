"""Synthetic slides for tests and benchmarks: Pap-like fields and generated pyramidal TIFFs.

No torch here. The pyramidal TIFF writer streams tiles, so a 40,000 x 40,000 px slide is written
without ever holding it in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def synthetic_field(
    width: int,
    height: int,
    *,
    cells: list[tuple[float, float, float]] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A bright background with dark round "nuclei" in pale "cytoplasm" at (x, y, radius)."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (236, 232, 238)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for x, y, r in cells or []:
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        img[d2 <= (3.0 * r) ** 2] = (200, 170, 205)  # cytoplasm
        img[d2 <= r**2] = (70, 50, 120)  # nucleus
    return img


_PERIOD = 400  # one cell (a nucleus in its cytoplasm) per 400 x 400 level-0 px grid square
_SPOT = 0.75  # "spot" layout: the cells' disc, as a fraction of the slide's shorter side
_STRAY = 127  # "spot" layout: about one grid square in this many outside the disc has a cell


def _populated(i: np.ndarray, j: np.ndarray, width: int, height: int, layout: str) -> np.ndarray:
    """Whether grid squares (column i, row j) hold a cell."""
    if layout == "uniform":
        return np.ones(np.broadcast_shapes(i.shape, j.shape), bool)
    if layout != "spot":
        raise ValueError(f"unknown layout {layout!r} (uniform or spot)")
    cx = (i + 0.5) * _PERIOD - width / 2
    cy = (j + 0.5) * _PERIOD - height / 2
    inside = cx**2 + cy**2 <= (_SPOT * min(width, height) / 2) ** 2
    stray = (i * 7919 + j * 104_729) % _STRAY == 0  # a scattered, deterministic few
    return np.asarray(inside | stray)


def slide_cell_centres(width: int, height: int, layout: str = "uniform") -> np.ndarray:
    """(N, 2) level-0 centres of the cells `write_pyramidal_tiff` draws with this layout."""
    i = np.arange(math.ceil(width / _PERIOD))
    j = np.arange(math.ceil(height / _PERIOD))
    keep = _populated(i[None, :], j[:, None], width, height, layout)
    jj, ii = np.nonzero(keep)
    centres = np.stack([ii * _PERIOD + _PERIOD // 2, jj * _PERIOD + _PERIOD // 2], axis=1)
    inside = (centres[:, 0] < width) & (centres[:, 1] < height)
    return np.asarray(centres[inside], np.float64)


def _tile_pattern(
    x0: int,
    y0: int,
    h: int,
    w: int,
    scale: int,
    layout: str = "uniform",
    size: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Deterministic, cheap content for a tile at level-0 origin (x0, y0), `scale` px per pixel:
    glass, and a cell centred in each populated grid square of `layout` on a slide of `size`."""
    tile = np.empty((h, w, 3), np.uint8)
    tile[:] = (236, 232, 238)
    gy = y0 + np.arange(h) * scale
    gx = x0 + np.arange(w) * scale
    ys = gy % _PERIOD - _PERIOD // 2
    xs = gx % _PERIOD - _PERIOD // 2
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    if layout != "uniform":
        d2 = np.where(
            _populated(gx[None, :] // _PERIOD, gy[:, None] // _PERIOD, *size, layout), d2, 10**9
        )
    tile[d2 <= 60**2] = (200, 170, 205)
    tile[d2 <= 14**2] = (70, 50, 120)
    return tile


def write_pyramidal_tiff(
    path: Path,
    width: int,
    height: int,
    *,
    levels: int = 3,
    tile: int = 256,
    mpp: float | None = 0.25,
    compression: str = "zlib",
    layout: str = "uniform",
) -> Path:
    """Write a tiled pyramidal TIFF (each level /2, flagged reduced-resolution) that OpenSlide
    reads as "generic-tiff". Tiles are generated on the fly: memory stays at a few tiles.

    `layout` "uniform": a cell in every 400 px grid square, edge to edge (no glass at all).
    "spot": as a liquid-based preparation is scanned, the cells fill a centred disc (its
    diameter 3/4 of the shorter side, like a 13-20 mm cell spot in the scanned area around it)
    with empty glass around it, where about one grid square in 127 holds a stray cell;
    `slide_cell_centres` lists the cells either way."""
    import tifffile

    path = Path(path)
    resolution = None
    if mpp:
        # pixels per centimetre at level 0
        resolution = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            scale = 2**level
            lw, lh = max(1, width // scale), max(1, height // scale)

            def tiles(lw: int = lw, lh: int = lh, scale: int = scale) -> Iterator[np.ndarray]:
                for ty in range(0, lh, tile):
                    for tx in range(0, lw, tile):
                        yield _tile_pattern(
                            tx * scale, ty * scale, tile, tile, scale, layout, (width, height)
                        )

            kwargs: dict[str, object] = {}
            if resolution is not None:
                r = (resolution[0] / scale, resolution[1] / scale)
                kwargs = {"resolution": r, "resolutionunit": "CENTIMETER"}
            tif.write(
                tiles(),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                **kwargs,  # type: ignore[arg-type]
            )
    return path
