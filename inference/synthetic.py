"""Synthetic slides for tests and benchmarks: Pap-like fields and generated pyramidal TIFFs.

No torch here. The pyramidal TIFF writer streams tiles, so a 40,000 x 40,000 px slide is written
without ever holding it in memory.
"""

from __future__ import annotations

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


def _tile_pattern(x0: int, y0: int, h: int, w: int, scale: int) -> np.ndarray:
    """Deterministic, cheap content for a tile at level-0 origin (x0, y0), `scale` px per pixel."""
    tile = np.empty((h, w, 3), np.uint8)
    tile[:] = (236, 232, 238)
    period = 400  # a nucleus-like dark disc every 400 level-0 px
    ys = (y0 + np.arange(h) * scale) % period - period // 2
    xs = (x0 + np.arange(w) * scale) % period - period // 2
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
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
) -> Path:
    """Write a tiled pyramidal TIFF (each level /2, flagged reduced-resolution) that OpenSlide
    reads as "generic-tiff". Tiles are generated on the fly: memory stays at a few tiles."""
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
                        yield _tile_pattern(tx * scale, ty * scale, tile, tile, scale)

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
