"""Synthetic Pap-like field images (cheap to draw at any size)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def field_image(width: int, height: int, *, seed: int = 0, density: int = 40_000) -> np.ndarray:
    """A Pap-like field: pale background, round nuclei in cytoplasm (cheap to draw at any size)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (236, 232, 238), np.uint8)
    for _ in range(max(2, width * height // density)):
        x, y = int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))
        r = int(rng.integers(8, 16))
        cv2.circle(img, (x, y), 3 * r, (200, 170, 205), -1)
        cv2.circle(img, (x, y), r, (70, 50, 120), -1)
    return img


def field_bytes(width: int = 256, height: int = 256, *, seed: int = 0, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(field_image(width, height, seed=seed)).save(buffer, format=fmt)
    return buffer.getvalue()


def hostile_tiff(
    width: int = 20_000, height: int = 20_000, *, tile: int = 256, padding: int = 0
) -> bytes:
    """A tiled RGB TIFF that declares `width` x `height` px but holds one deflated blank tile,
    which every tile offset points at: about 50 KB for 20000 x 20000 px (tile offsets and counts).
    Readers that trust the declared size allocate gigabytes for it. `padding` unused bytes make
    the file as large as a real one would be (to pass a declared-size check)."""
    import struct
    import zlib

    blob = zlib.compress(bytes([255]) * (tile * tile * 3), 9)
    tiles = ((width + tile - 1) // tile) * ((height + tile - 1) // tile)
    entries = 11
    ifd_at = 8
    ifd_size = 2 + entries * 12 + 4
    bits_at = ifd_at + ifd_size
    offsets_at = bits_at + 6
    counts_at = offsets_at + 4 * tiles
    blob_at = counts_at + 4 * tiles

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    ifd = (
        struct.pack("<H", entries)
        + b"".join(
            [
                entry(256, 4, 1, width),  # ImageWidth
                entry(257, 4, 1, height),  # ImageLength
                entry(258, 3, 3, bits_at),  # BitsPerSample 8,8,8
                entry(259, 3, 1, 8),  # Compression: deflate
                entry(262, 3, 1, 2),  # Photometric: RGB
                entry(277, 3, 1, 3),  # SamplesPerPixel
                entry(284, 3, 1, 1),  # PlanarConfiguration: chunky
                entry(322, 3, 1, tile),  # TileWidth
                entry(323, 3, 1, tile),  # TileLength
                entry(324, 4, tiles, offsets_at),  # TileOffsets
                entry(325, 4, tiles, counts_at),  # TileByteCounts
            ]
        )
        + struct.pack("<I", 0)
    )
    return b"".join(
        [
            b"II*\x00" + struct.pack("<I", ifd_at),
            ifd,
            struct.pack("<HHH", 8, 8, 8),
            struct.pack(f"<{tiles}I", *([blob_at] * tiles)),
            struct.pack(f"<{tiles}I", *([len(blob)] * tiles)),
            blob,
            bytes(padding),
        ]
    )
