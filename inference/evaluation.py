"""Evaluation behind `evaluate`, `evaluate-classifier`, retraining and the model registry's
compare page: every path runs the models through the one interface (`inference.interface.
CellAnalyser`), so the figures are those of what the workers run (test-time views, temperature,
fusion, thresholds, scale).

* `split_filter` keeps the images a pair of checkpoints was not trained or tuned on.
* `evaluate_pipeline` analyses annotated fields: detection, abnormal recall and false positives
  per image, classification of matched cells under the pipeline's decision rule and under plain
  argmax, what reviewers face (`reviewer_load`), checked against the project targets.
* `evaluate_export` is the same on one split of a PapReview dataset export (the registry's
  evaluation of a pair of versions; `python -m inference evaluate --data EXPORT --split test`).
* `classify_crop_folder` scores stage 2 alone on an ImageFolder of cell crops
  (`CellAnalyser.classify_crops`: the views, temperature and threshold of the pipeline).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .calibration import AnnotatedImages
from .classifier import abnormal_probability, argmax_labels
from .data.export import Export
from .errors import InputError
from .interface import CellAnalyser
from .metrics import ImageEval, check_targets, classification_metrics, detection_metrics
from .reviewer_load import reviewer_load, summary_stats
from .slides import IMAGE_SUFFIXES, read_image
from .types import BETHESDA_CLASSES


def split_filter(
    names: list[str], choice: str, meta_splits: list[dict[str, list[str]]]
) -> tuple[list[str], dict[str, Any]]:
    """The images to evaluate under --split `choice` (auto: none either model was trained or
    tuned on), with counts of what was kept and skipped."""
    known: dict[str, str] = {}
    for sp in meta_splits:
        for part, members in sp.items():
            for m in members:
                # an image used for training or tuning by either model is never "test"
                if known.get(m) in ("train", "val") and part == "test":
                    continue
                known[m] = part
    if choice == "all":
        kept = names
    elif choice == "auto":
        kept = [n for n in names if known.get(n) not in ("train", "val")]
    else:
        kept = [n for n in names if known.get(n) == choice]
    info = {
        "split": choice,
        "images_in_csv_and_folder": len(names),
        "images_evaluated": len(kept),
        "skipped_train_or_val": sum(known.get(n) in ("train", "val") for n in names)
        if choice == "auto"
        else None,
        "unknown_to_models": sum(n not in known for n in kept),
    }
    return kept, info


def analyse_annotated(
    analyser: CellAnalyser, images: AnnotatedImages, names: list[str]
) -> tuple[list[ImageEval], list[float]]:
    """Analyse the named annotated fields: their evaluation records and seconds per field."""
    evals = []
    seconds = []
    for name in tqdm(names, desc="evaluate", unit="img"):
        res = analyser.analyse(images.image_path(name))
        calls = res.candidates  # set-aside candidates count as the NILM calls they are
        seconds.append(res.timings.get("total", 0.0))
        ann = images.images[name]
        probs = np.array(
            [[c.probabilities[k] for k in BETHESDA_CLASSES] for c in calls], np.float64
        ).reshape(-1, len(BETHESDA_CLASSES))
        evals.append(
            ImageEval(
                name=name,
                gt_xy=np.array([(c.x, c.y) for c in ann.cells], np.float64).reshape(-1, 2),
                gt_labels=[c.label for c in ann.cells],
                pred_xy=np.array([c.box.centre for c in calls], np.float64).reshape(-1, 2),
                pred_labels=[c.label for c in calls],
                pred_p_abnormal=abnormal_probability(probs) if len(probs) else np.zeros(0),
                extra={"probs": probs, "set_aside": len(res.set_aside)},
            )
        )
    return evals, seconds


def evaluate_pipeline(
    analyser: CellAnalyser,
    images: AnnotatedImages,
    names: list[str],
    *,
    radius: float,
    field_labels: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """Analyse the named annotated fields; timings, operating point, metrics, what reviewers
    face, targets, and the same under the plain argmax rule."""
    evals, seconds = analyse_annotated(analyser, images, names)
    metrics = detection_metrics(evals, radius=radius)
    # the same predictions under the plain argmax rule (no sensitivity-first threshold)
    argmax_evals = [
        ImageEval(
            e.name,
            e.gt_xy,
            e.gt_labels,
            e.pred_xy,
            argmax_labels(e.extra["probs"]) if len(e.pred_xy) else [],
            e.pred_p_abnormal,
        )
        for e in evals
    ]
    argmax_metrics = detection_metrics(argmax_evals, radius=radius)
    return {
        "model_versions": analyser.versions,
        "seconds_per_image": float(np.mean(seconds)) if seconds else None,
        "operating_point": analyser.operating_point,
        "metrics": metrics,
        "reviewer": reviewer_load(evals, radius=radius, field_labels=field_labels),
        # candidates stage 2 set aside as not cells (never shown; scored above as NILM calls)
        "set_aside_per_field": summary_stats([e.extra["set_aside"] for e in evals]),
        "targets": check_targets(metrics),
        "argmax_decision": {
            "note": "labels = argmax of the calibrated probabilities instead of the "
            "validation-chosen P(abnormal) threshold",
            "abnormal_recall": argmax_metrics["abnormal_recall"],
            "fp_per_image": argmax_metrics["fp_per_image"],
            "fp_per_image_upper_bound": argmax_metrics["fp_per_image_upper_bound"],
            "matched_cells": argmax_metrics["matched_cells"],
            "targets": check_targets(argmax_metrics),
        },
    }


def crop_folder_files(folder: Path) -> list[tuple[Path, str]]:
    """(image, Bethesda code) under folder/<code>/; subfolders must be Bethesda codes."""
    if not folder.is_dir():
        raise InputError(f"--folder {folder} is not a folder")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
    unknown = [d.name for d in subdirs if d.name not in BETHESDA_CLASSES]
    if unknown:
        codes = ", ".join(BETHESDA_CLASSES)
        raise InputError(f"subfolder(s) {', '.join(unknown)} are not Bethesda codes ({codes})")
    files = [
        (f, d.name)
        for d in subdirs
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise InputError(f"no images found under {folder}/<class>/")
    return files


def evaluate_export(
    analyser: CellAnalyser, export: Export, split: str = "test", *, radius: float = 20.0
) -> dict[str, Any]:
    """`evaluate_pipeline` on one split of an export (its images and cell centres)."""
    table = export.points(split)
    names = sorted(table.images)
    if not names:
        raise InputError(f"export {export.label} has no {split} images to evaluate")
    head = {"export": export.label, "split": split, "images_evaluated": len(names)}
    return {**head, **evaluate_pipeline(analyser, table, names, radius=radius)}


def classify_crop_folder(
    analyser: CellAnalyser, folder: Path, batch_size: int = 128
) -> dict[str, Any]:
    """Stage 2 alone on folder/<code>/*.png, through `classify_crops` (crops resized to the
    model's crop size): a crop has no stage-1 score, so the classifier's own threshold decides."""
    files = crop_folder_files(folder)
    c = analyser.crop_px
    probs_list, labels = [], []
    for s in tqdm(range(0, len(files), batch_size), desc="classify", unit="batch"):
        crops = []
        for f, _ in files[s : s + batch_size]:
            img = read_image(f)
            if img.shape[:2] != (c, c):
                img = cv2.resize(img, (c, c), interpolation=cv2.INTER_AREA)
            crops.append(img)
        calls = analyser.classify_crops(np.stack(crops))
        probs_list.append(calls.probabilities)
        labels += calls.labels
    probs = np.concatenate(probs_list).astype(np.float64)
    point = analyser.operating_point
    return {
        "classifier": analyser.versions["classifier"],
        "folder": str(folder),
        "crops": len(files),
        "abnormal_threshold": point["stage2_unfused_threshold"],
        "temperature": point["temperature"],
        "tta_views": point["tta_views"],
        **classification_metrics([lab for _, lab in files], labels, abnormal_probability(probs)),
    }
