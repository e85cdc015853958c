"""What a file is, from its bytes: magic numbers, the vendor of a whole-slide image, its microns
per pixel, and the checks that refuse hostile files before anything is decoded (no torch here).

* `sniff_format(head)`: "jpeg", "png", "tiff", "bmp" or "dicom" from the first bytes.
* `tiff_flavour(path)`: which kind of TIFF ("svs", "ndpi", "ome", "philips", "generic") from its
  tags (tifffile reads the tags only).
* `probe_openslide(path, vendor)`: a `SlideInfo` of a slide OpenSlide reads (Aperio SVS,
  Hamamatsu NDPI, 3DHistech MRXS, Philips TIFF, DICOM WSI with OpenSlide 4, generic pyramidal TIFF).
* `check_declared_size(path, width, height)`: refuses a file whose declared pixels are far beyond
  what its bytes can hold (a 50 KB TIFF declaring 20000 x 20000 px): `DeclaredSizeError`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .errors import UnreadableSlideError
from .types import SlideInfo, SlideKind

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
)
# A DICOM file: a 128-byte preamble, then "DICM".
_DICOM_MAGIC_AT = 128

# Whole-slide images compress, but not without limit: deflate stops near 1:1000 (3 bytes of RGB per
# pixel: at least ~0.003 bytes per pixel even for blank glass) and JPEG spends bits on every 8 x 8
# block. A file declaring more than this many level-0 pixels per byte it holds is refused: it would
# make a reader allocate what the file does not contain (20000 x 20000 px in 50 KB is 8000).
MAX_PIXELS_PER_BYTE = 4000

# OpenSlide vendor names, as people know the formats.
VENDOR_NAMES = {
    "aperio": "Aperio SVS",
    "hamamatsu": "Hamamatsu NDPI/VMS",
    "mirax": "3DHistech MRXS",
    "philips": "Philips TIFF",
    "dicom": "DICOM WSI",
    "generic-tiff": "pyramidal TIFF",
    "ventana": "Ventana BIF",
    "leica": "Leica SCN",
    "sakura": "Sakura SVSLIDE",
    "trestle": "Trestle TIFF",
    "zeiss": "Zeiss CZI",
}


# Formats whose slide is a file plus a folder of data files: one uploaded file cannot hold them.
MULTI_FILE_SUFFIXES = {".mrxs": "3DHistech MRXS", ".vms": "Hamamatsu VMS", ".vmu": "Hamamatsu VMU"}


def _data_folder(path: Path) -> Path | None:
    """The folder of a multi-file slide's data when it lies beside its index (a MIRAX folder
    holds `Slidedat.ini`), else None."""
    folder = Path(path).with_suffix("")
    return folder if (folder / "Slidedat.ini").is_file() else None


def refuse_multi_file(path: Path) -> None:
    """A .mrxs (or .vms) file is only the index of a slide whose pixels lie in a folder beside it
    (OpenSlide reads it there, `openslide_vendor` says "mirax"); uploaded alone it is refused.
    With its folder beside it (a zip of both, unpacked by `inference.archive`) it is read."""
    suffix = Path(path).suffix.lower()
    name = MULTI_FILE_SUFFIXES.get(suffix)
    if name is not None and _data_folder(path) is None:
        zipped = (
            "Upload both in one zip (the .mrxs file and its folder of the same name), or export"
            if suffix == ".mrxs"
            else "Export"
        )
        raise UnreadableSlideError(
            f"{Path(path).name}: a {name} slide is this file plus a folder of data files beside "
            f"it, which one file cannot carry. {zipped} the slide from the scanner's software "
            "as one file (SVS or pyramidal TIFF) or as DICOM WSI (a zip of its .dcm files)."
        )


def is_multi_file(path: Path) -> bool:
    """An index whose slide's data lie in the folder beside it (see `refuse_multi_file`)."""
    return Path(path).suffix.lower() in MULTI_FILE_SUFFIXES and _data_folder(path) is not None


class DeclaredSizeError(UnreadableSlideError):
    """The file declares far more pixels than its bytes can hold (hostile or broken)."""


def sniff_format(head: bytes) -> str | None:
    """The image format given by a file's first bytes, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + 4] == b"DICM":
        return "dicom"
    return None


def read_head(path: Path, n: int = 132) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except FileNotFoundError as exc:
        raise UnreadableSlideError(f"{path.name}: file not found.") from exc
    except IsADirectoryError as exc:
        raise UnreadableSlideError(f"{path.name}: is a folder, not an image file.") from exc
    except OSError as exc:
        raise UnreadableSlideError(f"{path.name}: cannot be opened ({exc.strerror}).") from exc


def check_declared_size(path: Path, width: int, height: int) -> None:
    """Refuse a file whose declared level-0 size is far beyond what its bytes can hold (with
    the folder of data beside a multi-file slide's index)."""
    folder = _data_folder(path) if is_multi_file(path) else None
    data = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder else 0
    size = max(1, Path(path).stat().st_size + data)
    if width * height > size * MAX_PIXELS_PER_BYTE:
        raise DeclaredSizeError(
            f"{Path(path).name}: declares {width} x {height} px ({width * height / 1e6:,.0f} Mpx) "
            f"but holds only {size / 1024:,.0f} KB, far too little for that many pixels: the file "
            "is damaged or made to exhaust memory, and is refused."
        )


def tiff_flavour(path: Path) -> str:
    """ "svs", "ndpi", "ome", "philips", "scn", "generic" (or "" when not a readable TIFF)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            for flag in ("svs", "ndpi", "ome", "philips", "scn"):
                if getattr(tif, f"is_{flag}", False):
                    return flag
            return "generic"
    except Exception:
        return ""


# --------------------------------------------------------------------------------------------
# OpenSlide (imported on use: plain images need no native library)
# --------------------------------------------------------------------------------------------


def openslide_module() -> Any:
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - openslide-bin is a declared dependency
        raise UnreadableSlideError(
            "whole-slide images need openslide-python and openslide-bin, which are not installed."
        ) from exc
    return openslide


def openslide_vendor(path: Path) -> str | None:
    try:
        vendor = openslide_module().OpenSlide.detect_format(str(path))
    except Exception:
        return None
    return str(vendor) if vendor else None


def positive_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def probe_openslide(path: Path, vendor: str) -> SlideInfo:
    openslide = openslide_module()
    try:
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:
        # the library's own words ("list index out of range") stay in the chained exception
        name = VENDOR_NAMES.get(vendor, vendor)
        raise UnreadableSlideError(
            f"{path.name}: looks like a {name} whole-slide image but cannot be read (damaged, "
            "incomplete, or a variant the reader does not know). Export it again from the "
            "scanner's software."
        ) from exc
    try:
        width, height = (int(v) for v in slide.dimensions)
        return SlideInfo(
            format=vendor,
            kind=SlideKind.WHOLE_SLIDE,
            width=width,
            height=height,
            mpp=positive_or_none(slide.properties.get(openslide.PROPERTY_NAME_MPP_X)),
            level_count=int(slide.level_count),
        )
    finally:
        slide.close()


def tiff_mpp(path: Path) -> float | None:
    """Microns per pixel of a TIFF's first page from its resolution tags (cm or inch), or the
    Aperio description's `MPP = `, or OME's PhysicalSizeX (in µm)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            if tif.is_svs:
                for part in str(page.description).split("|"):
                    key, _, value = part.partition("=")
                    if key.strip() == "MPP":
                        return positive_or_none(value.strip())
            if tif.is_ome and tif.ome_metadata:
                found = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
                xunit = re.search(r"PhysicalSizeXUnit=\"([^\"]+)\"", tif.ome_metadata)
                if found and (xunit is None or xunit.group(1) in ("µm", "um", "\u00b5m")):
                    return positive_or_none(found.group(1))
            tags = page.tags
            if "XResolution" in tags and "ResolutionUnit" in tags:
                num, den = tags["XResolution"].value
                unit = int(tags["ResolutionUnit"].value)
                per_unit = num / den if den else 0
                microns = {2: 25_400.0, 3: 10_000.0}.get(unit)
                if microns and per_unit > 0:
                    mpp = positive_or_none(microns / per_unit)
                    return mpp if mpp is not None and mpp < 100 else None  # 72 dpi is no scan
    except Exception:
        return None
    return None
