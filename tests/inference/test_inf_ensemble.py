"""Stage 2 ensembles (issue 17, item 6): classifiers trained apart on one split become one
checkpoint whose logits are the mean of its members', calibrated on the validation crops and run
by the pipeline like any classifier; members that cannot be averaged are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.__main__ import main as inference_main
from inference.checkpoints import load_checkpoint, load_weights, save_checkpoint
from inference.classifier import ClassifierConfig, ClassifierEnsemble, build_classifier
from inference.pipeline import Pipeline
from inference.synthetic import synthetic_field
from testkit.checkpoints import write_random_checkpoints
from tests.inference.test_inf_negatives import write_tiny_cric


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(data dir, detector, two classifiers fine-tuned from one start with other seeds)."""
    root = tmp_path_factory.mktemp("ens")
    data = write_tiny_cric(root / "data")
    det, base = write_random_checkpoints(
        root / "start",
        detector_meta={"version": "det-x", "thresholds": {"cell": 0.3, "abnormal": 0.3}},
        classifier_meta={"version": "cls-x", "temperature": 1.0, "abnormal_threshold": 0.5},
    )
    out = []
    for seed in (1, 2):
        argv = ["train-classifier", "--init-from", str(base), "--epochs", "1", "--seed", str(seed)]
        argv += [
            "--samples-per-epoch",
            "64",
            "--data-dir",
            str(data),
            "--out",
            str(root / f"s{seed}"),
        ]
        assert inference_main(argv) == 0
        out.append(root / f"s{seed}" / "classifier.pt")
    return data, det, out


def _logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    ckpt = load_checkpoint(path, stage="classifier")
    model = load_weights(build_classifier(ckpt.meta["config"]), ckpt).eval()
    with torch.inference_mode():
        return model(x)


def test_an_ensemble_averages_its_members_and_runs_in_the_pipeline(members, tmp_path: Path):
    data, det, paths = members
    out = tmp_path / "ensemble.pt"
    argv = ["ensemble-classifiers", *map(str, paths), "--out", str(out), "--data-dir", str(data)]
    assert inference_main(argv) == 0
    ckpt = load_checkpoint(out, stage="classifier")
    assert ckpt.meta["arch"] == "ClassifierEnsemble" and ckpt.meta["config"]["members"] == 2
    versions = [load_checkpoint(p, stage="classifier").version for p in paths]
    assert [m["version"] for m in ckpt.meta["ensemble_of"]] == versions
    assert ckpt.meta["calibration"]["split"] == "val" and ckpt.meta["temperature"] > 0
    assert "fusion" not in ckpt.meta and ckpt.version not in versions

    x = torch.randn(5, 3, 32, 32)
    mean = (_logits(paths[0], x) + _logits(paths[1], x)) / 2
    assert torch.allclose(_logits(out, x), mean, atol=1e-6)

    image = synthetic_field(400, 340, seed=4)
    field = tmp_path / "field.png"
    Image.fromarray(image).save(field)
    pipe = Pipeline.from_checkpoints(det, out, device="cpu")
    assert isinstance(pipe.classifier, ClassifierEnsemble)
    result = pipe.analyse(field)
    assert result.model_versions["classifier"] == ckpt.version
    assert all(np.isclose(sum(c.probabilities.values()), 1.0) for c in result.cells)


def test_members_that_cannot_be_averaged_are_refused(members, tmp_path: Path, capsys) -> None:
    data, _, paths = members
    out = tmp_path / "e.pt"

    def refused(*args: str) -> str:
        assert inference_main(["ensemble-classifiers", *args, "--data-dir", str(data)]) != 0
        return capsys.readouterr().err

    assert "at least two" in refused(str(paths[0]), "--out", str(out))
    other = tmp_path / "wide.pt"
    ckpt = load_checkpoint(paths[1], stage="classifier")
    wide = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 32))
    save_checkpoint(
        other,
        stage="classifier",
        model=build_classifier(wide),
        meta={**ckpt.meta, "config": wide.to_dict(), "version": None},
    )
    assert "another architecture" in refused(str(paths[0]), str(other), "--out", str(out))
    moved = tmp_path / "moved.pt"
    data_meta = {**ckpt.meta["data"], "split": {"train": [], "val": ["x.png"], "test": []}}
    model = load_weights(build_classifier(ckpt.meta["config"]), ckpt)
    save_checkpoint(
        moved,
        stage="classifier",
        model=model,
        meta={**ckpt.meta, "data": data_meta, "version": None},
    )
    assert "another split" in refused(str(paths[0]), str(moved), "--out", str(out))
    assert not out.exists()
