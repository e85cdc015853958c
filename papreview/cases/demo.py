"""Synthetic Pap-smear-like field images for the demo data (used when no real images are present).

A pale, slightly mottled background with overlapping squamous cells: large polygon-ish cytoplasm
(pink or blue-green, translucent) around a small dark nucleus. A few "abnormal" cells get a large,
dark, irregular nucleus (high nucleus-to-cytoplasm ratio), the visual cue of a high-grade lesion.
Deterministic for a given seed, so re-running the demo loader finds the same files (and its
duplicate check keeps it idempotent).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUND = (238, 232, 236)
CYTOPLASM_COLOURS = ((236, 170, 190), (160, 205, 200), (215, 180, 215), (190, 210, 190))
NUCLEUS_NORMAL = (70, 55, 120)
NUCLEUS_ABNORMAL = (45, 25, 85)


def _blob(
    rng: np.random.Generator, cx: float, cy: float, radius: float, points: int, wobble: float
) -> list[tuple[float, float]]:
    """A closed irregular polygon around (cx, cy)."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = radius * (1 + rng.uniform(-wobble, wobble, points))
    return [
        (cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)
    ]


def synthetic_pap_image(
    width: int = 1376, height: int = 1020, *, seed: int = 0, cells: int = 40, abnormal: int = 3
) -> Image.Image:
    """An RGB field image that looks broadly like a Papanicolaou-stained smear."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 4, size=(height // 8 + 1, width // 8 + 1, 1))
    base = np.clip(np.array(BACKGROUND, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(base, mode="RGB")
    image = image.resize((width, height), Image.Resampling.BILINEAR).convert("RGB")

    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    centres = rng.uniform((0, 0), (width, height), size=(cells, 2))
    for cx, cy in centres:
        radius = rng.uniform(35, 75)
        colour = CYTOPLASM_COLOURS[int(rng.integers(len(CYTOPLASM_COLOURS)))]
        draw.polygon(
            _blob(rng, cx, cy, radius, 9, 0.25), fill=(*colour, 150), outline=(*colour, 220)
        )
    image = Image.alpha_composite(image.convert("RGBA"), layer)

    nuclei = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(nuclei)
    abnormal_idx = set(rng.choice(cells, size=min(abnormal, cells), replace=False).tolist())
    for i, (cx, cy) in enumerate(centres):
        if i in abnormal_idx:
            r, colour, wobble = rng.uniform(16, 24), NUCLEUS_ABNORMAL, 0.3
        else:
            r, colour, wobble = rng.uniform(5, 8), NUCLEUS_NORMAL, 0.1
        draw.polygon(_blob(rng, cx, cy, r, 12, wobble), fill=(*colour, 235))
    image = Image.alpha_composite(image, nuclei).convert("RGB")
    return image.filter(ImageFilter.GaussianBlur(radius=1.2))


def synthetic_pap_bytes(*, seed: int = 0, fmt: str = "PNG", **kwargs: int) -> bytes:
    """The image encoded as PNG (default) or JPEG."""
    buffer = io.BytesIO()
    image = synthetic_pap_image(seed=seed, **kwargs)
    if fmt.upper() == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
