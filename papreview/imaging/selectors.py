"""Reading pixels of stored slides for the viewer: Deep Zoom tiles and cell crops.

One code path for both kinds of slide: an OpenSlide object (`openslide.OpenSlide` for whole-slide
images, `regions.PyramidImage` over the decoded RGB field image and its reduced levels) wrapped
in OpenSlide's `DeepZoomGenerator` for the tile geometry. Pixels are read by `regions.read_scaled`:
only the tile's or crop's region, at the level that serves it, in bounded chunks. Opened slides
are cached per process (a small LRU keyed by slide id and checksum), so a viewer's hundreds of
tile requests open the file once. Coordinates are level-0
pixels; `limit_bounds=False` keeps Deep Zoom's full-resolution level aligned with them.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openslide
from django.conf import settings
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from inference.errors import InputError
from inference.slides import read_image, slide_file, stack_reader
from inference.types import SlideInfo, SlideKind
from papreview.cases.models import Slide
from papreview.core.exceptions import ApplicationError, NotFoundError
from papreview.core.storage import StoredFileMissingError, storage_local_file
from papreview.imaging.regions import PyramidImage, ReaderSlide, read_scaled
from papreview.review.boxes import ASSUMED_MPP, cell_box_max_px
from papreview.review.models import Cell

# 256 px tiles without overlap: a full-resolution tile is exactly one 256 px tile of the file
# for pyramidal TIFFs tiled at 256 (254 + 1 overlap straddled four of them: twice the decoding).
# The page asks for the descriptor with `?g=TILE_GEOMETRY`, which the viewer adds to every tile
# URL: tiles cached by browsers under another geometry (immutable, 1 h) are never mixed in.
TILE_SIZE = 256
TILE_OVERLAP = 0
TILE_GEOMETRY = f"{TILE_SIZE}-{TILE_OVERLAP}"
TILE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
JPEG_QUALITY = 85
CACHE_SIZE = 8
# Largest side of a crop we send; larger boxes are scaled down to it.
CROP_MAX_SIDE = 1024


class SlideImageUnavailableError(ApplicationError):
    """The slide's stored image cannot be read (missing file, corrupt)."""

    status_code = 404
    code = "slide_image_unavailable"


@dataclass
class OpenedSlide:
    slide: Any  # openslide.AbstractSlide
    deepzoom: DeepZoomGenerator
    # Our readers (tifffile, decoded field images) are read by one thread at a time.
    lock: Any = field(default_factory=threading.Lock)
    # holds the local file (a media cache entry stays while the slide is open)
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        self.slide.close()
        self.held.close()


_cache: OrderedDict[tuple[int, str, int], OpenedSlide] = OrderedDict()
_cache_lock = threading.Lock()


# What serving a slide's pixels needs; set at upload and never changed afterwards.
TILE_FIELDS = (
    "id", "file", "format", "kind", "width", "height", "mpp", "level_count", "focal_planes",
    "sha256",
)  # fmt: skip
# How long a process trusts its copy of those facts: a slide deleted in another process (the
# admin) stops serving tiles here within this; its own process forgets it at once (signals).
TILE_FACTS_TTL_S = 30.0
_facts: dict[int, tuple[float, Slide]] = {}


def slide_for_tiles(*, slide_id: int) -> Slide:
    """The slide with the immutable facts that serve its pixels (`TILE_FIELDS`), from a
    per-process cache: a viewer's hundreds of tile requests make no slide query."""
    now = time.monotonic()
    hit = _facts.get(slide_id)
    if hit is not None and now - hit[0] < TILE_FACTS_TTL_S:
        return hit[1]
    slide = Slide.objects.only(*TILE_FIELDS).filter(pk=slide_id).first()
    if slide is None:
        _facts.pop(slide_id, None)
        raise NotFoundError(f"No slide with id {slide_id}.")
    _facts[slide_id] = (now, slide)
    return slide


def slide_facts_forget(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """Drop a slide's cached facts (post_save / post_delete of a Slide), or all of them."""
    if instance is None:
        _facts.clear()
    else:
        _facts.pop(instance.pk, None)


def _local_file(slide: Slide, held: contextlib.ExitStack) -> Path:
    """The slide's file on local disk: in place, or this host's media cache for object storage
    (`storage_local_file`), held until `held` closes."""
    try:
        return held.enter_context(storage_local_file(slide.file.name or "", version=slide.sha256))
    except StoredFileMissingError as exc:
        raise SlideImageUnavailableError(f"The image file of slide {slide.pk} is missing.") from exc


def _info(slide: Slide) -> SlideInfo:
    return SlideInfo(
        format=slide.format,
        kind=SlideKind(slide.kind),
        width=slide.width,
        height=slide.height,
        mpp=slide.mpp,
        level_count=slide.level_count,
        planes=slide.focal_planes,
    )


def _open(slide: Slide, plane: int = 0) -> OpenedSlide:
    held = contextlib.ExitStack()
    stored = _local_file(slide, held)
    try:
        path = slide_file(stored)  # a zip of DICOM levels: its level-0 instance
        reader = stack_reader(path, _info(slide), plane=plane)
        if reader is not None:
            osr: Any = ReaderSlide(reader)
        elif slide.kind == SlideKind.WHOLE_SLIDE:
            osr = openslide.OpenSlide(str(path))
        else:
            osr = PyramidImage(read_image(path, max_pixels=settings.SLIDE_MAX_PIXELS))
    except (InputError, openslide.OpenSlideError, OSError) as exc:
        held.close()
        raise SlideImageUnavailableError(
            f"The image of slide {slide.pk} cannot be read ({exc})."
        ) from exc
    dz = DeepZoomGenerator(osr, tile_size=TILE_SIZE, overlap=TILE_OVERLAP, limit_bounds=False)
    if isinstance(osr, openslide.OpenSlide):  # thread-safe: a worker's threads read at once
        return OpenedSlide(slide=osr, deepzoom=dz, lock=contextlib.nullcontext(), held=held)
    return OpenedSlide(slide=osr, deepzoom=dz, held=held)


def opened_slide(slide: Slide, plane: int = 0) -> OpenedSlide:
    """The cached opened slide (focal `plane` of a Z stack) and its Deep Zoom generator (opened
    on first use); NotFoundError for a plane the slide does not have."""
    if not 0 <= plane < max(1, slide.focal_planes):
        raise NotFoundError(f"No focal plane {plane} (the slide has {slide.focal_planes}).")
    key = (slide.pk, slide.sha256, plane)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    opened = _open(slide, plane)
    with _cache_lock:
        _cache[key] = opened
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _, old = _cache.popitem(last=False)
            old.close()
    return opened


def slide_cache_clear() -> None:
    with _cache_lock:
        for opened in _cache.values():
            opened.close()
        _cache.clear()


def deepzoom_dzi(*, slide: Slide, fmt: str = "jpeg", plane: int = 0) -> str:
    """The Deep Zoom descriptor (XML) of a slide (of one focal plane)."""
    return str(opened_slide(slide, plane).deepzoom.get_dzi(fmt))


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def deepzoom_tile(
    *, slide: Slide, level: int, col: int, row: int, fmt: str = "jpeg", plane: int = 0
) -> bytes:
    """One encoded Deep Zoom tile (of focal `plane`), or NotFoundError outside the pyramid."""
    opened = opened_slide(slide, plane)
    dz = opened.deepzoom
    if not 0 <= level < dz.level_count:
        raise NotFoundError(f"No Deep Zoom level {level} (the slide has {dz.level_count}).")
    cols, rows = dz.level_tiles[level]
    if not (0 <= col < cols and 0 <= row < rows):
        raise NotFoundError(f"No tile {col}_{row} at level {level} ({cols} x {rows} tiles).")
    location, slide_level, size = dz.get_tile_coordinates(level, (col, row))
    out_size = dz.get_tile_dimensions(level, (col, row))
    try:
        with opened.lock:
            tile = read_scaled(opened.slide, location, slide_level, size, out_size)
    except openslide.OpenSlideError as exc:  # a damaged region of the file
        raise SlideImageUnavailableError(
            f"Tile {col}_{row} at level {level} of slide {slide.pk} cannot be read ({exc})."
        ) from exc
    return _encode(tile, fmt)


def _cell_plane(cell: Cell, slide: Slide) -> int:
    return min(max(0, cell.focal_plane), max(1, slide.focal_planes) - 1)


def cell_crop(*, cell: Cell, slide: Slide, pad: int = 16) -> bytes:
    """A JPEG of the cell's box with `pad` pixels of context, read at the level that serves it.

    The box is capped to a cell's physical size (`cell_box_max_px`) around its centre, so a box
    as large as the slide reads a cell's worth of pixels. Crops larger than CROP_MAX_SIDE are
    read at the pyramid level nearest to that size and scaled down; outside the slide is white.
    """
    pad = max(0, min(pad, 512))
    cap = cell_box_max_px(slide.mpp)
    bw, bh = min(cell.width, cap), min(cell.height, cap)
    x = cell.x + (cell.width - bw) // 2 - pad
    y = cell.y + (cell.height - bh) // 2 - pad
    w, h = bw + 2 * pad, bh + 2 * pad
    opened = opened_slide(slide, _cell_plane(cell, slide))  # the plane it was classified in
    downsample = max(w, h) / CROP_MAX_SIDE
    level = 0
    if downsample > 1:
        level = opened.slide.get_best_level_for_downsample(downsample)
    scale = float(opened.slide.level_downsamples[level])
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    out_scale = min(1.0, CROP_MAX_SIDE / max(w, h))
    out_size = (max(1, round(w * out_scale)), max(1, round(h * out_scale)))
    try:
        with opened.lock:
            region = read_scaled(opened.slide, (x, y), level, size, out_size)
    except openslide.OpenSlideError as exc:
        raise SlideImageUnavailableError(
            f"The region of cell {cell.pk} cannot be read from slide {slide.pk} ({exc})."
        ) from exc
    return _encode(region, "jpeg")


def cell_crop_at_magnification(*, cell: Cell, slide: Slide, fov_um: float, size: int) -> bytes:
    """A square JPEG of `size` px showing `fov_um` micrometres around the cell's centre: every
    crop at one physical magnification (the gallery). Read at the pyramid level nearest to that
    scale (never from a thumbnail), scaled down from it; slides without mpp are taken at
    ASSUMED_MPP."""
    mpp = slide.mpp if slide.mpp and slide.mpp > 0 else ASSUMED_MPP
    side = max(1, round(fov_um / mpp))
    x = cell.x + min(cell.width, cell_box_max_px(slide.mpp)) // 2 - side // 2
    y = cell.y + min(cell.height, cell_box_max_px(slide.mpp)) // 2 - side // 2
    opened = opened_slide(slide, _cell_plane(cell, slide))  # the plane it was classified in
    level = opened.slide.get_best_level_for_downsample(max(1.0, side / size))
    scale = float(opened.slide.level_downsamples[level])
    read = max(1, round(side / scale))
    try:
        with opened.lock:
            region = read_scaled(opened.slide, (x, y), level, (read, read), (size, size))
    except openslide.OpenSlideError as exc:
        raise SlideImageUnavailableError(
            f"The region of cell {cell.pk} cannot be read from slide {slide.pk} ({exc})."
        ) from exc
    return _encode(region, "jpeg")
