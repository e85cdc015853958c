"""Self-supervised pretraining of stage 2 on unlabelled cells (issue 17, item 6): SimCLR.

Most cells of both collections carry no label (every candidate of the LBC fields, the unmarked
cells of CRIC's). Two augmented views of each patch (the training augmentation: rotation, scale,
shift off centre, stain and colour jitter, grey, blur) go through the stage-2 network's body and
a small projection head; the loss (NT-Xent) pulls the two views of one cell together and pushes
the other cells of the batch away. The body's weights then start supervised training
(`pretrained_checkpoint` -> `train_classifier(init_from=...)`); the head is dropped and the
classification layer starts at random. `benchmarks/ssl_pretrain.py` measures whether it pays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import Checkpoint
from ..classifier import (
    CellClassifier,
    ClassifierConfig,
    build_classifier,
    normalise_crops,
    stage2_classes,
)
from .classifier import _augment_crop
from .engine import Log, LoopOptions, Stage, autocast, fit, log_line, seed_everything


class _Contrastive(nn.Module):
    """The stage-2 network's body and a projection head (what the loss sees)."""

    def __init__(self, body: CellClassifier, dim: int = 64) -> None:
        super().__init__()
        self.body = body
        width = body.fc.in_features
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.features(x))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's partner is the right answer among the batch's 2N - 1 others."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -1e9)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


@dataclass
class ContrastiveStage(Stage):
    """Batches of unlabelled patches, two views each; no validation (the last weights kept)."""

    name: ClassVar[str] = "pretrain"

    patches: np.ndarray  # N x P x P x 3 uint8, P >= crop_px
    config: ClassifierConfig
    rng: np.random.Generator
    steps_per_epoch: int
    batch_size: int
    temperature: float
    jitter_px: float
    bf16: bool

    def batches(self) -> list[np.ndarray]:
        n = self.steps_per_epoch * self.batch_size
        idx = self.rng.choice(len(self.patches), size=n, replace=n > len(self.patches))
        bs = self.batch_size
        return [idx[s * bs : (s + 1) * bs] for s in range(self.steps_per_epoch)]

    def _views(self, batch: np.ndarray) -> torch.Tensor:
        crop = self.config.crop_px
        crops = np.stack(
            [_augment_crop(self.patches[i], crop, self.rng, self.jitter_px) for i in batch]
        )
        return normalise_crops(torch.from_numpy(crops), self.config.mean, self.config.std)

    def loss(self, model: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
        x = torch.cat([self._views(batch), self._views(batch)])
        with autocast(self.bf16):
            z = model(x)
        return nt_xent(z[: len(batch)], z[len(batch) :], self.temperature)

    def validate(self, model: torch.nn.Module) -> tuple[dict[str, float], float] | None:
        return None


@dataclass
class PretrainResult:
    model: CellClassifier  # the body pretrained, its classification layer untouched (random)
    history: list[dict[str, float]]


def pretrain_classifier(
    patches: np.ndarray,
    *,
    config: ClassifierConfig | None = None,
    epochs: int = 10,
    samples_per_epoch: int = 4096,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.2,
    jitter_px: float = 12.0,
    seed: int = 0,
    bf16: bool = False,
    max_seconds: float | None = None,
    log: Log = log_line,
) -> PretrainResult:
    """SimCLR on unlabelled cell patches (larger than the crop, for rotations and shifts)."""
    config = config or ClassifierConfig()
    if len(patches) < 2 or patches.shape[1] < config.crop_px:
        raise ValueError(f"need 2 or more patches of at least {config.crop_px} px")
    seed_everything(seed)
    body = build_classifier(config)
    if not isinstance(body, CellClassifier):
        raise ValueError("pretraining makes one network: an ensemble's members are trained apart")
    model = _Contrastive(body)
    stage = ContrastiveStage(
        patches=patches,
        config=config,
        rng=np.random.default_rng(seed),
        steps_per_epoch=max(1, math.ceil(samples_per_epoch / batch_size)),
        batch_size=batch_size,
        temperature=temperature,
        jitter_px=jitter_px,
        bf16=bf16,
    )
    fitted = fit(model, stage, LoopOptions(epochs, lr, weight_decay, None, max_seconds, log))
    return PretrainResult(body.eval(), fitted.history)


def pretrained_checkpoint(result: PretrainResult, meta: dict[str, Any] | None = None) -> Checkpoint:
    """The pretrained network as a classifier checkpoint that `train_classifier(init_from=...)`
    starts from (saved with `save_checkpoint`, `train-classifier --init-from` too)."""
    config = result.model.config
    return Checkpoint(
        stage="classifier",
        state_dict={k: v.detach().clone() for k, v in result.model.state_dict().items()},
        meta={
            "arch": "CellClassifier",
            "config": config.to_dict(),
            "classes": list(stage2_classes(config)),
            "pretraining": {
                "method": "SimCLR (NT-Xent)",
                "history": result.history,
                **(meta or {}),
            },
        },
    )
