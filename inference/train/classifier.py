"""Stage 2 training: what differs from the detector's (the shared loop is engine.fit).

Batches are cell patches drawn with class-balancing weights, rotated, scaled, flipped, shifted
off centre and colour-jittered, then centre-cropped; the loss is class-weighted cross-entropy
with label smoothing; validation scores AUC(abnormal vs NILM) + four-class balanced accuracy
on centre crops (higher is better); after training, the temperature and the P(abnormal)
threshold are fitted on validation (`inference.calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .. import augment
from ..calibration import calibrate_classifier, probability_metrics
from ..checkpoints import Checkpoint, load_weights
from ..classifier import (
    CellClassifier,
    Classifier,
    ClassifierConfig,
    bethesda_truth,
    build_classifier,
    fold_not_a_cell,
    normalise_crops,
    stage2_classes,
    widen_to_not_a_cell,
)
from ..data.leaks import refuse_leaks
from ..errors import InputError
from ..types import BETHESDA_CLASSES
from .engine import Log, LoopOptions, Stage, autocast, fit, log_line, seed_everything
from .samples import CellPatches, centre_crops, class_counts


@dataclass
class ClassifierTrainResult:
    model: Classifier
    config: ClassifierConfig
    history: list[dict[str, float]]
    best_epoch: int
    temperature: float
    abnormal_threshold: float
    val_metrics: dict[str, Any]


def _augment_crop(
    patch: np.ndarray, crop: int, rng: np.random.Generator, jitter: float
) -> np.ndarray:
    p = patch.shape[0]
    c = (p / 2.0, p / 2.0)
    m = augment.random_affine(rng, c, max_rotation=180.0, scale=(0.9, 1.1))
    m[:, 2] += (
        crop / 2.0 - c[0] + rng.uniform(-jitter, jitter),
        crop / 2.0 - c[1] + rng.uniform(-jitter, jitter),
    )
    out = augment.warp(patch, m, (crop, crop), border=cv2.BORDER_REFLECT_101)
    return augment.photometric(out, rng)


def classifier_logits(
    model: torch.nn.Module, crops: np.ndarray, config: ClassifierConfig, batch_size: int = 256
) -> torch.Tensor:
    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(crops), batch_size):
            x = normalise_crops(
                torch.from_numpy(crops[s : s + batch_size]), config.mean, config.std
            )
            out.append(model(x).float())
    return torch.cat(out) if out else torch.zeros(0, len(BETHESDA_CLASSES))


def _selection_score(metrics: dict[str, Any]) -> float:
    auc = metrics["abnormal_vs_nilm"].get("auc") or 0.0
    bal4 = metrics["four_class"].get("balanced_accuracy") or 0.0
    return float(auc + bal4)


def class_weights(
    labels: np.ndarray, balance_power: float, loss_power: float | None, classes: int
) -> tuple[np.ndarray, torch.Tensor]:
    """(sampling probability of each patch, loss weight of each class): sampling weights
    count^-balance_power, loss weights count^-loss_power (default 1 - balance_power, i.e.
    fully balanced overall), normalised to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    present = counts > 0
    sample_w = np.where(present, np.maximum(counts, 1) ** -balance_power, 0.0)
    p_sample = sample_w[labels]
    p_sample /= p_sample.sum()
    lp = 1.0 - balance_power if loss_power is None else loss_power
    loss_w = np.where(present, np.maximum(counts, 1) ** -lp, 0.0)
    loss_w = loss_w / (loss_w[present].mean() if present.any() else 1.0)
    return p_sample, torch.tensor(loss_w, dtype=torch.float32)


@dataclass
class ClassifierStage(Stage):
    """Class-balanced augmented patches; validation on centre crops of the validation cells."""

    name: ClassVar[str] = "classifier"

    train: CellPatches
    val_crops: np.ndarray | None
    val_labels: np.ndarray
    config: ClassifierConfig
    rng: np.random.Generator
    p_sample: np.ndarray
    class_weight: torch.Tensor
    steps_per_epoch: int
    batch_size: int
    label_smoothing: float
    jitter_px: float
    bf16: bool
    _correct: int = field(default=0, init=False)  # this epoch's right training guesses
    _seen: int = field(default=0, init=False)

    def batches(self) -> list[np.ndarray]:
        n = self.steps_per_epoch * self.batch_size
        idx = self.rng.choice(len(self.train.labels), size=n, p=self.p_sample)
        self._correct, self._seen = 0, len(idx)
        bs = self.batch_size
        return [idx[s * bs : (s + 1) * bs] for s in range(self.steps_per_epoch)]

    def loss(self, model: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
        crops = np.stack(
            [
                _augment_crop(self.train.images[i], self.config.crop_px, self.rng, self.jitter_px)
                for i in batch
            ]
        )
        x = normalise_crops(torch.from_numpy(crops), self.config.mean, self.config.std)
        y = torch.from_numpy(self.train.labels[batch])
        with autocast(self.bf16):
            logits = model(x.contiguous(memory_format=torch.channels_last) if self.bf16 else x)
        logits = logits.float()
        loss = F.cross_entropy(
            logits, y, weight=self.class_weight, label_smoothing=self.label_smoothing
        )
        self._correct += int((logits.argmax(1) == y).sum())
        return loss

    def train_figures(self) -> dict[str, float]:
        return {"train_accuracy": self._correct / self._seen}

    def validate(self, model: torch.nn.Module) -> tuple[dict[str, float], float] | None:
        if self.val_crops is None:
            return None
        logits = classifier_logits(model, self.val_crops, self.config)
        val_loss = float(F.cross_entropy(logits, torch.from_numpy(self.val_labels)))
        probs, _ = fold_not_a_cell(torch.softmax(logits, 1).numpy())
        m = probability_metrics(bethesda_truth(self.val_labels), probs)
        score = _selection_score(m)
        return {
            "val_loss": val_loss,
            "val_accuracy_6": m["six_class"]["accuracy"] or 0.0,
            "val_accuracy_4": m["four_class"]["accuracy"] or 0.0,
            "val_balanced_accuracy_4": m["four_class"]["balanced_accuracy"] or 0.0,
            "val_auc_abnormal": m["abnormal_vs_nilm"].get("auc") or 0.0,
            "val_score": score,
        }, score


def _start_from(model: Classifier, init_from: Checkpoint) -> None:
    """Fine-tuning's start: the checkpoint's weights; a six-class checkpoint also starts a
    not-a-cell model (`widen_to_not_a_cell`)."""
    start = init_from.meta.get("config", {})
    widen = (
        isinstance(model, CellClassifier)
        and model.config.not_a_cell
        and isinstance(start, dict)
        and not start.get("not_a_cell")
    )
    if not widen:
        load_weights(model, init_from)
        return
    assert isinstance(model, CellClassifier)
    six_class = build_classifier(dict(start, not_a_cell=False))
    load_weights(six_class, init_from)  # refuses another architecture, as without widening
    widen_to_not_a_cell(model, six_class.state_dict())


def train_classifier(
    train: CellPatches,
    val: CellPatches,
    *,
    config: ClassifierConfig | None = None,
    epochs: int = 30,
    samples_per_epoch: int = 3072,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.05,
    jitter_px: float = 16.0,
    balance_power: float = 0.5,
    loss_power: float | None = None,
    min_sensitivity: float = 0.95,
    seed: int = 0,
    log: Log = log_line,
    max_seconds: float | None = None,
    bf16: bool = False,
    ema_decay: float | None = 0.998,
    init_from: Checkpoint | None = None,
) -> ClassifierTrainResult:
    """Train stage 2 on cell patches. Class balance comes from sampling and from the loss
    (`class_weights`). With `ema_decay`, the weights' moving average (`WeightAverage`) is what
    gets validated and kept. Refused (`LeakError`) when a validation patch comes from an image
    (by SHA-256) that training patches come from. `init_from`: a classifier checkpoint of the
    same architecture whose weights training starts from (fine-tuning); else random weights."""
    refuse_leaks({"train": train.refs(), "val": val.refs()})
    config = config or ClassifierConfig()
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    classes = stage2_classes(config)
    if len(train.labels) and train.labels.max() >= len(classes):
        raise InputError(
            "training patches labelled not a cell need a classifier with that outcome "
            "(ClassifierConfig.not_a_cell)"
        )
    p_sample, class_weight = class_weights(train.labels, balance_power, loss_power, len(classes))
    model = build_classifier(config)
    if init_from is not None:
        _start_from(model, init_from)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    stage = ClassifierStage(
        train=train,
        val_crops=centre_crops(val.images, config.crop_px) if len(val.labels) else None,
        val_labels=val.labels,
        config=config,
        rng=rng,
        p_sample=p_sample,
        class_weight=class_weight,
        steps_per_epoch=max(1, math.ceil(samples_per_epoch / batch_size)),
        batch_size=batch_size,
        label_smoothing=label_smoothing,
        jitter_px=jitter_px,
        bf16=bf16,
    )
    loop = LoopOptions(epochs, lr, weight_decay, ema_decay, max_seconds, log)
    fitted = fit(model, stage, loop)
    temperature, threshold = 1.0, 0.5
    val_metrics: dict[str, Any] = {}
    if stage.val_crops is not None:
        logits = classifier_logits(model, stage.val_crops, config)
        temperature, threshold, val_metrics = calibrate_classifier(
            logits, val.labels, min_sensitivity
        )
        cal = val_metrics["calibration"]
        log(
            f"best epoch {fitted.best_epoch}; T={temperature:.3f} (NLL {cal['nll_before']:.3f} "
            f"-> {cal['nll_after']:.3f}); P(abnormal) threshold {threshold:.3f}"
        )
    return ClassifierTrainResult(
        model, config, fitted.history, fitted.best_epoch, temperature, threshold, val_metrics
    )


def classifier_checkpoint_meta(
    result: ClassifierTrainResult,
    data: dict[str, Any],
    training: dict[str, Any],
    *,
    train: CellPatches,
    val: CellPatches,
) -> dict[str, Any]:
    """What a classifier checkpoint records: architecture, input, calibration, data, training."""
    config = result.config
    return {
        "arch": type(result.model).__name__,
        "config": config.to_dict(),
        "classes": list(stage2_classes(config)),
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "crop_px": config.crop_px,
        "model_mpp": None,
        "crop_um": None,
        "temperature": result.temperature,
        "abnormal_threshold": result.abnormal_threshold,
        # What the temperature and threshold were fitted on (None: no validation data).
        "calibration": (
            {
                "split": "val",
                "cells": len(val.labels),
                "temperature": result.temperature,
                "abnormal_threshold": result.abnormal_threshold,
                **result.val_metrics["calibration"],
            }
            if result.val_metrics.get("calibration")
            else None
        ),
        "data": {
            **data,
            "train_cells": class_counts(train.labels),
            "val_cells": class_counts(val.labels),
        },
        "training": {
            **training,
            "selection": "best validation AUC(abnormal vs NILM) + 4-class balanced accuracy",
        },
        "metrics": {"val": result.val_metrics},
        "history": result.history,
    }
