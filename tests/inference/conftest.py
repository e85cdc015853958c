"""Shared fixtures for the inference tests: synthetic images and the real data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.support import CRIC_DIR


@pytest.fixture(scope="session")
def cric_dir() -> Path:
    return CRIC_DIR


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Randomly initialised (small) detector and classifier checkpoints with full metadata."""
    import torch

    from inference.checkpoints import save_checkpoint
    from inference.classifier import ClassifierConfig, build_classifier
    from inference.detector import DetectorConfig, build_detector
    from inference.types import BETHESDA_CLASSES

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt")
    dcfg = DetectorConfig(widths=(8, 8, 16, 16), neck=8)
    ccfg = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    det, cls = out / "detector.pt", out / "classifier.pt"
    save_checkpoint(
        det,
        stage="detector",
        model=build_detector(dcfg),
        meta={
            "config": dcfg.to_dict(),
            "classes": list(BETHESDA_CLASSES),
            "thresholds": {"cell": 0.3, "abnormal": 0.1},
            "data": {"split": {"train": ["a.jpg"], "val": ["b.jpg"], "test": ["c.jpg"]}},
        },
    )
    save_checkpoint(
        cls,
        stage="classifier",
        model=build_classifier(ccfg),
        meta={
            "config": ccfg.to_dict(),
            "classes": list(BETHESDA_CLASSES),
            "temperature": 1.5,
            "abnormal_threshold": 0.4,
        },
    )
    return det, cls
