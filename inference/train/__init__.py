"""Training of both stages from scratch (CPU-friendly), on CRIC, an export, or in-memory samples.

Laid out like torchvision's detection references:

    samples.py     FieldSample (stage 1) and CellPatches (stage 2), read from CRIC or cut out
    engine.py      fit(): the epoch loop both stages share (optimiser, schedule, weight
                   average, validation, best weights, time budget, one logged row per epoch)
    detector.py    stage 1: random field crops, heatmap loss, validation loss, thresholds
    classifier.py  stage 2: balanced augmented patches, weighted cross-entropy, validation
                   AUC + balanced accuracy, then temperature and threshold (calibration.py)

`train_detector` and `train_classifier` take lists of samples so tests can train on synthetic
fields. Model selection, temperature and thresholds use the validation split only.
"""

from ..calibration import choose_abnormal_threshold, expected_calibration_error
from .classifier import ClassifierTrainResult, classifier_logits, train_classifier
from .detector import (
    DetectorTrainResult,
    candidate_stats,
    choose_detector_thresholds,
    detector_predict_fields,
    train_detector,
)
from .engine import LoopOptions, WeightAverage, cpu_supports_bf16, fit, seed_everything
from .samples import (
    CellPatches,
    FieldSample,
    centre_crops,
    class_counts,
    cric_patches,
    extract_patches,
    load_cric_fields,
    pad_to_multiple,
    training_patch_px,
)

__all__ = [
    "CellPatches",
    "ClassifierTrainResult",
    "DetectorTrainResult",
    "FieldSample",
    "LoopOptions",
    "WeightAverage",
    "candidate_stats",
    "centre_crops",
    "choose_abnormal_threshold",
    "choose_detector_thresholds",
    "class_counts",
    "classifier_logits",
    "cpu_supports_bf16",
    "cric_patches",
    "detector_predict_fields",
    "expected_calibration_error",
    "extract_patches",
    "fit",
    "load_cric_fields",
    "pad_to_multiple",
    "seed_everything",
    "train_classifier",
    "train_detector",
    "training_patch_px",
]
