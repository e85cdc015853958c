"""Overlay drawing (OpenCV): predicted cells as class-coloured boxes on a field or thumbnail."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .slides import open_slide
from .types import CLASS_COLOURS, CellPrediction, is_abnormal


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


def draw_overlay(
    image: np.ndarray,
    cells: Sequence[CellPrediction],
    *,
    scale: float = 1.0,
    show_nilm: bool = True,
) -> np.ndarray:
    """A copy of `image` (RGB) with each cell's box (level-0 coordinates times `scale`) and its
    label and confidence; abnormal cells drawn thicker and on top."""
    out = np.ascontiguousarray(image.copy())
    thick = max(1, round(2 * max(scale, 0.5)))
    ordered = sorted(cells, key=lambda c: is_abnormal(c.label))
    for c in ordered:
        if not show_nilm and not is_abnormal(c.label):
            continue
        colour = _rgb(CLASS_COLOURS[c.label])
        x0, y0 = round(c.box.x * scale), round(c.box.y * scale)
        x1, y1 = round((c.box.x + c.box.width) * scale), round((c.box.y + c.box.height) * scale)
        t = thick + (1 if is_abnormal(c.label) else 0)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, t)
        if scale >= 0.25:
            text = f"{c.label} {c.probabilities.get(c.label, 0.0):.2f}"
            cv2.putText(
                out,
                text,
                (x0, max(10, y0 - 3)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                colour,
                1,
                cv2.LINE_AA,
            )
    return out


def thumbnail(path: Path, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """The image itself (fields) or a whole low pyramid level (WSI), and its scale to level 0."""
    with open_slide(path) as reader:
        w, h = reader.dimensions
        level = reader.best_level_for_downsample(max(w, h) / max_side)
        lw, lh = reader.level_dimensions[level]
        if lw * lh > 4096 * 4096:
            raise InputError(f"{path.name}: no pyramid level small enough for an overlay")
        img = reader.read_region((0, 0), level, (lw, lh))
        return img, 1.0 / reader.level_downsamples[level]
