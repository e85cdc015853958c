"""The training inputs of both stages from a PapReview export, optionally merged with the CRIC
base data (`--merge-base`), checked for leaks before any pixel is decoded.

Every image is identified by the SHA-256 of its file (`inference.data.leaks`). With
`merge_base`, base images that are also in the export (same SHA-256, in any of its splits) are
dropped from the base: the export's split wins for them, and how many were dropped is logged
and recorded (`merged_with.dropped_in_export`). Then no validation or test image, of the export
or of the base, may be a training image (`LeakError`, a one-line refusal). The data metadata
records the SHA-256s of the training and validation images (`images_sha256`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .cric import CricDataset, load_split, split_meta
from .export import SPLITS, Export, export_fields, export_patches, opened
from .leaks import ImageRef, refuse_leaks, sha256_record

if TYPE_CHECKING:  # pragma: no cover
    from ..train.samples import CellPatches, FieldSample

Log = Callable[[str], None]


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg)


def export_meta(export: Export) -> dict[str, Any]:
    """What a checkpoint records about the export it was trained on."""
    m = export.manifest
    return {
        "name": f"PapReview export {export.label}",
        "export": {
            "name": m.get("name"),
            "version": m.get("version"),
            "id": m.get("export_id"),
            "created_at": m.get("created_at"),
            "files_sha256": hashlib.sha256(
                json.dumps(m.get("files", {}), sort_keys=True).encode()
            ).hexdigest(),
        },
        "split": {s: m.get("split", {}).get(s, []) for s in SPLITS},
        "split_method": "by patient (see the export's manifest)",
        "counts": m.get("counts", {}),
    }


def _check(export: Export) -> None:
    problems = export.verify()
    if problems:
        shown = "; ".join(problems[:5])
        raise InputError(f"export {export.label} does not match its manifest: {shown}")


@dataclass
class Plan:
    """What a run trains and validates on, by name, before any pixel is read."""

    meta: dict[str, Any]
    sources: dict[str, list[ImageRef]]
    base: CricDataset | None = None
    base_split: dict[str, list[str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # base images also in the export


def plan(
    export: Export,
    *,
    merge_base: bool = False,
    data_dir: Path | None = None,
    split_seed: int = 2021,
    log: Log = _log,
) -> Plan:
    """The export's splits, plus (with `merge_base`) the base data's minus the base images that
    are in the export; refused (`LeakError`) when a val/test image is also a training image."""
    _check(export)
    sources = export.sources()
    meta = export_meta(export)
    out = Plan(meta=meta, sources=sources)
    if merge_base:
        dataset, split, seed = load_split(data_dir, split_seed)
        in_export = {r.sha256 for refs in sources.values() for r in refs if r.sha256}
        for part in SPLITS:
            names = split.get(part, [])
            out.base_split[part] = [n for n in names if dataset.sha256(n) not in in_export]
            out.dropped += [n for n in names if dataset.sha256(n) in in_export]
            sources[part] = [*sources.get(part, []), *dataset.refs(out.base_split[part])]
        log(
            f"--merge-base: dropped {len(out.dropped)} of {len(dataset.images)} base images "
            "that are also in the export (same SHA-256); the export's split is kept for them"
        )
        merged = split_meta(dataset, out.base_split, seed)
        merged.pop("images_sha256", None)  # the run's own record below covers both sources
        meta["merged_with"] = {
            **merged,
            "dropped_in_export": len(out.dropped),
            "dropped_images": out.dropped,
        }
        out.base = dataset
    refuse_leaks(sources)
    meta["images_sha256"] = sha256_record(sources)
    return out


def detector_data(
    path: Path,
    *,
    scale: float,
    merge_base: bool = False,
    data_dir: Path | None = None,
    split_seed: int = 2021,
) -> tuple[list[FieldSample], list[FieldSample], dict[str, Any]]:
    """(train, val, data meta) for stage 1 from an export, optionally plus the CRIC base data."""
    with opened(path) as export:
        p = plan(export, merge_base=merge_base, data_dir=data_dir, split_seed=split_seed)
        train = export_fields(export, "train", scale=scale)
        val = export_fields(export, "val", scale=scale)
    if p.base is not None:
        from ..train.samples import load_cric_fields

        train += load_cric_fields(p.base, p.base_split["train"], scale=scale, desc="base train")
        val += load_cric_fields(p.base, p.base_split["val"], scale=scale, desc="base val")
    return train, val, p.meta


def classifier_data(
    path: Path,
    *,
    patch: int,
    merge_base: bool = False,
    data_dir: Path | None = None,
    split_seed: int = 2021,
    rejected_label: str = "NILM",
) -> tuple[CellPatches, CellPatches, dict[str, Any]]:
    """(train, val, data meta) for stage 2 from an export, optionally plus the CRIC base data;
    the calls people rejected are taught as `rejected_label` (NILM, or NOT_A_CELL)."""
    with opened(path) as export:
        p = plan(export, merge_base=merge_base, data_dir=data_dir, split_seed=split_seed)
        train = export_patches(export, "train", patch, rejected_label)
        val = export_patches(export, "val", patch, rejected_label)
    if p.base is not None:
        from ..train.samples import CellPatches, cric_patches

        base_train = cric_patches(p.base, p.base_split["train"], patch, desc="base train")
        base_val = cric_patches(p.base, p.base_split["val"], patch, desc="base val")
        train = CellPatches.joined([train, base_train])
        val = CellPatches.joined([val, base_val])
    return train, val, p.meta
