"""Bounded reads for the tile server: every image it sends reads only its own region, at the pyramid
level that serves it, in chunks, under a pixel budget (issue 15, item 3).

* `PyramidImage`: a field image (decoded once, within SLIDE_MAX_PIXELS) with in-memory reduced
  levels (/4, /16, ... down to a tile), as an OpenSlide slide: low zoom tiles read a reduced level
  instead of cropping the full image (`openslide.ImageSlide` has one level only).
* `read_scaled(slide, location, level, size, out_size)`: the region `size` (pixels of `level`) at
  level-0 `location`, scaled to `out_size`, composited on white. Regions larger than one chunk are
  read chunk by chunk and each chunk is scaled into place, so memory is a chunk plus the output;
  a region needing more than READ_MAX_PIXELS pixels of its level is refused
  (`RegionTooLargeError`, 422) rather than read: a slide whose pyramid has no level near that zoom.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import openslide
from PIL import Image

from inference.slides import SlideReader
from papreview.core.exceptions import ApplicationError

# Side of a region read in one call (2048 x 2048 RGBA = 16 MB).
READ_CHUNK = 2048
# Pixels of one level a single tile or crop may read in all (about 1-2 s of decoding, ~0 memory).
READ_MAX_PIXELS = 100_000_000
# Reduced levels of a field image: each a quarter of the side of the one before.
FIELD_LEVEL_FACTOR = 4
FIELD_SMALLEST_SIDE = 256
_WHITE = (255, 255, 255)


class RegionTooLargeError(ApplicationError):
    """The slide has no pyramid level near the asked zoom: reading it would take too much."""

    status_code = 422
    code = "region_too_large"


class PyramidImage(openslide.AbstractSlide):
    """An RGB image with reduced levels kept in memory, read like an OpenSlide slide."""

    def __init__(self, rgb: np.ndarray) -> None:
        super().__init__()
        base = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
        self._levels: list[Image.Image] = [base]
        while max(self._levels[-1].size) > FIELD_SMALLEST_SIDE * FIELD_LEVEL_FACTOR:
            self._levels.append(self._levels[-1].reduce(FIELD_LEVEL_FACTOR))

    @classmethod
    def detect_format(cls, filename: Any) -> str | None:
        return None

    def close(self) -> None:
        self._levels = []

    @property
    def level_count(self) -> int:
        return len(self._levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((im.size[0], im.size[1]) for im in self._levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        w0 = self._levels[0].size[0]
        return tuple(w0 / im.size[0] for im in self._levels)

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.0001:
                best = i
        return best

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """RGBA, transparent outside the image (as OpenSlide's read_region)."""
        image = self._levels[level]
        ds = self.level_downsamples[level]
        x, y = round(location[0] / ds), round(location[1] / ds)
        w, h = size
        out = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, image.size[0]), min(y + h, image.size[1])
        if x1 > x0 and y1 > y0:
            out.paste(image.crop((x0, y0, x1, y1)), (x0 - x, y0 - y))
        return out


class ReaderSlide(openslide.AbstractSlide):
    """An `inference.slides.SlideReader` (RGB arrays, white outside) seen as an OpenSlide slide:
    the tiled TIFF pyramids OpenSlide does not read (OME-TIFF) go through tifffile this way."""

    def __init__(self, reader: SlideReader) -> None:
        super().__init__()
        self.reader = reader

    @classmethod
    def detect_format(cls, filename: Any) -> str | None:
        return None

    def close(self) -> None:
        self.reader.close()

    @property
    def level_count(self) -> int:
        return self.reader.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.reader.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.reader.level_downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        mpp = self.reader.info.mpp
        return {openslide.PROPERTY_NAME_MPP_X: str(mpp)} if mpp else {}

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self.reader.best_level_for_downsample(downsample)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        return Image.fromarray(self.reader.read_region(location, level, size), mode="RGB")


def _on_white(region: Image.Image) -> Image.Image:
    if region.mode == "RGB":
        return region
    if region.mode != "RGBA":
        return region.convert("RGB")
    if region.getchannel("A").getextrema() == (255, 255):  # opaque (most tiles): no blending
        return region.convert("RGB")
    background = Image.new("RGB", region.size, _WHITE)
    background.paste(region, mask=region.getchannel("A"))
    return background


def read_scaled(
    slide: Any,
    location: tuple[int, int],
    level: int,
    size: tuple[int, int],
    out_size: tuple[int, int],
) -> Image.Image:
    """The region of `size` pixels of `level` at level-0 `location`, as RGB of `out_size`."""
    w, h = max(1, int(size[0])), max(1, int(size[1]))
    ow, oh = max(1, int(out_size[0])), max(1, int(out_size[1]))
    if w * h > READ_MAX_PIXELS:
        raise RegionTooLargeError(
            f"This view needs {w} x {h} px of level {level} read at once: the slide has no "
            "pyramid level near this zoom. Zoom in, or convert the slide to a pyramidal format."
        )
    ds = float(slide.level_downsamples[level])
    if w <= READ_CHUNK and h <= READ_CHUNK:
        region = _on_white(slide.read_region(location, level, (w, h)))
        return (
            region if region.size == (ow, oh) else region.resize((ow, oh), Image.Resampling.LANCZOS)
        )
    out = Image.new("RGB", (ow, oh), _WHITE)
    sx, sy = ow / w, oh / h
    for cy in range(0, h, READ_CHUNK):
        for cx in range(0, w, READ_CHUNK):
            cw, ch = min(READ_CHUNK, w - cx), min(READ_CHUNK, h - cy)
            ox0, oy0 = round(cx * sx), round(cy * sy)
            ox1, oy1 = round((cx + cw) * sx), round((cy + ch) * sy)
            if ox1 <= ox0 or oy1 <= oy0:
                continue
            origin = (location[0] + round(cx * ds), location[1] + round(cy * ds))
            chunk = _on_white(slide.read_region(origin, level, (cw, ch)))
            out.paste(chunk.resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BILINEAR), (ox0, oy0))
            del chunk
    return out
