"""Small random-weight checkpoints with full metadata: a real, untrained two-stage pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_random_checkpoints(
    out: Path,
    *,
    small: bool = True,
    detector_meta: dict[str, Any],
    classifier_meta: dict[str, Any],
) -> tuple[Path, Path]:
    """A detector and a classifier checkpoint with random weights (seed 0) in `out`.

    `small`: narrow networks (fast tests); otherwise the default architectures (the cost of the
    real models). Each checkpoint's metadata is its `config` and `classes` followed by the given
    metadata (thresholds, temperature, ...). Returns (detector path, classifier path).
    """
    import torch

    from inference.checkpoints import save_checkpoint
    from inference.classifier import ClassifierConfig, build_classifier
    from inference.detector import DetectorConfig, build_detector
    from inference.types import BETHESDA_CLASSES

    torch.manual_seed(0)
    if small:
        dcfg = DetectorConfig(widths=(8, 8, 16, 16), neck=8)
        ccfg = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    else:
        dcfg, ccfg = DetectorConfig(), ClassifierConfig()
    detector, classifier = out / "detector.pt", out / "classifier.pt"
    classes = list(BETHESDA_CLASSES)
    save_checkpoint(
        detector,
        stage="detector",
        model=build_detector(dcfg),
        meta={"config": dcfg.to_dict(), "classes": classes, **detector_meta},
    )
    save_checkpoint(
        classifier,
        stage="classifier",
        model=build_classifier(ccfg),
        meta={"config": ccfg.to_dict(), "classes": classes, **classifier_meta},
    )
    return detector, classifier
