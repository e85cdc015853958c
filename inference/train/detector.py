"""Stage 1 training: what differs from the classifier's (the shared loop is engine.fit).

Batches are random crops of the training fields (placed near abnormal cells half the time,
rotated, scaled, flipped, colour-jittered) with their heatmap targets; the loss is the
detector's focal + offset loss; validation is the loss on whole validation fields (lower is
better) with the recall of candidates at fixed thresholds; after training, the thresholds with
the fewest candidates that reach the recall floors on validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from .. import augment
from ..checkpoints import Checkpoint, load_weights
from ..data.leaks import refuse_leaks
from ..detector import (
    DetectorConfig,
    DetectorNet,
    Peak,
    build_detector,
    decode,
    detector_loss,
    make_targets,
    normalise,
)
from ..metrics import match_points
from ..types import BETHESDA_CLASSES
from .engine import Log, LoopOptions, Stage, autocast, fit, log_line, seed_everything
from .samples import FieldSample, pad_to_multiple

Item = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image, points, abnormal, valid


@dataclass
class DetectorTrainResult:
    model: DetectorNet
    config: DetectorConfig
    history: list[dict[str, float]]
    best_epoch: int
    thresholds: dict[str, float]
    val_metrics: dict[str, Any]


def _detector_crop(
    sample: FieldSample, size: int, rng: np.random.Generator, *, augment_photo: bool = True
) -> Item:
    """A randomly placed, rotated, scaled and flipped crop (size x size) of a field in network
    input pixels, with the transformed points, their abnormal flags and the valid mask."""
    h, w = sample.image.shape[:2]
    abn = sample.abnormal
    r = rng.random()
    if r < 0.5 and abn.any():
        cx, cy = sample.points[rng.choice(np.flatnonzero(abn))]
        cx, cy = cx + rng.uniform(-size / 3, size / 3), cy + rng.uniform(-size / 3, size / 3)
    elif r < 0.75 and len(sample.points):
        cx, cy = sample.points[rng.integers(len(sample.points))]
        cx, cy = cx + rng.uniform(-size / 3, size / 3), cy + rng.uniform(-size / 3, size / 3)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    m = augment.random_affine(rng, (float(cx), float(cy)), max_rotation=15.0, scale=(0.8, 1.25))
    m[:, 2] += (size / 2 - cx, size / 2 - cy)
    img = augment.warp(sample.image, m, (size, size), border=cv2.BORDER_CONSTANT)
    valid = cv2.warpAffine(
        np.ones((h, w), np.uint8), m, (size, size), flags=cv2.INTER_NEAREST, borderValue=0
    )
    if augment_photo:
        img = augment.photometric(img, rng)
    pts = augment.transform_points(sample.points, m)
    return img, pts, abn, valid


def _targets_batch(items: Sequence[Item], config: DetectorConfig) -> dict[str, torch.Tensor]:
    imgs, heats, negs, offs, masks = [], [], [], [], []
    s = config.stride
    for img, pts, abn, valid in items:
        h, w = img.shape[:2]
        valid_out = cv2.resize(
            valid.astype(np.float32), (w // s, h // s), interpolation=cv2.INTER_AREA
        )
        t = make_targets(pts, abn, (h // s, w // s), config, valid=(valid_out > 0.5))
        imgs.append(img)
        heats.append(t.heat)
        negs.append(t.neg_weight)
        offs.append(t.offset)
        masks.append(t.offset_mask)
    return {
        "image": torch.from_numpy(np.stack(imgs)),
        "heat": torch.from_numpy(np.stack(heats)),
        "neg": torch.from_numpy(np.stack(negs)),
        "offset": torch.from_numpy(np.stack(offs)),
        "mask": torch.from_numpy(np.stack(masks)),
    }


def _batch_loss(
    heat_logits: torch.Tensor, offsets: torch.Tensor, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    loss, _parts = detector_loss(
        heat_logits, offsets, batch["heat"], batch["neg"], batch["offset"], batch["mask"]
    )
    return loss


def detector_predict_fields(
    model: torch.nn.Module,
    fields: Sequence[FieldSample],
    config: DetectorConfig,
    *,
    threshold: float = 0.02,
    with_loss: bool = False,
) -> tuple[list[list[Peak]], float]:
    """Peaks (network-input pixels) for whole fields already at the input scale, and the mean
    loss over them when `with_loss`."""
    model.eval()
    peaks: list[list[Peak]] = []
    total = 0.0
    with torch.inference_mode():
        for f in fields:
            padded, valid = pad_to_multiple(f.image, 16)
            x = normalise(torch.from_numpy(padded[None]), config.mean, config.std)
            heat_logits, offsets = model(x)
            if with_loss:
                batch = _targets_batch([(padded, f.points, f.abnormal, valid)], config)
                total += float(_batch_loss(heat_logits, offsets, batch))
            peaks += decode(
                heat_logits,
                offsets,
                config,
                cell_threshold=threshold,
                abnormal_threshold=threshold,
                top_k=1000,
            )
    return peaks, total / max(len(fields), 1)


def candidate_stats(
    peaks: Sequence[Sequence[Peak]],
    fields: Sequence[FieldSample],
    *,
    cell_threshold: float,
    abnormal_threshold: float,
    radius_px: float,
) -> dict[str, float]:
    """Recall of annotated (all / abnormal) cells by the candidates kept at these thresholds,
    and candidates per image. Coordinates in each field's pixels; radius in level-0 px."""
    n = n_abn = hit = hit_abn = n_cand = 0
    for pk, f in zip(peaks, fields, strict=True):
        kept = [
            p
            for p in pk
            if p.cell_score >= cell_threshold or p.abnormal_score >= abnormal_threshold
        ]
        n_cand += len(kept)
        xy = np.array([(p.x, p.y) for p in kept]).reshape(-1, 2)
        pairs = match_points(xy, f.points, radius_px * f.scale)
        abn = f.abnormal
        n += len(f.points)
        n_abn += int(abn.sum())
        hit += len(pairs)
        hit_abn += sum(int(abn[g]) for _, g in pairs)
    return {
        "cell_recall": hit / max(n, 1),
        "abnormal_recall": hit_abn / max(n_abn, 1),
        "candidates_per_image": n_cand / max(len(fields), 1),
    }


def choose_detector_thresholds(
    peaks: Sequence[Sequence[Peak]],
    fields: Sequence[FieldSample],
    *,
    radius_px: float,
    min_abnormal_recall: float = 0.97,
    min_cell_recall: float = 0.85,
) -> tuple[dict[str, float], dict[str, float]]:
    """The thresholds with the fewest candidates per image that reach both recall floors on
    validation. The abnormal floor is lowered to (best reachable - 0.01) when the detector
    cannot reach it at any threshold; if still none qualifies, the best abnormal recall."""
    grid_c = [0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7]
    grid_a = [0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
    stats = {
        (tc, ta): candidate_stats(
            peaks, fields, cell_threshold=tc, abnormal_threshold=ta, radius_px=radius_px
        )
        for tc in grid_c
        for ta in grid_a
    }
    reachable = max(st["abnormal_recall"] for st in stats.values())
    abn_floor = min(min_abnormal_recall, reachable - 0.01)
    best: tuple[tuple[float, ...], dict[str, float], dict[str, float]] | None = None
    for (tc, ta), st in stats.items():
        ok = st["abnormal_recall"] >= abn_floor and st["cell_recall"] >= min_cell_recall
        key = (
            (1.0, -st["candidates_per_image"], 0.0)
            if ok
            else (0.0, st["abnormal_recall"], st["cell_recall"])
        )
        if best is None or key > best[0]:
            best = (key, {"cell": tc, "abnormal": ta}, st)
    assert best is not None
    return best[1], best[2]


@dataclass
class DetectorStage(Stage):
    """Random crops of the training fields; validation loss on whole validation fields."""

    name: ClassVar[str] = "detector"
    clip_grad_norm: ClassVar[float | None] = 5.0

    train: Sequence[FieldSample]
    val: Sequence[FieldSample]
    config: DetectorConfig
    rng: np.random.Generator
    crops_per_image: int
    crop_size: int
    batch_size: int
    match_radius_px: float
    bf16: bool

    def __post_init__(self) -> None:
        n = len(self.train) * self.crops_per_image
        self.steps_per_epoch = max(1, math.ceil(n / self.batch_size))

    def batches(self) -> list[np.ndarray]:
        order = np.repeat(np.arange(len(self.train)), self.crops_per_image)
        self.rng.shuffle(order)
        return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def loss(self, model: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
        items = [_detector_crop(self.train[i], self.crop_size, self.rng) for i in batch]
        targets = _targets_batch(items, self.config)
        x = normalise(targets["image"], self.config.mean, self.config.std)
        with autocast(self.bf16):
            heat_logits, offsets = model(x)
        return _batch_loss(heat_logits, offsets, targets)

    def validate(self, model: torch.nn.Module) -> tuple[dict[str, float], float] | None:
        if not self.val:
            return None
        peaks, val_loss = detector_predict_fields(model, self.val, self.config, with_loss=True)
        radius = self.match_radius_px
        st = candidate_stats(
            peaks, self.val, cell_threshold=0.3, abnormal_threshold=0.1, radius_px=radius
        )
        return {"val_loss": val_loss, **{f"val_{k}@0.3/0.1": v for k, v in st.items()}}, -val_loss


def train_detector(
    train: Sequence[FieldSample],
    val: Sequence[FieldSample],
    *,
    config: DetectorConfig | None = None,
    epochs: int = 30,
    crops_per_image: int = 4,
    crop_size: int = 256,
    batch_size: int = 16,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    match_radius_px: float = 20.0,
    log: Log = log_line,
    max_seconds: float | None = None,
    bf16: bool = False,
    ema_decay: float | None = 0.995,
    init_from: Checkpoint | None = None,
) -> DetectorTrainResult:
    """Train stage 1 on fields already scaled to `config.input_scale`; with `ema_decay`, the
    weights' moving average (`WeightAverage`) is what gets validated and kept. Refused
    (`LeakError`) when a validation field has the SHA-256 of a training field. `init_from`: a
    detector checkpoint of the same architecture whose weights training starts from."""
    refuse_leaks({"train": [f.ref for f in train], "val": [f.ref for f in val]})
    config = config or DetectorConfig()
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model = build_detector(config)
    if init_from is not None:
        load_weights(model, init_from)
    stage = DetectorStage(
        train,
        val,
        config,
        rng,
        crops_per_image=crops_per_image,
        crop_size=crop_size,
        batch_size=batch_size,
        match_radius_px=match_radius_px,
        bf16=bf16,
    )
    loop = LoopOptions(epochs, lr, weight_decay, ema_decay, max_seconds, log)
    fitted = fit(model, stage, loop)
    thresholds = {"cell": 0.3, "abnormal": 0.1}
    val_metrics: dict[str, Any] = {}
    if val:
        peaks, val_loss = detector_predict_fields(model, val, config, with_loss=True)
        thresholds, st = choose_detector_thresholds(peaks, val, radius_px=match_radius_px)
        val_metrics = {"val_loss": val_loss, **st, "thresholds": thresholds}
        log(f"best epoch {fitted.best_epoch}; val at thresholds {thresholds}: {st}")
    model.eval()
    return DetectorTrainResult(
        model, config, fitted.history, fitted.best_epoch, thresholds, val_metrics
    )


def detector_checkpoint_meta(
    result: DetectorTrainResult, data: dict[str, Any], training: dict[str, Any]
) -> dict[str, Any]:
    """What a detector checkpoint records: architecture, input, thresholds, data, training."""
    config = result.config
    return {
        "arch": "DetectorNet",
        "config": config.to_dict(),
        "heat_channels": ["cell", "abnormal"],
        "classes": list(BETHESDA_CLASSES),
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "input_scale": config.input_scale,
        "box_px": config.box_px,
        "model_mpp": None,
        "thresholds": result.thresholds,
        "match_radius_px": 20.0,
        "data": data,
        "training": {**training, "selection": "lowest validation loss"},
        "metrics": {"val": result.val_metrics},
        "history": result.history,
    }
