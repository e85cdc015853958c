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
