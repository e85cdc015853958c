"""Checkpoint round-trip and clear errors for corrupt, truncated or mismatched files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.checkpoints import load_checkpoint, load_weights, plain, save_checkpoint
from inference.classifier import ClassifierConfig, build_classifier
from inference.detector import DetectorConfig, build_detector
from inference.errors import CheckpointError, InputError
from inference.pipeline import Pipeline
from inference.types import BETHESDA_CLASSES


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    cfg = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    model = build_classifier(cfg)
    path = tmp_path / "c.pt"
    version = save_checkpoint(
        path,
        stage="classifier",
        model=model,
        meta={"config": cfg.to_dict(), "classes": list(BETHESDA_CLASSES), "temperature": 1.3},
    )
    ckpt = load_checkpoint(path, stage="classifier")
    assert ckpt.version == version and version.startswith("classifier-")
    assert ckpt.meta["temperature"] == 1.3 and "created_at" in ckpt.meta
    again = load_weights(build_classifier(ClassifierConfig.from_dict(ckpt.meta["config"])), ckpt)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # the file loads with weights_only=True (plain types only)
    raw = torch.load(path, weights_only=True)
    assert raw["stage"] == "classifier"


def test_plain_rejects_objects() -> None:
    assert plain({"a": (1, 2), "v": torch.__version__}) == {
        "a": [1, 2],
        "v": str(torch.__version__),
    }
    with pytest.raises(TypeError):
        plain({"bad": object()})


def test_missing_corrupt_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt", stage="detector")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(junk, stage="detector")
    good = tmp_path / "good.pt"
    save_checkpoint(
        good,
        stage="detector",
        model=build_detector(DetectorConfig(widths=(8, 8, 16, 16), neck=8)),
        meta={"config": {}},
    )
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_checkpoint(cut, stage="detector")
    assert "\n" not in str(err.value)
    assert isinstance(err.value, InputError)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a PapReview checkpoint"):
        load_checkpoint(other, stage="detector")


def test_wrong_stage_and_class_mismatch(tiny_checkpoints: tuple[Path, Path]) -> None:
    det, cls = tiny_checkpoints
    with pytest.raises(CheckpointError, match="is a detector checkpoint, expected a classifier"):
        load_checkpoint(det, stage="classifier")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(cls, stage="classifier", classes=("NILM", "LSIL", "HSIL", "SCC"))
    with pytest.raises(CheckpointError, match="expected a detector"):
        Pipeline.from_checkpoints(cls, det, device="cpu")


def test_architecture_mismatch(tmp_path: Path, tiny_checkpoints: tuple[Path, Path]) -> None:
    _, cls = tiny_checkpoints
    ckpt = load_checkpoint(cls, stage="classifier")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(build_classifier(ClassifierConfig()), ckpt)
    # metadata that lies about the architecture is caught when the pipeline loads it
    bad = tmp_path / "bad.pt"
    meta = dict(ckpt.meta, config=ClassifierConfig().to_dict())
    meta.pop("version")
    save_checkpoint(
        bad,
        stage="classifier",
        model=build_classifier(ClassifierConfig.from_dict(ckpt.meta["config"])),
        meta=meta,
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        Pipeline.from_checkpoints(tiny_checkpoints[0], bad, device="cpu")
