"""Shared fixtures for the inference tests: synthetic images and the real data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.checkpoints import write_random_checkpoints
from tests.inference.support import CRIC_DIR


@pytest.fixture(scope="session")
def cric_dir() -> Path:
    return CRIC_DIR


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Randomly initialised (small) detector and classifier checkpoints with full metadata."""
    return write_random_checkpoints(
        tmp_path_factory.mktemp("ckpt"),
        detector_meta={
            "thresholds": {"cell": 0.3, "abnormal": 0.1},
            "data": {"split": {"train": ["a.jpg"], "val": ["b.jpg"], "test": ["c.jpg"]}},
        },
        classifier_meta={"temperature": 1.5, "abnormal_threshold": 0.4},
    )
