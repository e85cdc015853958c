"""A scale from the images themselves, for images with no microns per pixel (issue 17, item 4).

Nuclei are the one structure of a Pap smear whose size varies little: a normal intermediate or
superficial cell's nucleus is about 5-8 µm whatever the lab, stain or preparation. So the size of
the dark, round, solid blobs of the images, compared with the same statistic on the data the
models learnt from (CRIC at 1280 px wide: `REFERENCE_NUCLEUS_PX`), gives the factor that brings
them to the models' scale (`factor > 1`: enlarge the images).

How the blobs are found (numpy + OpenCV, no torch): the darkest channel, lightly smoothed,
thresholded by Otsu twice (glass | cytoplasm | nuclei); connected components kept when round
(4πA/P² >= 0.6), solid (area / convex hull >= 0.85), not touching the border and 4 to 80 px
across; of those, the darker half (nuclei are the darkest round things; debris and cytoplasm
folds are paler), and their area-weighted median diameter (small specks count little).

Per BATCH of images (`estimate_batch_scale`: the median over the fields of one lab or slide),
not per field: nuclear enlargement is itself the sign of abnormality (an HSIL field's nuclei are
larger), so a per-field estimate would shrink exactly the fields that matter. Measured with
this very function (`python -m inference estimate-scale`), see MODEL_CARD.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Median nucleus diameter this function measures on the CRIC training fields (1280 px wide):
# the scale the committed models were trained at.
REFERENCE_NUCLEUS_PX = 23.3
MIN_NUCLEI = 8
DIAMETER_PX = (4.0, 80.0)


@dataclass(frozen=True)
class ScaleEstimate:
    nucleus_px: float | None  # median nucleus diameter in the image's pixels
    nuclei: int  # blobs it is the median of
    factor: float | None  # resize the image by this to reach the models' scale

    def to_dict(self) -> dict[str, float | int | None]:
        return {"nucleus_px": self.nucleus_px, "nuclei": self.nuclei, "factor": self.factor}


def _blob_diameters(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(equivalent diameter, mean darkness) of the round, solid, dark blobs of the image."""
    dark = 255 - rgb[..., :3].min(axis=2)  # nuclei are dark in every channel, grey included
    dark = cv2.GaussianBlur(dark.astype(np.uint8), (0, 0), 1.0)
    # Glass, cytoplasm, nuclei: Otsu splits glass from the rest, Otsu again on the rest splits
    # cytoplasm from nuclei (a two-step three-class threshold).
    first, _ = cv2.threshold(dark, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    rest = dark[dark > first]
    if len(rest) < 16:
        return np.zeros(0), np.zeros(0)
    second, _ = cv2.threshold(rest.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    nuclei = np.where(dark > second, 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(nuclei, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    h, w = mask.shape
    diameters, darkness = [], []
    for c in contours:
        area = cv2.contourArea(c)
        d = math.sqrt(4 * area / math.pi) if area > 0 else 0.0
        if not DIAMETER_PX[0] <= d <= DIAMETER_PX[1]:
            continue
        x, y, bw, bh = cv2.boundingRect(c)
        if x == 0 or y == 0 or x + bw >= w or y + bh >= h:
            continue
        perimeter = cv2.arcLength(c, True)
        hull = cv2.contourArea(cv2.convexHull(c))
        if perimeter <= 0 or hull <= 0:
            continue
        if 4 * math.pi * area / perimeter**2 < 0.6 or area / hull < 0.85:
            continue
        blob = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(blob, [c - [x, y]], -1, 1, -1)
        diameters.append(d)
        darkness.append(float(dark[y : y + bh, x : x + bw][blob > 0].mean()))
    return np.asarray(diameters, np.float64), np.asarray(darkness, np.float64)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def estimate_scale(rgb: np.ndarray, reference_px: float = REFERENCE_NUCLEUS_PX) -> ScaleEstimate:
    """One field's nucleus size (area-weighted median diameter of the darker half of its round
    dark blobs) and the factor bringing it to `reference_px`; None with too few blobs."""
    diameters, darkness = _blob_diameters(rgb)
    if len(diameters) < MIN_NUCLEI:
        return ScaleEstimate(None, len(diameters), None)
    darker = diameters[darkness >= np.median(darkness)]
    size = _weighted_median(darker, darker**2)
    return ScaleEstimate(size, len(darker), reference_px / size)


def estimate_batch_scale(
    fields: list[ScaleEstimate], reference_px: float = REFERENCE_NUCLEUS_PX
) -> ScaleEstimate:
    """The batch's scale: the median nucleus size over its fields that gave one."""
    sizes = [f.nucleus_px for f in fields if f.nucleus_px is not None]
    if not sizes:
        return ScaleEstimate(None, 0, None)
    size = float(np.median(sizes))
    return ScaleEstimate(size, len(sizes), reference_px / size)


def rescaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by `factor` (> 1: enlarged, bicubic; < 1: shrunk, area-averaged), the
    one way fields are brought to a scale (evaluate, mining, the detector's training fields,
    benchmarks)."""
    if factor == 1.0:
        return rgb
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    interpolation = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
    return cv2.resize(rgb, size, interpolation=interpolation)
