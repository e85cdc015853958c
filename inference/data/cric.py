"""The CRIC Cervix field images with per-cell Bethesda labels (see ../shared/data/README.md).

Rezende et al., "Cric searchable image database as a public platform for conventional pap smear
cytology data", Scientific Data 8:151 (2021), doi:10.1038/s41597-021-00933-8.

Only nucleus centres are given (no boxes), and not every cell is labelled: unlabelled areas are
unknown, not negative. Splits are made by image, never by cell. Each image is identified by the
SHA-256 of its file (`CricDataset.sha256`), as export images are (`inference.data.leaks`).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..types import BETHESDA_CLASSES, SEVERITY
from . import default_data_dir
from .leaks import ImageRef, file_sha256, refuse_leaks, sha256_record

CSV_COLUMNS = ("image_filename", "nucleus_x", "nucleus_y", "bethesda_system")


@dataclass(frozen=True)
class CellPoint:
    x: float
    y: float
    label: str  # a Bethesda code


@dataclass
class AnnotatedImage:
    filename: str
    cells: list[CellPoint] = field(default_factory=list)

    @property
    def label_counts(self) -> Counter[str]:
        return Counter(c.label for c in self.cells)


def cric_dir(data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / "cric"


def read_cells_csv(path: Path) -> dict[str, AnnotatedImage]:
    """Read a cells table (`image_filename,nucleus_x,nucleus_y,bethesda_system`, extra columns
    ignored) into images keyed by file name, in file order."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the cells table {path}: {exc.strerror}") from exc
    images: dict[str, AnnotatedImage] = {}
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path.name}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            label = row["bethesda_system"].strip()
            if label not in SEVERITY:
                raise InputError(
                    f"{path.name}:{line}: unknown class {label!r} (expected one of "
                    f"{', '.join(BETHESDA_CLASSES)})"
                )
            try:
                x, y = float(row["nucleus_x"]), float(row["nucleus_y"])
            except ValueError as exc:
                raise InputError(
                    f"{path.name}:{line}: nucleus_x/nucleus_y must be numbers"
                ) from exc
            name = row["image_filename"].strip()
            images.setdefault(name, AnnotatedImage(name)).cells.append(CellPoint(x, y, label))
    return images


def data_hash(cells_csv: Path, image_names: Iterable[str] = ()) -> str:
    """A short fingerprint of the training data: the cells table and the image names used."""
    h = hashlib.sha256(Path(cells_csv).read_bytes())
    for name in sorted(image_names):
        h.update(name.encode())
    return h.hexdigest()[:16]


def _stratum(image: AnnotatedImage, class_totals: Counter[str]) -> str:
    """The rarest class present in an image (so rare classes reach every split)."""
    present = [c for c in image.label_counts if c != "NILM"]
    if not present:
        return "NILM"
    return min(present, key=lambda c: (class_totals[c], c))


def split_images(
    images: dict[str, AnnotatedImage],
    *,
    seed: int = 2021,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
) -> dict[str, list[str]]:
    """Split by image, stratified on each image's rarest abnormal class; deterministic in `seed`.

    Every stratum with at least 3 images puts one or more images in each of val and test.
    """
    totals: Counter[str] = Counter()
    for im in images.values():
        totals.update(im.label_counts)
    strata: dict[str, list[str]] = defaultdict(list)
    for name in sorted(images):
        strata[_stratum(images[name], totals)].append(name)
    rng = random.Random(seed)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in sorted(strata):
        names = strata[key]
        rng.shuffle(names)
        n = len(names)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        split["test"] += names[:n_test]
        split["val"] += names[n_test : n_test + n_val]
        split["train"] += names[n_test + n_val :]
    return {k: sorted(v) for k, v in split.items()}


@dataclass
class CellsTable:
    """Annotated images in one folder, with their cells table: an export's split
    (`images/<split>/`, `points/<split>.csv`; `Export.points`), read as `python -m inference
    evaluate --images --cells` reads them. Only the images whose file is in the folder."""

    folder: Path
    images: dict[str, AnnotatedImage]

    @classmethod
    def read(cls, folder: Path, cells_csv: Path) -> CellsTable:
        table = read_cells_csv(cells_csv)
        return cls(folder, {n: im for n, im in table.items() if (folder / n).is_file()})

    def image_path(self, name: str) -> Path:
        return self.folder / name


@dataclass
class CricDataset:
    root: Path
    images: dict[str, AnnotatedImage]
    _sha256: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, data_dir: Path | None = None) -> CricDataset:
        root = cric_dir(data_dir)
        csv_path = root / "cells.csv"
        if not csv_path.is_file():
            raise InputError(
                f"CRIC data not found: {csv_path} is missing (set PAPREVIEW_DATA_DIR to the folder "
                "that holds cric/)"
            )
        return cls(root=root, images=read_cells_csv(csv_path))

    @property
    def cells_csv(self) -> Path:
        return self.root / "cells.csv"

    def image_path(self, name: str) -> Path:
        return self.root / "images" / name

    def subset(self, names: Sequence[str]) -> list[AnnotatedImage]:
        return [self.images[n] for n in names]

    def sha256(self, name: str) -> str:
        """The SHA-256 of the image's file (read once, then remembered)."""
        if name not in self._sha256:
            path = self.image_path(name)
            try:
                self._sha256[name] = file_sha256(path)
            except OSError as exc:
                raise InputError(f"cannot read the CRIC image {path}: {exc.strerror}") from exc
        return self._sha256[name]

    def refs(self, names: Sequence[str]) -> list[ImageRef]:
        """The named images as leak-check identities (`cric/<name>`)."""
        return [ImageRef(self.sha256(n), f"cric/{n}") for n in names]

    def sources(self, split: dict[str, list[str]]) -> dict[str, list[ImageRef]]:
        return {part: self.refs(names) for part, names in split.items()}


def split_balance_cost(images: dict[str, AnnotatedImage], split: dict[str, list[str]]) -> float:
    """How far each class's share of cells in val and test is from the target fractions."""
    totals: Counter[str] = Counter()
    for im in images.values():
        totals.update(im.label_counts)
    n_images = len(images)
    cost = 0.0
    for part in ("val", "test"):
        counts: Counter[str] = Counter()
        for name in split[part]:
            counts.update(images[name].label_counts)
        target = len(split[part]) / n_images
        for cls, total in totals.items():
            cost += abs(counts[cls] / total - target)
    return cost


def balanced_split(
    images: dict[str, AnnotatedImage],
    *,
    seed: int = 2021,
    tries: int = 200,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
) -> tuple[dict[str, list[str]], int]:
    """The stratified image split, among seeds seed..seed+tries-1, whose per-class cell shares in
    val and test are closest to the target fractions (labels only: no model is involved).
    Returns the split and the seed that made it."""
    best: tuple[float, int, dict[str, list[str]]] | None = None
    for s in range(seed, seed + tries):
        split = split_images(images, seed=s, fractions=fractions)
        cost = split_balance_cost(images, split)
        if best is None or cost < best[0]:
            best = (cost, s, split)
    assert best is not None
    return best[2], best[1]


CITATION = (
    'Rezende et al., "Cric searchable image database as a public platform for conventional pap '
    'smear cytology data", Scientific Data 8:151 (2021), doi:10.1038/s41597-021-00933-8'
)


def load_split(
    data_dir: Path | None, split_seed: int
) -> tuple[CricDataset, dict[str, list[str]], int]:
    """The dataset, its balanced split (`balanced_split`) and the seed that made it. Refused
    (`LeakError`) when a validation or test image has the bytes of a training image."""
    dataset = CricDataset.load(data_dir)
    split, seed = balanced_split(dataset.images, seed=split_seed)
    refuse_leaks(dataset.sources(split))
    return dataset, split, seed


def split_meta(dataset: CricDataset, split: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """What a checkpoint records about the CRIC data and split it was trained on."""
    return {
        "name": "CRIC Cervix fields (shared/data/cric, 1280 px wide)",
        "citation": CITATION,
        "hash": data_hash(dataset.cells_csv, dataset.images),
        "split_seed": seed,
        "split": split,
        "split_method": "by image; stratified on each image's rarest abnormal class; 70/15/15; "
        "seed chosen among 200 for balanced per-class cell shares (labels only)",
        "images_sha256": sha256_record(dataset.sources(split)),
    }
