"""Fields with a field-level label only (no marked cell): the `lbc/` set's `fields.csv`
(`image_filename, field_label` NILM/abnormal), and their split by image.

A NILM field holds no abnormal cell (every call on it is a false alarm); an abnormal field holds
at least one. The split is stratified by label and fixed by a seed, so that mining negatives
(train), choosing a model (val) and the final figures (test) never share a field.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError

SPLIT_SHARES = {"val": 0.2, "test": 0.2}  # the rest is train


def read_field_labels(path: Path) -> dict[str, bool]:
    """image file name -> abnormal (field_label other than NILM)."""
    if not path.is_file():
        raise InputError(f"--fields {path} is not a file")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image_filename", "field_label"} <= set(rows[0]):
        raise InputError(f"--fields {path} needs the columns image_filename and field_label")
    return {r["image_filename"]: r["field_label"].strip().lower() != "nilm" for r in rows}


def read_field_classes(path: Path) -> dict[str, str]:
    """image file name -> its field class (`field_class`: a Bethesda code) for abnormal fields."""
    from ..types import BETHESDA_CLASSES

    labels = read_field_labels(path)
    with path.open(newline="") as fh:
        rows = {
            r["image_filename"]: (r.get("field_class") or "").strip() for r in csv.DictReader(fh)
        }
    out = {name: rows[name] for name, abnormal in labels.items() if abnormal}
    wrong = sorted({c for c in out.values() if c not in BETHESDA_CLASSES or c == "NILM"})
    if wrong:
        raise InputError(
            f"--fields {path}: abnormal fields need a field_class among "
            f"{', '.join(BETHESDA_CLASSES[1:])} (found {', '.join(map(repr, wrong))})"
        )
    return out


def field_split(labels: dict[str, bool], seed: int = 2021) -> dict[str, list[str]]:
    """train / val / test names, each label split in the same shares (SPLIT_SHARES)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for value in (False, True):
        names = sorted(n for n, v in labels.items() if v == value)
        order = [names[i] for i in rng.permutation(len(names))]
        n_val = round(len(order) * SPLIT_SHARES["val"])
        n_test = round(len(order) * SPLIT_SHARES["test"])
        out["val"] += order[:n_val]
        out["test"] += order[n_val : n_val + n_test]
        out["train"] += order[n_val + n_test :]
    return {k: sorted(v) for k, v in out.items()}
