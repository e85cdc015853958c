"""Deep Zoom tiles through the API, for the format tests: what a viewer is served."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image


def deepzoom_tile(client: Any, slide: Any, level: int, col: int = 0, row: int = 0) -> np.ndarray:
    """Tile (`col`, `row`) of Deep Zoom `level` of `slide` as RGB floats (asserts a 200)."""
    response = client.get(f"/api/slides/{slide.pk}/deepzoom_files/{level}/{col}_{row}.jpeg")
    assert response.status_code == 200, response.content[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=float)


def check_served(client: Any, slide: Any, expected: np.ndarray) -> None:
    """The full-resolution tile (0, 0) is the image's top-left 256 x 256 px; the whole-slide tile
    at the lowest zoom with several pixels is the image scaled down (a reduced level's)."""
    top = math.ceil(math.log2(max(slide.width, slide.height)))
    full = deepzoom_tile(client, slide, top)
    assert full.shape == (256, 256, 3)
    assert np.abs(full - expected[:256, :256]).mean() < 8  # JPEG in the file and on the wire
    small = deepzoom_tile(client, slide, top - 4)  # 1/16: the whole slide in one tile
    h, w = small.shape[:2]
    assert (w, h) == (math.ceil(slide.width / 16), math.ceil(slide.height / 16))
    reduced = np.asarray(Image.fromarray(expected).resize((w, h), Image.Resampling.BOX), float)
    assert np.abs(small - reduced).mean() < 12
