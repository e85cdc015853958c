"""Self-supervised pretraining of stage 2 (inference/train/pretrain.py): the loss rewards views of
one cell that agree, pretraining moves the network's body, and its checkpoint starts supervised
training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.checkpoints import load_checkpoint, load_weights, save_checkpoint
from inference.classifier import ClassifierConfig, build_classifier
from inference.train import CellPatches, train_classifier
from inference.train.pretrain import nt_xent, pretrain_classifier, pretrained_checkpoint
from inference.types import BETHESDA_CLASSES
from testkit.images import field_image

CONFIG = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))


def _patches(n: int, side: int = 48, seed: int = 0) -> np.ndarray:
    field = field_image(640, 480, seed=seed)
    rng = np.random.default_rng(seed)
    xs, ys = rng.integers(0, 640 - side, n), rng.integers(0, 480 - side, n)
    return np.stack([field[y : y + side, x : x + side] for x, y in zip(xs, ys, strict=True)])


def test_nt_xent_is_low_when_the_views_of_each_cell_agree() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(16, 8)
    agree = nt_xent(z1, z1 + 0.01 * torch.randn(16, 8), temperature=0.2)
    shuffled = nt_xent(z1, z1[torch.randperm(16)], temperature=0.2)
    chance = float(torch.log(torch.tensor(31.0)))  # 2N - 1 = 31 candidates, none preferred
    assert agree < 1.0 < chance < shuffled


def test_pretraining_moves_the_body_and_its_checkpoint_starts_training(tmp_path) -> None:
    patches = _patches(40)
    fresh = build_classifier(CONFIG)
    torch.manual_seed(0)
    result = pretrain_classifier(
        patches, config=CONFIG, epochs=2, samples_per_epoch=32, batch_size=16, seed=0
    )
    assert len(result.history) == 2 and all(np.isfinite(r["train_loss"]) for r in result.history)
    body = {k: v for k, v in result.model.state_dict().items() if not k.startswith("fc.")}
    assert any(
        not torch.equal(v, fresh.state_dict()[k]) for k, v in body.items() if v.is_floating_point()
    )

    made = pretrained_checkpoint(result, {"patches": len(patches)})
    save_checkpoint(tmp_path / "ssl.pt", stage="classifier", model=result.model, meta=made.meta)
    ckpt = load_checkpoint(tmp_path / "ssl.pt", stage="classifier")  # as --init-from reads it
    assert ckpt.meta["pretraining"]["patches"] == 40
    started = load_weights(build_classifier(ckpt.meta["config"]), ckpt)
    stem = "stem.0.0.weight"
    assert torch.equal(started.state_dict()[stem], result.model.state_dict()[stem])

    labels = np.arange(len(patches)) % len(BETHESDA_CLASSES)
    cells = CellPatches(
        patches, labels.astype(np.int64), [f"f{i % 4}" for i in labels], ["a" * 64] * 40
    )
    torch.manual_seed(0)  # the random start train_classifier (seed 0) would otherwise take
    random_start = build_classifier(CONFIG).state_dict()[stem]
    trained = train_classifier(
        cells,
        CellPatches.empty(48),
        config=CONFIG,
        epochs=1,
        samples_per_epoch=32,
        lr=1e-4,
        init_from=ckpt,
    )
    after = trained.model.state_dict()[stem]
    pretrained = result.model.state_dict()[stem]
    assert len(trained.history) == 1
    assert (after - pretrained).norm() < 0.1 * (after - random_start).norm()


def test_pretraining_refuses_too_few_or_too_small_patches() -> None:
    with pytest.raises(ValueError, match="2 or more patches"):
        pretrain_classifier(_patches(1), config=CONFIG, epochs=1)
    with pytest.raises(ValueError, match="at least 32 px"):
        pretrain_classifier(_patches(8, side=24), config=CONFIG, epochs=1)
