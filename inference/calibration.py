"""Calibration of the classifier's outputs on validation data: temperature, the P(abnormal)
decision threshold, and the late fusion of the two stages fitted through the pipeline.

* `calibrate_classifier(logits, labels)`: after training stage 2, the temperature that
  minimises the validation NLL, the largest P(abnormal) threshold that keeps the sensitivity
  floor, and the validation reports at both (used by `inference.train`).
* `calibrate_pipeline_on(pipeline, dataset, names)`: runs the pipeline (without fusion) on
  the named annotated images, matches its cells to the annotated ones, fits the `Fusion` of
  stage 1 and stage 2 abnormality and its threshold, and says whether fusion beats the
  classifier alone (AUC); too few matched cells, or a single class, raise `TooFewCellsError`.
  `calibrate_pipeline(pipeline, dataset)` does it on the CRIC validation images both models
  were tuned on (the `calibrate` command); the retrain job on an export's validation split
  (`Export.points("val")`). `calibrated_meta` turns that into the classifier checkpoint's
  metadata and version (`fusion`, or why not: `fusion_skipped`), `save_calibrated_classifier`
  writes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoints import load_checkpoint, load_weights, plain, save_checkpoint
from .classifier import (
    ClassifierConfig,
    abnormal_probability,
    argmax_labels,
    bethesda_truth,
    build_classifier,
    decide_labels,
    fit_temperature,
    fold_not_a_cell,
)
from .data.cric import AnnotatedImage, CricDataset
from .errors import InputError
from .fusion import Fusion, fit_fusion
from .metrics import ImageEval, classification_metrics, match_points, roc_auc
from .reviewer_load import threshold_for_budget
from .types import BETHESDA_CLASSES, is_abnormal


def choose_abnormal_threshold(
    p_abnormal: np.ndarray, is_abn: np.ndarray, min_sensitivity: float = 0.95
) -> float:
    """The largest threshold on P(abnormal) whose validation sensitivity is >= the floor."""
    if is_abn.sum() == 0:
        return 0.5
    scores = np.sort(p_abnormal[is_abn])
    k = math.floor((1.0 - min_sensitivity) * len(scores))
    return float(min(0.5, scores[k]))  # at most 0.5: never less sensitive than argmax


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    conf = probs.max(1)
    pred = probs.argmax(1)
    ece = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(ece)


def probability_metrics(
    truth: list[str], probs6: np.ndarray, threshold: float | None = None
) -> dict[str, Any]:
    """Six-class, four-class and abnormal-vs-NILM reports of six-class probabilities, the labels
    decided at this P(abnormal) threshold (None: argmax), the AUC on P(abnormal)."""
    pred = argmax_labels(probs6) if threshold is None else decide_labels(probs6, threshold)
    return classification_metrics(truth, pred, abnormal_probability(probs6))


def calibrate_classifier(
    logits: torch.Tensor, labels: np.ndarray, min_sensitivity: float = 0.95
) -> tuple[float, float, dict[str, Any]]:
    """(temperature, P(abnormal) threshold, validation metrics) from validation logits and
    class indices: the reports at the threshold, the calibration figures, the argmax reports."""
    yv = torch.from_numpy(labels)
    nll_before = float(F.cross_entropy(logits, yv))
    temperature = fit_temperature(logits, yv)
    nll_after = float(F.cross_entropy(logits / temperature, yv))
    # a NOT_A_CELL output is negative for a lesion: thresholds and reports read it as NILM
    probs, _ = fold_not_a_cell(torch.softmax(logits / temperature, 1).numpy())
    truth = bethesda_truth(labels)
    is_abn = np.array([is_abnormal(t) for t in truth], bool)
    threshold = choose_abnormal_threshold(abnormal_probability(probs), is_abn, min_sensitivity)
    val_metrics = probability_metrics(truth, probs, threshold)
    val_metrics["calibration"] = {
        "temperature": temperature,
        "nll_before": nll_before,
        "nll_after": nll_after,
        "ece_after": expected_calibration_error(
            probs, np.array([BETHESDA_CLASSES.index(t) for t in truth])
        ),
    }
    val_metrics["abnormal_threshold"] = threshold
    val_metrics["argmax"] = probability_metrics(truth, probs)
    return temperature, threshold, val_metrics


# ------------------------------------------------------------------------------------------
# Late fusion, fitted through the pipeline
# ------------------------------------------------------------------------------------------


@dataclass
class MatchedCells:
    """The pipeline's cells matched to annotated validation cells."""

    p2: list[float] = field(default_factory=list)  # stage 2 P(abnormal)
    s1: list[float] = field(default_factory=list)  # stage 1 detection score
    truth: list[str] = field(default_factory=list)  # annotated label
    probs6: list[list[float]] = field(default_factory=list)  # stage 2 probabilities
    # Every call of every field (matched or not), for the false-alarm budget: `extra` holds
    # each call's stage 2 probabilities ("probs") and stage 1 score ("s1").
    fields: list[ImageEval] = field(default_factory=list)


@dataclass
class PipelineCalibration:
    fusion: Fusion
    report: dict[str, Any]
    used: bool  # fusion beats (or ties) the classifier alone on validation AUC


def validation_names(pipeline: Any, dataset: CricDataset) -> list[str]:
    """The validation images both checkpoints name (they must share their split)."""
    split = pipeline.classifier_meta.get("data", {}).get("split", {})
    det_split = pipeline.detector_meta.get("data", {}).get("split", {})
    if split.get("test") != det_split.get("test") or split.get("val") != det_split.get("val"):
        raise InputError("the detector and classifier were trained on different splits")
    names = [n for n in split.get("val", []) if n in dataset.images]
    if not names:
        raise InputError("the classifier checkpoint names no validation images found in the data")
    return names


MIN_FUSION_CELLS = 10  # matched validation cells needed to fit the fusion


class TooFewCellsError(InputError):
    """The validation cells cannot fit the fusion: too few matched, or a single class."""


class AnnotatedImages(Protocol):
    """Annotated images and their files (`CricDataset`; an export split's `CellsTable`)."""

    @property
    def images(self) -> dict[str, AnnotatedImage]: ...

    def image_path(self, name: str) -> Path: ...


class JoinedImages:
    """Several annotated sets read as one (an export's validation split and the base data's);
    a name in two sets is taken from the first."""

    def __init__(self, parts: list[AnnotatedImages]) -> None:
        self._part_of: dict[str, AnnotatedImages] = {}
        for part in parts:
            for name in part.images:
                self._part_of.setdefault(name, part)
        self.images = {name: part.images[name] for name, part in self._part_of.items()}

    def image_path(self, name: str) -> Path:
        return self._part_of[name].image_path(name)


def base_validation_images(data_dir: Path | None = None, split_seed: int = 2021) -> CricDataset:
    """The base data's (CRIC) validation images only, as `train-* --merge-base` splits them."""
    from .data.cric import load_split

    dataset, split, _ = load_split(data_dir, split_seed)
    val = set(split["val"])
    return CricDataset(dataset.root, {n: im for n, im in dataset.images.items() if n in val})


def match_cells(
    pipeline: Any, dataset: AnnotatedImages, names: list[str], radius: float
) -> MatchedCells:
    out = MatchedCells()
    for name in tqdm(names, desc="calibrate (val)", unit="img"):
        res = pipeline.analyse(dataset.image_path(name))
        calls = res.candidates  # the fusion applies to every candidate, set aside or not
        cells = dataset.images[name].cells
        gt = np.array([(c.x, c.y) for c in cells]).reshape(-1, 2)
        xy = np.array([c.box.centre for c in calls]).reshape(-1, 2)
        probs = np.array(
            [[c.probabilities[k] for k in BETHESDA_CLASSES] for c in calls], np.float64
        ).reshape(-1, len(BETHESDA_CLASSES))
        s1 = np.array([c.detection_score for c in calls], np.float64)
        for pi, gi in match_points(xy, gt, radius):
            out.p2.append(1.0 - float(probs[pi, 0]))
            out.s1.append(float(s1[pi]))
            out.truth.append(cells[gi].label)
            out.probs6.append(probs[pi].tolist())
        out.fields.append(
            ImageEval(
                name,
                gt.astype(np.float64),
                [c.label for c in cells],
                xy.astype(np.float64),
                [c.label for c in calls],
                1.0 - probs[:, 0],
                extra={"probs": probs, "s1": s1},
            )
        )
    return out


def calibrate_pipeline(
    pipeline: Any, dataset: CricDataset, *, radius: float = 20.0, far_budget: float | None = None
) -> PipelineCalibration:
    """Fit the fusion on the CRIC validation images of a pipeline built without fusion."""
    names = validation_names(pipeline, dataset)
    return calibrate_pipeline_on(pipeline, dataset, names, radius, far_budget=far_budget)


def calibrate_pipeline_on(
    pipeline: Any,
    dataset: AnnotatedImages,
    names: list[str],
    radius: float = 20.0,
    *,
    min_cells: int = MIN_FUSION_CELLS,
    far_budget: float | None = None,
) -> PipelineCalibration:
    """Fit the fusion on the named validation images of a pipeline built without fusion. Its
    P(abnormal) threshold: with `far_budget`, the lowest one giving at most that many abnormal
    calls per field far from every marked cell (`reviewer_load.threshold_for_budget`), else the
    highest one keeping sensitivity >= 0.95 on the matched cells."""
    cells = match_cells(pipeline, dataset, names, radius)
    p2, s1 = np.array(cells.p2), np.array(cells.s1)
    y = np.array([is_abnormal(t) for t in cells.truth])
    if len(y) < min_cells:
        raise TooFewCellsError(
            f"{len(y)} validation cells matched on {len(names)} images (at least {min_cells} "
            "needed): cannot calibrate"
        )
    if y.all() or not y.any():
        raise TooFewCellsError("validation cells hold a single class: cannot calibrate")
    a, b, c = fit_fusion(p2, s1, y)
    base = Fusion(a, b, c, pipeline.versions["detector"], 0.5)
    fused = base.apply(np.array(cells.probs6), s1)
    p_fused = abnormal_probability(fused)
    threshold = choose_abnormal_threshold(p_fused, y, 0.95)
    budget = None
    if far_budget is not None:
        fused_fields = [
            dataclasses.replace(
                im,
                pred_p_abnormal=abnormal_probability(base.apply(im.extra["probs"], im.extra["s1"]))
                if len(im.pred_xy)
                else np.zeros(0),
            )
            for im in cells.fields
        ]
        budget = threshold_for_budget(fused_fields, far_budget)
        budget["sensitivity_rule_threshold"] = threshold
        threshold = budget["threshold"]
    fusion = Fusion(a, b, c, base.detector_version, threshold, far_budget=far_budget)
    auc_cls, auc_det, auc_fused = roc_auc(y, p2), roc_auc(y, s1), roc_auc(y, p_fused)
    val = probability_metrics(cells.truth, fused, threshold)
    report = {
        "val_images": len(names),
        "val_matched_cells": len(cells.truth),
        "tta_views": pipeline.operating_point["tta_views"],
        "auc_classifier": auc_cls,
        "auc_detector": auc_det,
        "auc_fused": auc_fused,
        "fusion": fusion.to_dict(),
        "threshold_rule": budget or "sensitivity >= 0.95 on matched validation cells",
        "val_at_threshold": {
            "abnormal_vs_nilm": val["abnormal_vs_nilm"],
            "four_class_accuracy": val["four_class"]["accuracy"],
            "six_class_accuracy": val["six_class"]["accuracy"],
        },
    }
    used = auc_fused is not None and auc_cls is not None and auc_fused >= auc_cls
    return PipelineCalibration(fusion, report, used)


def calibrated_meta(
    meta: dict[str, Any],
    calibration: PipelineCalibration | None,
    *,
    tta_views: int,
    skipped: str | None = None,
) -> dict[str, Any]:
    """The classifier checkpoint's metadata with the test-time views and (when it helps) the
    fusion, else why not (`fusion_skipped`: `skipped`, or the AUCs when fusion does not help;
    `calibration` None: not fitted); its version names what changes the outputs: weights,
    test-time views, fusion."""
    meta = dict(meta)
    meta["tta_views"] = tta_views
    base_version = str(meta.get("base_version", meta.get("version")))
    meta["base_version"] = base_version
    version = base_version + (f"-tta{tta_views}" if tta_views > 1 else "")
    if calibration is not None and calibration.used:
        fusion = calibration.fusion
        meta["fusion"] = {**fusion.to_dict(), "val": plain(calibration.report)}
        meta.pop("fusion_skipped", None)
        version += f"-fused-{fusion.detector_version.rsplit('-', 1)[-1]}"
        if fusion.far_budget is not None:  # the threshold rule changes the calls too
            version += f"-fa{fusion.far_budget:g}"
    else:
        meta.pop("fusion", None)
        if calibration is not None and not skipped:
            r = calibration.report
            skipped = (
                "fusion does not beat the classifier alone on validation AUC "
                f"({r['auc_fused']} vs {r['auc_classifier']})"
            )
        meta["fusion_skipped"] = skipped or "not calibrated"
    meta["version"] = version
    return meta


def save_calibrated_classifier(
    checkpoint: Path,
    calibration: PipelineCalibration | None,
    *,
    tta_views: int,
    out: Path | None = None,
    skipped: str | None = None,
) -> str:
    """Write the classifier checkpoint with `calibrated_meta` (to `out`, else in place);
    returns its version."""
    ckpt = load_checkpoint(Path(checkpoint), stage="classifier")
    meta = calibrated_meta(ckpt.meta, calibration, tta_views=tta_views, skipped=skipped)
    model = load_weights(build_classifier(ClassifierConfig.from_dict(meta["config"])), ckpt)
    return save_checkpoint(Path(out or checkpoint), stage="classifier", model=model, meta=meta)
