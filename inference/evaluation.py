"""Evaluation algorithms behind the `evaluate` and `evaluate-classifier` commands and the model
registry's comparison of checkpoints on an export (`inference.data.export.evaluate_checkpoint`).

* `split_filter` keeps the images a pair of checkpoints was not trained or tuned on.
* `evaluate_pipeline` runs the whole pipeline on annotated fields: detection, abnormal recall and
  false positives per image, classification of matched cells, under the pipeline's decision rule
  and under plain argmax, checked against the project targets.
* `classify_crop_folder` scores stage 2 alone on an ImageFolder of cell crops.
* `classifier_scores` / `detector_scores` score one checkpoint on an export's split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .calibration import probability_metrics
from .checkpoints import Checkpoint, load_checkpoint, load_weights
from .classifier import (
    ClassifierConfig,
    abnormal_probability,
    argmax_labels,
    build_classifier,
    normalise_crops,
)
from .data.cric import AnnotatedImage
from .detector import DetectorConfig, build_detector
from .errors import InputError
from .metrics import ImageEval, check_targets, detection_metrics, match_points
from .slides import IMAGE_SUFFIXES, read_image
from .train import (
    CellPatches,
    FieldSample,
    candidate_stats,
    centre_crops,
    classifier_logits,
    detector_predict_fields,
)
from .types import BETHESDA_CLASSES, is_abnormal

DETECTOR_OUTCOMES: tuple[str, ...] = ("missed", "found as normal", "found as abnormal")
DETECTOR_TRUTH: tuple[str, ...] = ("normal", "abnormal")


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


def evaluate_pipeline(
    pipeline: Any,
    images_dir: Path,
    table: dict[str, AnnotatedImage],
    names: list[str],
    *,
    radius: float,
) -> dict[str, Any]:
    """Run the pipeline on the named annotated fields; timings, operating point, metrics and
    targets, and the same under the plain argmax rule."""
    evals = []
    seconds = []
    for name in tqdm(names, desc="evaluate", unit="img"):
        res = pipeline.run(images_dir / name)
        seconds.append(res.timings.get("total", 0.0))
        ann = table[name]
        probs = np.array(
            [[c.probabilities[k] for k in BETHESDA_CLASSES] for c in res.cells], np.float64
        ).reshape(-1, len(BETHESDA_CLASSES))
        evals.append(
            ImageEval(
                name=name,
                gt_xy=np.array([(c.x, c.y) for c in ann.cells], np.float64).reshape(-1, 2),
                gt_labels=[c.label for c in ann.cells],
                pred_xy=np.array([c.box.centre for c in res.cells], np.float64).reshape(-1, 2),
                pred_labels=[c.label for c in res.cells],
                pred_p_abnormal=abnormal_probability(probs) if len(probs) else np.zeros(0),
                extra={"probs": probs},
            )
        )
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
        "seconds_per_image": float(np.mean(seconds)),
        "operating_point": {
            "stage1_cell_threshold": pipeline.cell_threshold,
            "stage1_abnormal_threshold": pipeline.abnormal_threshold,
            "stage2_abnormal_threshold": pipeline.decision_threshold,
            "temperature": pipeline.temperature,
        },
        "metrics": metrics,
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


def _classifier(ckpt: Checkpoint) -> tuple[ClassifierConfig, torch.nn.Module]:
    config = ClassifierConfig.from_dict(ckpt.meta["config"])
    return config, load_weights(build_classifier(config), ckpt).eval()


def classify_crop_folder(
    folder: Path, checkpoint: Path, device: torch.device, batch_size: int = 128
) -> dict[str, Any]:
    """Stage 2 alone on folder/<code>/*.png: labels decided at the checkpoint's temperature and
    P(abnormal) threshold, as in the pipeline (crops resized to the model's crop size)."""
    files = crop_folder_files(folder)
    ckpt = load_checkpoint(checkpoint, stage="classifier")
    config, model = _classifier(ckpt)
    model.to(device)
    temperature = float(ckpt.meta.get("temperature", 1.0))
    threshold = float(ckpt.meta.get("abnormal_threshold", 0.5))
    c = config.crop_px
    probs_list = []
    for s in tqdm(range(0, len(files), batch_size), desc="classify", unit="batch"):
        crops = []
        for f, _ in files[s : s + batch_size]:
            img = read_image(f)
            if img.shape[:2] != (c, c):
                img = cv2.resize(img, (c, c), interpolation=cv2.INTER_AREA)
            crops.append(img)
        x = normalise_crops(torch.from_numpy(np.stack(crops)).to(device), config.mean, config.std)
        with torch.inference_mode():
            probs_list.append(torch.softmax(model(x).float() / temperature, 1).cpu().numpy())
    probs = np.concatenate(probs_list).astype(np.float64)
    return {
        "classifier": ckpt.version,
        "folder": str(folder),
        "crops": len(files),
        "abnormal_threshold": threshold,
        "temperature": temperature,
        **probability_metrics([lab for _, lab in files], probs, threshold),
    }


def classifier_scores(ckpt: Checkpoint, patches: CellPatches) -> dict[str, Any]:
    """Six-class / four-class / abnormal-vs-NILM reports of a classifier checkpoint on centre
    crops of `patches`, labels decided at its temperature and P(abnormal) threshold."""
    config, model = _classifier(ckpt)
    logits = classifier_logits(model, centre_crops(patches.images, config.crop_px), config)
    temperature = float(ckpt.meta.get("temperature", 1.0))
    probs = torch.softmax(logits / temperature, 1).numpy().astype(np.float64)
    threshold = float(ckpt.meta.get("abnormal_threshold", 0.5))
    truth = [BETHESDA_CLASSES[i] for i in patches.labels]
    return {"crops": len(truth), **probability_metrics(truth, probs, threshold)}


def detector_scores(
    ckpt: Checkpoint, fields: list[FieldSample], *, radius_px: float = 20.0
) -> dict[str, Any]:
    """Recall of all and of abnormal cells and candidates per image of a detector checkpoint
    at its thresholds, and a truth (normal / abnormal cell) x outcome (missed / found as normal
    / found as abnormal) confusion matrix."""
    config = DetectorConfig.from_dict(ckpt.meta["config"])
    detector = load_weights(build_detector(config), ckpt).eval()
    thresholds = {k: float(v) for k, v in ckpt.meta.get("thresholds", {}).items()}
    t_cell, t_abn = thresholds.get("cell", 0.3), thresholds.get("abnormal", 0.1)
    peaks, _ = detector_predict_fields(detector, fields, config, threshold=min(t_cell, t_abn))
    stats = candidate_stats(
        peaks, fields, cell_threshold=t_cell, abnormal_threshold=t_abn, radius_px=radius_px
    )
    cm = np.zeros((len(DETECTOR_TRUTH), len(DETECTOR_OUTCOMES)), np.int64)
    for pk, f in zip(peaks, fields, strict=True):
        kept = [p for p in pk if p.cell_score >= t_cell or p.abnormal_score >= t_abn]
        xy = np.array([(p.x, p.y) for p in kept]).reshape(-1, 2)
        found = {g: kept[p] for p, g in match_points(xy, f.points, radius_px * f.scale)}
        for g, code in enumerate(f.labels):
            row = int(is_abnormal(code))
            if g not in found:
                cm[row, 0] += 1
            else:
                cm[row, 2 if found[g].abnormal_score >= t_abn else 1] += 1
    return {
        "images": len(fields),
        "cells": int(cm.sum()),
        "thresholds": {"cell": t_cell, "abnormal": t_abn},
        **stats,
        "confusion": {
            "rows": list(DETECTOR_TRUTH),
            "columns": list(DETECTOR_OUTCOMES),
            "matrix": cm.tolist(),
        },
    }
