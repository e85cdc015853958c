"""Reading field images and whole-slide images (WSI), and cutting them into tiles.

Everything here works without torch so that the web side can probe uploads cheaply.

* `probe_slide(path, max_pixels=...)` tells what a file is from its bytes (magic numbers, never the
  extension), refuses files that are empty, truncated, not images or larger than allowed, and
  returns a `SlideInfo`.
* `open_slide(path, max_pixels=...)` returns a `SlideReader`: `FieldReader` keeps a (bounded)
  field image in memory as 8-bit RGB; `OpenSlideReader` reads regions of a WSI through OpenSlide,
  so memory stays bounded whatever the slide size.
* `tile_grid(...)` covers an image with overlapping tiles.
* `slide_file(path)`: what the readers open; a zip of a multi-file DICOM WSI is unpacked beside
  itself once (`inference.archive`) and read from its level-0 instance.

Coordinates are level-0 pixels, origin top-left (see DESIGN.md). Pixels outside the image read as
white (255), which is what OpenSlide gives for transparent areas composited on white and close to
the bright background of a Pap smear.

Longer than our ~400-line norm (about 580): the probe, the two readers and the tiling share
the pixel-limit checks (magic numbers, vendors and the declared-size check: formats.py), and the
web side imports this one module
(without torch) to check uploads.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from .archive import ZIP_MAGIC, is_zip, unpacked_slide
from .errors import SlideTooLargeError, UnreadableSlideError
from .formats import (
    check_declared_size,
    is_multi_file,
    openslide_module,
    openslide_vendor,
    probe_openslide,
    read_head,
    refuse_multi_file,
    sniff_format,
    tiff_flavour,
    tiff_mpp,
)
from .types import SlideInfo, SlideKind

__all__ = ["sniff_format"]  # re-exported: the format's detection lives in .formats

# Default pixel budget for a field image decoded in memory (about 100 Mpx = 300 MB as RGB).
DEFAULT_MAX_PIXELS = 100_000_000
# Single-level TIFFs larger than this are read through OpenSlide (region by region) when it can.
_FIELD_TIFF_MAX_PIXELS = 50_000_000
_BACKGROUND = 255
# File name suffixes of field images when a command lists a folder of them.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> SlideTooLargeError:
    return SlideTooLargeError(
        f"{path.name}: {width} x {height} px ({width * height / 1e6:.1f} Mpx) is above the "
        f"limit of {max_pixels / 1e6:.1f} Mpx for a field image."
    )


def _check_one_level(path: Path, width: int, height: int, max_pixels: int) -> None:
    """A whole slide with one level (no reduced copies): every zoom of the viewer reads that
    level, so the pixel limit of images read whole holds, with why and what to do."""
    if width * height > max_pixels:
        raise SlideTooLargeError(
            f"{path.name}: a whole slide of {width} x {height} px ({width * height / 1e6:.1f} "
            "Mpx) with no reduced levels: the viewer would read all of it at low zoom, above "
            f"the limit of {max_pixels / 1e6:.1f} Mpx. Export it from the scanner's software "
            "with its pyramid levels in one file (SVS or pyramidal TIFF), or upload a DICOM "
            "slide as a zip of all its .dcm files (one per level)."
        )


def _bomb(path: Path, max_pixels: int) -> SlideTooLargeError:
    # Pillow refuses huge declared sizes itself (above 2 x Image.MAX_IMAGE_PIXELS) at open time.
    limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
    return SlideTooLargeError(
        f"{path.name}: the image declares more than {limit / 1e6:.1f} Mpx, above the limit "
        "for a field image."
    )


def _check_dims(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableSlideError(
            f"{path.name}: the image declares no pixels ({width} x {height})."
        )
    if width * height > max_pixels:
        raise _too_large(path, width, height, max_pixels)


# --------------------------------------------------------------------------------------------
# Field images: header, verification, decoding to 8-bit RGB
# --------------------------------------------------------------------------------------------


def _pil_header(path: Path, fmt: str, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header only; refuses oversized images before any decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        raise _bomb(path, max_pixels) from exc
    except Exception as exc:
        raise UnreadableSlideError(
            f"{path.name}: not a readable {fmt.upper()} image (damaged header)."
        ) from exc
    _check_dims(path, width, height, max_pixels)
    return width, height


def _tiff_header(path: Path) -> tuple[int, int, int]:
    """(width, height, page count) of the first series of a TIFF, from its tags only."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = series.shape
            axes = series.axes
            levels = len(getattr(series, "levels", [series]))
    except Exception as exc:
        raise UnreadableSlideError(  # the reader's own words stay in the chained exception
            f"{path.name}: not a readable TIFF image (damaged or incomplete header)."
        ) from exc
    try:
        height = int(shape[axes.index("Y")])
        width = int(shape[axes.index("X")])
    except ValueError as exc:
        raise UnreadableSlideError(f"{path.name}: the TIFF holds no 2-D image.") from exc
    return width, height, levels


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, RGB, RGBA; 8/16-bit int or float) -> HxWx3 uint8."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (C, H, W) TIFF
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise UnreadableSlideError(f"unsupported image shape {a.shape}.")
    channels = a.shape[2]
    alpha: np.ndarray | None = None
    if channels in (2, 4):
        alpha = a[:, :, -1]
        a = a[:, :, :-1]
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == np.bool_:
        out = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        bits = 16 if a.dtype.itemsize >= 2 else 8
        top = float(a.max()) if a.size else 0.0
        if top <= 255:  # e.g. Pillow "I" mode holding 8-bit values
            out = a.astype(np.uint8)
        else:
            scale = 255.0 / (2**bits - 1) if top <= 2**bits - 1 else 255.0 / top
            out = np.clip(a.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    else:
        f = a.astype(np.float32)
        top = float(np.nanmax(f)) if f.size else 1.0
        if top > 1.0:
            f = f / top
        out = np.clip(np.nan_to_num(f) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if alpha is not None and alpha.dtype == np.uint8 and alpha.min() == 255:
        alpha = None  # opaque (what OpenSlide gives inside a slide): compositing changes nothing
    if alpha is not None:  # composite on white, as OpenSlide does for transparent areas
        a8 = to_rgb8(alpha)[:, :, :1].astype(np.float32) / 255.0
        out = (out.astype(np.float32) * a8 + _BACKGROUND * (1.0 - a8) + 0.5).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def _pil_to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return to_rgb8(np.asarray(im))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return to_rgb8(np.asarray(im))
    if mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return to_rgb8(
            np.asarray(im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB"))
        )
    return to_rgb8(np.asarray(im.convert("RGB")))


def _decode_field(path: Path, fmt: str, max_pixels: int) -> np.ndarray:
    """Decode a field image to HxWx3 uint8, raising typed errors for damaged files."""
    if fmt == "tiff":
        import tifffile

        try:
            data = tifffile.imread(path, key=0)
        except Exception as exc:
            raise UnreadableSlideError(
                f"{path.name}: the TIFF image is damaged or truncated and cannot be decoded."
            ) from exc
        return to_rgb8(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_dims(path, im.size[0], im.size[1], max_pixels)
                im.load()
                return _pil_to_rgb8(im)
    except (SlideTooLargeError, UnreadableSlideError):
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(path, max_pixels) from exc
    except Exception as exc:
        raise UnreadableSlideError(
            f"{path.name}: the {fmt.upper()} image is damaged or truncated and cannot be decoded."
        ) from exc


def _verify_field(path: Path, fmt: str) -> None:
    """Cheap integrity check: structure verification plus a (reduced-size) decode."""
    if fmt == "tiff":
        return  # decoded in full by probe (tifffile); see probe_slide
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if fmt == "png":
                with Image.open(path) as im:
                    im.verify()  # walks every chunk and checks CRCs: catches truncation
            with Image.open(path) as im:
                if fmt == "jpeg":
                    im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES is False)
    except Exception as exc:
        raise UnreadableSlideError(
            f"{path.name}: the {fmt.upper()} image is damaged or truncated and cannot be decoded."
        ) from exc


# --------------------------------------------------------------------------------------------
# probe_slide
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    info: SlideInfo
    backend: str  # "pil", "tifffile" (field), "stack" (`stack_reader`) or "openslide"


def slide_file(path: Path) -> Path:
    """The file the readers open: `path` itself, or for a zip of a multi-file DICOM WSI its
    level-0 instance, unpacked beside the zip on first use (`inference.archive`)."""
    path = Path(path)
    if path.is_file() and is_zip(read_head(path, len(ZIP_MAGIC))):
        return unpacked_slide(path)
    return path


def _probe(path: Path, max_pixels: int, verify: bool) -> _Probe:
    return _probe_file(slide_file(path), max_pixels, verify)


def _probe_file(path: Path, max_pixels: int, verify: bool) -> _Probe:
    """`_probe` of the file the readers open (`slide_file`'s)."""
    refuse_multi_file(path)
    head = read_head(path)
    if not head:
        raise UnreadableSlideError(f"{path.name}: the file is empty.")
    fmt = sniff_format(head)

    single_level_tiff: SlideInfo | None = None
    if fmt == "dicom":
        from .dicomreader import dicom_focal_planes, probe_dicom_stack

        if dicom_focal_planes(path) > 1:  # OpenSlide refuses focal planes
            info = probe_dicom_stack(path)
            if info.level_count == 1:  # one level: every zoom reads it, the pixel limit holds
                _check_one_level(path, info.width, info.height, max_pixels)
            return _Probe(info, "stack")
    if fmt in (None, "tiff", "dicom") or is_multi_file(path):  # a .mrxs index is often a JPEG
        vendor = openslide_vendor(path)
        if vendor is not None:
            info = probe_openslide(path, vendor)
            check_declared_size(path, info.width, info.height)
            if info.level_count > 1 or vendor != "generic-tiff":
                if info.level_count == 1:
                    # no pyramid: every zoom reads level 0, so the pixel limit holds
                    _check_one_level(path, info.width, info.height, max_pixels)
                return _Probe(info, "openslide")
            single_level_tiff = info  # a field, or a pyramid OpenSlide does not see (OME)
    if fmt == "tiff":
        from .tiffreader import tiff_pyramid_levels

        levels, planes = tiff_pyramid_levels(path)
        if levels > 1:
            width, height, _ = _tiff_header(path)
            check_declared_size(path, width, height)
            name = "ome-tiff" if tiff_flavour(path) == "ome" else "pyramidal-tiff"
            info = SlideInfo(
                format=name,
                kind=SlideKind.WHOLE_SLIDE,
                width=width,
                height=height,
                mpp=tiff_mpp(path),
                level_count=levels,
                planes=planes,
            )
            return _Probe(info, "stack")
        if single_level_tiff is not None:
            # tiled or not, a single level is read whole at low zoom: the pixel limit holds
            _check_dims(path, single_level_tiff.width, single_level_tiff.height, max_pixels)
            if single_level_tiff.width * single_level_tiff.height > _FIELD_TIFF_MAX_PIXELS:
                return _Probe(replace(single_level_tiff, mpp=tiff_mpp(path)), "openslide")
    if fmt == "dicom":
        raise UnreadableSlideError(
            f"{path.name}: a DICOM file that is not a whole-slide image this reader can open "
            "(VL Whole Slide Microscopy, tiled). Export the slide again as DICOM WSI."
        )
    if fmt is None:
        raise UnreadableSlideError(
            f"{path.name}: not a supported image (expected JPEG, PNG, TIFF, BMP or a whole-slide "
            "image such as SVS, NDPI or pyramidal TIFF)."
        )

    if fmt == "tiff":
        width, height, _levels = _tiff_header(path)
        check_declared_size(path, width, height)
        _check_dims(path, width, height, max_pixels)
        if verify:
            _decode_field(path, fmt, max_pixels)
        info = SlideInfo(
            format="tiff", kind=SlideKind.FIELD, width=width, height=height, mpp=tiff_mpp(path)
        )
        return _Probe(info, "tifffile")

    width, height = _pil_header(path, fmt, max_pixels)
    if verify:
        _verify_field(path, fmt)
    return _Probe(
        SlideInfo(format=fmt, kind=SlideKind.FIELD, width=width, height=height), backend="pil"
    )


def probe_slide(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> SlideInfo:
    """Identify an upload from its bytes and check that it can be read.

    Field images (JPEG, PNG, TIFF, BMP) are refused with `SlideTooLargeError` when their header
    declares more than `max_pixels` pixels, before any decoding, and with `UnreadableSlideError`
    when empty, truncated or not an image. Whole-slide images (anything OpenSlide recognises with
    several levels or a vendor format) are never decoded in full, so `max_pixels` does not apply.
    """
    return _probe(Path(path), max_pixels, verify=True).info


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


class SlideReader:
    """Region access to a slide at any of its levels, as HxWx3 uint8 RGB arrays.

    `read_region((x, y), level, (w, h))` follows OpenSlide: (x, y) in level-0 pixels, (w, h) in
    pixels of `level`; areas outside the slide read as white.
    """

    info: SlideInfo
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    plane_count: int = 1

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        raise NotImplementedError

    def read_region_plane(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, int]:
        """`read_region` and the focal plane it came from (0 unless a Z stack picks one)."""
        return self.read_region(location, level, size), 0

    def best_level_for_downsample(self, downsample: float) -> int:
        """The level with the largest downsample not above `downsample` (level 0 at least)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.0001:
                best = i
        return best

    def close(self) -> None:
        return None

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def crop_padded(
    image: np.ndarray, x: int, y: int, w: int, h: int, fill: int = _BACKGROUND
) -> np.ndarray:
    """`image[y:y+h, x:x+w]` with areas outside the image filled with `fill` (always h x w)."""
    H, W = image.shape[:2]
    out = np.full((h, w, *image.shape[2:]), fill, dtype=image.dtype)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def centred_patch(image: np.ndarray, patch: int) -> np.ndarray:
    """`image` (RGB) cut or padded with white to `patch` x `patch` around its centre, at its own
    scale (never resized: a nucleus keeps its size in pixels)."""
    h, w = image.shape[:2]
    x = (w - patch) // 2 if w >= patch else -((patch - w) // 2)
    y = (h - patch) // 2 if h >= patch else -((patch - h) // 2)
    return crop_padded(image[..., :3], x, y, patch, patch)


class FieldReader(SlideReader):
    """A field image held in memory as 8-bit RGB (one level)."""

    def __init__(self, image: np.ndarray, info: SlideInfo | None = None) -> None:
        rgb = to_rgb8(image)
        self.image = rgb
        h, w = rgb.shape[:2]
        self.info = info or SlideInfo(format="array", kind=SlideKind.FIELD, width=w, height=h)
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        if level != 0:
            raise ValueError(f"a field image has one level (asked for level {level})")
        return crop_padded(
            self.image, int(location[0]), int(location[1]), int(size[0]), int(size[1])
        )


class OpenSlideReader(SlideReader):
    """A whole-slide image read region by region through OpenSlide (bounded memory)."""

    def __init__(self, path: Path, info: SlideInfo) -> None:
        openslide = openslide_module()
        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:
            raise UnreadableSlideError(f"{Path(path).name}: cannot be read ({exc}).") from exc
        self.info = info
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        w, h = int(size[0]), int(size[1])
        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level, (w, h))
        except Exception as exc:
            raise UnreadableSlideError(
                f"{self.info.format} slide: region {location} at level {level} cannot be read "
                f"({exc})."
            ) from exc
        return to_rgb8(np.asarray(region))  # RGBA (premultiplied) composited on white

    def close(self) -> None:
        self._slide.close()


def stack_reader(path: Path, info: SlideInfo, *, plane: int | None) -> SlideReader | None:
    """Our own reader of the whole slides OpenSlide does not read as pyramids or stacks (tiled
    TIFF pyramids through tifffile, DICOM WSI focal planes through wsidicom), reading focal
    `plane` (None: the sharpest of each region); None for the slides OpenSlide reads. `path` is
    the file the readers open (`slide_file`'s: a zip's level-0 instance)."""
    if info.kind != SlideKind.WHOLE_SLIDE:
        return None
    from .tiffreader import TIFFFILE_FORMATS, TiffPyramidReader

    if info.format in TIFFFILE_FORMATS:
        return TiffPyramidReader(path, info, plane=plane)
    if info.format == "dicom" and info.planes > 1:
        from .dicomreader import DicomStackReader

        return DicomStackReader(path, info, plane=plane)
    return None


def open_slide(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> SlideReader:
    """Open a slide for reading (probing it first); close it or use it as a context manager."""
    path = slide_file(path)
    probe = _probe_file(path, max_pixels, verify=False)
    if probe.backend == "openslide":
        return OpenSlideReader(path, probe.info)
    if probe.backend == "stack":
        # analysis reads the sharpest focal plane of each region of a Z stack
        reader = stack_reader(path, probe.info, plane=None)
        assert reader is not None
        return reader
    image = _decode_field(path, probe.info.format, max_pixels)
    return FieldReader(image, probe.info)


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a field image file into HxWx3 uint8 RGB (typed errors as in `probe_slide`)."""
    path = Path(path)
    probe = _probe(path, max_pixels, verify=False)
    if probe.backend in ("openslide", "stack"):
        raise UnreadableSlideError(
            f"{path.name}: is a whole-slide image; open it with open_slide() and read regions."
        )
    return _decode_field(path, probe.info.format, max_pixels)


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """A tile in the pixel grid of some level: origin (x, y) and size (width, height)."""

    x: int
    y: int
    width: int
    height: int


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # last tile flush with the edge
    return sorted(set(starts))


def tile_grid(width: int, height: int, *, tile: int, overlap: int = 0) -> list[Tile]:
    """Tiles of at most `tile` x `tile` px covering `width` x `height`, neighbours overlapping by
    at least `overlap` px; the last row/column is flush with the edge (so never outside)."""
    if tile <= 0:
        raise ValueError("tile must be positive")
    if not 0 <= overlap < tile:
        raise ValueError("overlap must be in [0, tile)")
    stride = tile - overlap
    xs = _starts(width, tile, stride)
    ys = _starts(height, tile, stride)
    return [Tile(x, y, min(tile, width - x), min(tile, height - y)) for y in ys for x in xs]


def iter_tiles(
    reader: SlideReader, *, level: int, tile: int, overlap: int = 0
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Yield (tile in `level` pixels, RGB pixels) over a level, one tile in memory at a time."""
    w, h = reader.level_dimensions[level]
    ds = reader.level_downsamples[level]
    for t in tile_grid(w, h, tile=tile, overlap=overlap):
        origin = (round(t.x * ds), round(t.y * ds))
        yield t, reader.read_region(origin, level, (t.width, t.height))
