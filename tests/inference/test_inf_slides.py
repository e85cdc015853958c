"""Reading uploads: type from bytes, typed errors for bad input, readers, tiling, pyramidal TIFF."""

from __future__ import annotations

import itertools
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from inference.errors import InputError, SlideTooLargeError, UnreadableSlideError
from inference.slides import (
    FieldReader,
    OpenSlideReader,
    crop_padded,
    iter_tiles,
    open_slide,
    probe_slide,
    read_image,
    sniff_format,
    tile_grid,
)
from inference.synthetic import synthetic_field, write_pyramidal_tiff
from inference.types import SlideKind
from tests.inference.support import CRIC_DIR, needs_cric

REPO = Path(__file__).resolve().parents[2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def field_rgb() -> np.ndarray:
    return synthetic_field(160, 120, cells=[(40, 40, 6), (120, 80, 8)], seed=1)


def test_sniff_format_uses_magic_numbers() -> None:
    assert sniff_format(b"\xff\xd8\xff\xe0....") == "jpeg"
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_format(b"II*\x00....") == "tiff"
    assert sniff_format(b"MM\x00+....") == "tiff"
    assert sniff_format(b"BM......") == "bmp"
    assert sniff_format(b"GIF89a") is None


@pytest.mark.parametrize(
    "ext,fmt", [("png", "png"), ("jpg", "jpeg"), ("bmp", "bmp"), ("tif", "tiff")]
)
def test_probe_field_formats(tmp_path: Path, field_rgb: np.ndarray, ext: str, fmt: str) -> None:
    path = tmp_path / f"field.{ext}"
    if ext == "tif":
        tifffile.imwrite(path, field_rgb)
    else:
        Image.fromarray(field_rgb).save(path)
    info = probe_slide(path, max_pixels=10**6)
    assert (info.format, info.kind, info.width, info.height) == (fmt, SlideKind.FIELD, 160, 120)
    assert info.level_count == 1
    image = read_image(path)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8


def test_type_comes_from_bytes_not_extension(tmp_path: Path, field_rgb: np.ndarray) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(field_rgb).save(path, format="PNG")
    assert probe_slide(path, max_pixels=10**6).format == "png"


def test_grayscale_and_16_bit_become_rgb8(tmp_path: Path) -> None:
    ramp = (np.arange(60 * 80, dtype=np.uint32).reshape(60, 80) * 13 % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.stack([ramp, ramp // 2, ramp // 4], axis=-1))
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "gray8.jpg")
    for name in ("gray16.png", "rgb16.tif", "gray8.jpg"):
        out = read_image(tmp_path / name)
        assert out.shape == (60, 80, 3) and out.dtype == np.uint8, name
        assert out.max() > 200, name  # 16-bit range scaled, not truncated to the low byte
    gray16 = read_image(tmp_path / "gray16.png")
    assert np.array_equal(gray16[..., 0], gray16[..., 2])
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(gray16[..., 0].astype(np.float64) - expected).max() <= 1


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(UnreadableSlideError, match="empty"):
        probe_slide(path, max_pixels=10**6)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("patient notes, definitely not pixels\n")
    with pytest.raises(UnreadableSlideError, match="not a supported image"):
        probe_slide(path, max_pixels=10**6)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    full = tmp_path / "full.img"
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(full, format=fmt)
    data = full.read_bytes()
    path = tmp_path / "cut.img"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableSlideError, match="damaged or truncated") as err:
        probe_slide(path, max_pixels=10**6)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, InputError)


def test_over_pixel_limit_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(60_000, 60_000))  # a few hundred bytes declaring 3.6 Gpx
    assert path.stat().st_size < 500
    with pytest.raises(SlideTooLargeError, match="Mpx"):
        probe_slide(path, max_pixels=50_000_000)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(small)
    with pytest.raises(SlideTooLargeError, match="100 x 100 px"):
        probe_slide(small, max_pixels=9_999)
    with pytest.raises(SlideTooLargeError):
        open_slide(small, max_pixels=9_999)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableSlideError, match="not found"):
        probe_slide(tmp_path / "nope.png", max_pixels=10**6)


def test_crop_padded_at_borders(field_rgb: np.ndarray) -> None:
    crop = crop_padded(field_rgb, -10, -5, 30, 20)
    assert crop.shape == (20, 30, 3)
    assert (crop[:5] == 255).all() and (crop[:, :10] == 255).all()
    assert np.array_equal(crop[5:, 10:], field_rgb[:15, :20])
    outside = crop_padded(field_rgb, 1000, 1000, 8, 8)
    assert (outside == 255).all()
    reader = FieldReader(field_rgb)
    assert np.array_equal(
        reader.read_region((150, 110), 0, (20, 20))[:10, :10], field_rgb[110:, 150:]
    )


def test_tile_grid_covers_with_overlap() -> None:
    tiles = tile_grid(1000, 700, tile=256, overlap=32)
    covered = np.zeros((700, 1000), bool)
    for t in tiles:
        assert t.x >= 0 and t.y >= 0 and t.x + t.width <= 1000 and t.y + t.height <= 700
        covered[t.y : t.y + t.height, t.x : t.x + t.width] = True
    assert covered.all()
    xs = sorted({t.x for t in tiles})
    assert all(b - a <= 256 - 32 for a, b in itertools.pairwise(xs))
    assert tile_grid(100, 50, tile=256) == [tile_grid(100, 50, tile=256)[0]]
    assert tile_grid(100, 50, tile=256)[0].width == 100
    with pytest.raises(ValueError):
        tile_grid(10, 10, tile=8, overlap=8)


def test_pyramidal_tiff_through_openslide(tmp_path: Path) -> None:
    path = write_pyramidal_tiff(tmp_path / "slide.tiff", 2100, 1300, levels=3, mpp=0.5)
    info = probe_slide(path, max_pixels=1000)  # the field-image pixel limit does not apply
    assert info.kind == SlideKind.WHOLE_SLIDE
    assert info.format == "generic-tiff"
    assert (info.width, info.height, info.level_count) == (2100, 1300, 3)
    assert info.mpp == pytest.approx(0.5, rel=1e-3)
    with open_slide(path) as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert reader.best_level_for_downsample(3.0) == 1
        # a nucleus-like disc is drawn every 400 px, centred at 200 + 400k: dark at its centre
        region = reader.read_region((200 - 8, 200 - 8), 0, (16, 16))
        assert region.shape == (16, 16, 3) and region.mean() < 150
        # outside the slide reads white
        assert (reader.read_region((2090, 1290), 0, (30, 30))[20:, 20:] == 255).all()
        tiles = list(iter_tiles(reader, level=2, tile=128, overlap=16))
        w2, h2 = reader.level_dimensions[2]
        covered = np.zeros((h2, w2), bool)
        for t, px in tiles:
            assert px.shape == (t.height, t.width, 3)
            covered[t.y : t.y + t.height, t.x : t.x + t.width] = True
        assert covered.all()


@needs_cric
def test_real_cric_field_probes() -> None:
    path = sorted((CRIC_DIR / "images").glob("*.jpg"))[0]
    info = probe_slide(path, max_pixels=10**7)
    assert info.format == "jpeg" and info.width == 1280 and 950 <= info.height <= 965


def test_importing_inference_loads_neither_django_nor_torch() -> None:
    code = (
        "import sys, inference, inference.types, inference.errors, inference.slides;"
        "bad = [m for m in ('django', 'torch') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
