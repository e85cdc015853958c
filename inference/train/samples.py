"""Training samples of both stages and their readers: `FieldSample` (an RGB field with its
annotated nucleus centres, stage 1) and `CellPatches` (square patches centred on annotated
nuclei, stage 2), read from CRIC or cut from in-memory fields (tests train on synthetic ones).

No model code here: the export reader (`inference.data.export`) builds the same samples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..data.cric import CricDataset
from ..data.leaks import ImageRef
from ..scale import rescaled
from ..slides import crop_padded, read_image
from ..types import BETHESDA_CLASSES, NOT_A_CELL, STAGE2_CLASSES, is_abnormal


@dataclass
class FieldSample:
    """An RGB field at `scale` x level 0, with annotated nucleus centres in the same pixels."""

    name: str
    image: np.ndarray
    points: np.ndarray  # (N, 2) float, x/y in this image's pixels
    labels: list[str]
    scale: float = 1.0
    sha256: str = ""  # of the source file (`inference.data.leaks`); "" when unknown

    @property
    def abnormal(self) -> np.ndarray:
        return np.array([is_abnormal(c) for c in self.labels], dtype=bool)

    @property
    def ref(self) -> ImageRef:
        return ImageRef(self.sha256, self.name)


def training_patch_px(crop_px: int, jitter_px: float) -> int:
    """The side of the patch cut around a cell for training: room for any rotation of the crop
    plus the centre jitter without invented border pixels."""
    return round(crop_px * 1.5 + 2 * jitter_px)


def load_cric_fields(
    dataset: CricDataset, names: Sequence[str], *, scale: float = 1.0, desc: str = "loading"
) -> list[FieldSample]:
    """Decode (and downscale) the named CRIC images with their annotated cells."""
    out = []
    for name in tqdm(names, desc=desc, unit="img", leave=False):
        ann = dataset.images[name]
        image = rescaled(read_image(dataset.image_path(name)), scale)
        pts = np.array([(c.x, c.y) for c in ann.cells], np.float64).reshape(-1, 2) * scale
        labels = [c.label for c in ann.cells]
        out.append(FieldSample(name, image, pts, labels, scale, dataset.sha256(name)))
    return out


def pad_to_multiple(image: np.ndarray, multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right with white to a multiple of `multiple`; also return the valid mask."""
    h, w = image.shape[:2]
    H, W = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    padded = crop_padded(image, 0, 0, W, H)
    valid = np.zeros((H, W), np.float32)
    valid[:h, :w] = 1.0
    return padded, valid


@dataclass
class CellPatches:
    """Square patches (side `patch`) centred on annotated nuclei, at level 0."""

    images: np.ndarray  # (N, P, P, 3) uint8
    labels: np.ndarray  # (N,) int indices into BETHESDA_CLASSES
    image_names: list[str] = field(default_factory=list)
    image_sha256: list[str] = field(default_factory=list)  # of each patch's source file

    @classmethod
    def empty(cls, patch: int) -> CellPatches:
        return cls(np.zeros((0, patch, patch, 3), np.uint8), np.zeros(0, np.int64))

    def _column(self, values: list[str]) -> list[str]:
        return values if len(values) == len(self.labels) else [""] * len(self.labels)

    @classmethod
    def joined(cls, parts: Sequence[CellPatches]) -> CellPatches:
        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [n for p in parts for n in p._column(p.image_names)],
            [h for p in parts for h in p._column(p.image_sha256)],
        )

    def refs(self) -> list[ImageRef]:
        """The distinct source images of the patches (those with a known SHA-256)."""
        pairs = zip(self._column(self.image_names), self._column(self.image_sha256), strict=True)
        return [ImageRef(h, n) for n, h in dict.fromkeys(pairs) if h]


def extract_patches(fields: Sequence[FieldSample], patch: int) -> CellPatches:
    imgs, labels, names, sha = [], [], [], []
    half = patch // 2
    for f in fields:
        for (x, y), lab in zip(f.points, f.labels, strict=True):
            ix, iy = round(x), round(y)
            imgs.append(crop_padded(f.image, ix - half, iy - half, patch, patch))
            labels.append(BETHESDA_CLASSES.index(lab))
            names.append(f.name)
            sha.append(f.sha256)
    arr = np.stack(imgs) if imgs else np.zeros((0, patch, patch, 3), np.uint8)
    return CellPatches(arr, np.array(labels, np.int64), names, sha)


def cric_patches(
    dataset: CricDataset, names: Sequence[str], patch: int, desc: str = "crops"
) -> CellPatches:
    """Patches of every annotated cell of the named images, decoding one image at a time."""
    parts = []
    for name in tqdm(names, desc=desc, unit="img", leave=False):
        parts.append(extract_patches(load_cric_fields(dataset, [name], desc=name), patch))
    return CellPatches.joined(parts) if parts else CellPatches.empty(patch)


def centre_crops(patches: np.ndarray, crop: int) -> np.ndarray:
    p = patches.shape[1]
    o = (p - crop) // 2
    return np.ascontiguousarray(patches[:, o : o + crop, o : o + crop])


def class_counts(labels: np.ndarray) -> dict[str, int]:
    c = Counter(int(i) for i in labels)
    counts = {code: c.get(i, 0) for i, code in enumerate(STAGE2_CLASSES)}
    if not counts[NOT_A_CELL]:
        del counts[NOT_A_CELL]  # a six-class set: the six Bethesda classes only
    return counts
