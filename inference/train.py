"""Training of both stages from scratch (CPU-friendly), on CRIC or on in-memory samples.

`train_detector` and `train_classifier` take lists of `FieldSample` (an RGB field with its
annotated nucleus centres) so tests can train on synthetic fields; `load_cric_fields` reads the
real data. Model selection, temperature and thresholds use the validation split only.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import augment
from .classifier import (
    CellClassifier,
    ClassifierConfig,
    abnormal_probability,
    build_classifier,
    decide_labels,
    fit_temperature,
    normalise_crops,
)
from .data.cric import CricDataset
from .detector import (
    DetectorConfig,
    DetectorNet,
    Peak,
    build_detector,
    decode,
    detector_loss,
    make_targets,
    normalise,
)
from .metrics import classification_metrics, match_points
from .slides import crop_padded, read_image
from .types import BETHESDA_CLASSES, is_abnormal

Log = Callable[[str], None]


def _print(msg: str) -> None:
    tqdm.write(msg)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 matrix units (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class FieldSample:
    """An RGB field at `scale` x level 0, with annotated nucleus centres in the same pixels."""

    name: str
    image: np.ndarray
    points: np.ndarray  # (N, 2) float, x/y in this image's pixels
    labels: list[str]
    scale: float = 1.0

    @property
    def abnormal(self) -> np.ndarray:
        return np.array([is_abnormal(c) for c in self.labels], dtype=bool)


def resize_field(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def load_cric_fields(
    dataset: CricDataset, names: Sequence[str], *, scale: float = 1.0, desc: str = "loading"
) -> list[FieldSample]:
    """Decode (and downscale) the named CRIC images with their annotated cells."""
    out = []
    for name in tqdm(names, desc=desc, unit="img", leave=False):
        ann = dataset.images[name]
        image = resize_field(read_image(dataset.image_path(name)), scale)
        pts = np.array([(c.x, c.y) for c in ann.cells], np.float64).reshape(-1, 2) * scale
        out.append(FieldSample(name, image, pts, [c.label for c in ann.cells], scale))
    return out


def pad_to_multiple(image: np.ndarray, multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right with white to a multiple of `multiple`; also return the valid mask."""
    h, w = image.shape[:2]
    H, W = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    padded = crop_padded(image, 0, 0, W, H)
    valid = np.zeros((H, W), np.float32)
    valid[:h, :w] = 1.0
    return padded, valid


# ==========================================================================================
# Stage 1: detector
# ==========================================================================================


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _targets_batch(
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    config: DetectorConfig,
) -> dict[str, torch.Tensor]:
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
                loss, _ = detector_loss(
                    heat_logits,
                    offsets,
                    batch["heat"],
                    batch["neg"],
                    batch["offset"],
                    batch["mask"],
                )
                total += float(loss)
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


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _close_epoch(
    history: list[dict[str, float]],
    row: dict[str, float],
    *,
    log: Log,
    epoch: int,
    started: float,
    max_s: float | None,
) -> bool:
    """Record and log the epoch's row; True when the time budget is spent (stop training)."""
    history.append(row)
    log(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
    if max_s is not None and time.monotonic() - started > max_s:
        log(f"time budget of {max_s:.0f}s reached after epoch {epoch}")
        return True
    return False


class WeightAverage:
    """The weights a training loop validates and keeps: the model itself, or (decay > 0) an
    exponential moving average of its weights and BatchNorm statistics, which smooths the
    step-to-step noise of small-data training and generalises better."""

    def __init__(self, model: torch.nn.Module, decay: float | None) -> None:
        self.model = model
        self._average = (
            torch.optim.swa_utils.AveragedModel(
                model, avg_fn=_ema_with_warmup(decay), use_buffers=True
            )
            if decay
            else None
        )

    @property
    def kept(self) -> torch.nn.Module:
        return self._average.module if self._average is not None else self.model

    def update(self) -> None:
        """Fold the model's current weights in (after each optimiser step)."""
        if self._average is not None:
            self._average.update_parameters(self.model)


def _ema_with_warmup(decay: float) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """EMA update whose decay ramps up over the first steps, (1 + n) / (10 + n), so that the
    average does not stay anchored to the random initial weights of a short run."""

    def update(averaged: torch.Tensor, current: torch.Tensor, n: Any) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged * d + current * (1.0 - d)

    return update


def _keep_best(
    model: torch.nn.Module,
    kept: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    best_epoch: int,
    history: list[dict[str, float]],
) -> int:
    """Load the best validated weights into `model`; without validation, the last weights of
    `kept` (the model itself or its moving average)."""
    if best_state is None:
        if kept is not model:
            model.load_state_dict(kept.state_dict())
        return len(history)
    model.load_state_dict(best_state)
    return best_epoch


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
    log: Log = _print,
    max_seconds: float | None = None,
    bf16: bool = False,
    ema_decay: float | None = 0.995,
) -> DetectorTrainResult:
    """Train stage 1 on fields already scaled to `config.input_scale`; with `ema_decay`, the
    weights' moving average (`WeightAverage`) is what gets validated and kept."""
    config = config or DetectorConfig()
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model = build_detector(config)
    average = WeightAverage(model, ema_decay)
    kept = average.kept
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) * crops_per_image / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_loss, best_epoch = float("inf"), -1
    started = time.monotonic()
    for epoch in tqdm(range(1, epochs + 1), desc="detector epochs", unit="ep"):
        model.train()
        order = np.repeat(np.arange(len(train)), crops_per_image)
        rng.shuffle(order)
        losses: list[float] = []
        t0 = time.monotonic()
        for start in tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}", leave=False):
            items = [
                _detector_crop(train[i], crop_size, rng) for i in order[start : start + batch_size]
            ]
            batch = _targets_batch(items, config)
            x = normalise(batch["image"], config.mean, config.std)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                heat_logits, offsets = model(x)
            loss, _parts = detector_loss(
                heat_logits, offsets, batch["heat"], batch["neg"], batch["offset"], batch["mask"]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            average.update()
            losses.append(loss.item())
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "seconds": time.monotonic() - t0,
            "lr": float(sched.get_last_lr()[0]),
        }
        if val:
            peaks, val_loss = detector_predict_fields(kept, val, config, with_loss=True)
            st = candidate_stats(
                peaks, val, cell_threshold=0.3, abnormal_threshold=0.1, radius_px=match_radius_px
            )
            row.update({"val_loss": val_loss, **{f"val_{k}@0.3/0.1": v for k, v in st.items()}})
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = _state_copy(kept)
        if _close_epoch(history, row, log=log, epoch=epoch, started=started, max_s=max_seconds):
            break
    best_epoch = _keep_best(model, kept, best_state, best_epoch, history)
    thresholds = {"cell": 0.3, "abnormal": 0.1}
    val_metrics: dict[str, Any] = {}
    if val:
        peaks, val_loss = detector_predict_fields(model, val, config, with_loss=True)
        thresholds, st = choose_detector_thresholds(peaks, val, radius_px=match_radius_px)
        val_metrics = {"val_loss": val_loss, **st, "thresholds": thresholds}
        log(f"best epoch {best_epoch}; val at thresholds {thresholds}: {st}")
    model.eval()
    return DetectorTrainResult(model, config, history, best_epoch, thresholds, val_metrics)


# ==========================================================================================
# Stage 2: classifier
# ==========================================================================================


@dataclass
class CellPatches:
    """Square patches (side `patch`) centred on annotated nuclei, at level 0."""

    images: np.ndarray  # (N, P, P, 3) uint8
    labels: np.ndarray  # (N,) int indices into BETHESDA_CLASSES
    image_names: list[str] = field(default_factory=list)


def extract_patches(fields: Sequence[FieldSample], patch: int) -> CellPatches:
    imgs, labels, names = [], [], []
    half = patch // 2
    for f in fields:
        for (x, y), lab in zip(f.points, f.labels, strict=True):
            ix, iy = round(x), round(y)
            imgs.append(crop_padded(f.image, ix - half, iy - half, patch, patch))
            labels.append(BETHESDA_CLASSES.index(lab))
            names.append(f.name)
    arr = np.stack(imgs) if imgs else np.zeros((0, patch, patch, 3), np.uint8)
    return CellPatches(arr, np.array(labels, np.int64), names)


def cric_patches(
    dataset: CricDataset, names: Sequence[str], patch: int, desc: str = "crops"
) -> CellPatches:
    """Patches of every annotated cell of the named images, decoding one image at a time."""
    parts = []
    for name in tqdm(names, desc=desc, unit="img", leave=False):
        parts.append(extract_patches(load_cric_fields(dataset, [name], desc=name), patch))
    if not parts:
        return CellPatches(np.zeros((0, patch, patch, 3), np.uint8), np.zeros(0, np.int64))
    return CellPatches(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        [n for p in parts for n in p.image_names],
    )


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


def centre_crops(patches: np.ndarray, crop: int) -> np.ndarray:
    p = patches.shape[1]
    o = (p - crop) // 2
    return np.ascontiguousarray(patches[:, o : o + crop, o : o + crop])


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


def choose_abnormal_threshold(
    p_abnormal: np.ndarray, is_abn: np.ndarray, min_sensitivity: float = 0.95
) -> float:
    """The largest threshold on P(abnormal) whose validation sensitivity is >= the floor."""
    if is_abn.sum() == 0:
        return 0.5
    scores = np.sort(p_abnormal[is_abn])
    k = math.floor((1.0 - min_sensitivity) * len(scores))
    return float(min(0.5, scores[k]))  # at most 0.5: never less sensitive than argmax


@dataclass
class ClassifierTrainResult:
    model: CellClassifier
    config: ClassifierConfig
    history: list[dict[str, float]]
    best_epoch: int
    temperature: float
    abnormal_threshold: float
    val_metrics: dict[str, Any]


def _selection_score(metrics: dict[str, Any]) -> float:
    auc = metrics["abnormal_vs_nilm"].get("auc") or 0.0
    bal4 = metrics["four_class"].get("balanced_accuracy") or 0.0
    return float(auc + bal4)


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
    log: Log = _print,
    max_seconds: float | None = None,
    bf16: bool = False,
    ema_decay: float | None = 0.998,
) -> ClassifierTrainResult:
    """Train stage 2 on cell patches. Class balance comes from sampling (weights
    count^-balance_power) and from the loss (class weights count^-loss_power, by default
    1 - balance_power, i.e. fully balanced overall). With `ema_decay`, the weights' moving
    average (`WeightAverage`) is what gets validated and kept."""
    config = config or ClassifierConfig()
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    n_cls = len(BETHESDA_CLASSES)
    counts = np.bincount(train.labels, minlength=n_cls).astype(np.float64)
    present = counts > 0
    sample_w = np.where(present, np.maximum(counts, 1) ** -balance_power, 0.0)
    p_sample = sample_w[train.labels]
    p_sample /= p_sample.sum()
    lp = 1.0 - balance_power if loss_power is None else loss_power
    loss_w = np.where(present, np.maximum(counts, 1) ** -lp, 0.0)
    loss_w = loss_w / (loss_w[present].mean() if present.any() else 1.0)
    class_weight = torch.tensor(loss_w, dtype=torch.float32)
    model = build_classifier(config)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    average = WeightAverage(model, ema_decay)
    kept = average.kept
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, math.ceil(samples_per_epoch / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.15
    )
    val_crops = centre_crops(val.images, config.crop_px) if len(val.labels) else None
    history: list[dict[str, float]] = []
    best_score, best_epoch = -float("inf"), -1
    best_state: dict[str, torch.Tensor] | None = None
    started = time.monotonic()
    for epoch in tqdm(range(1, epochs + 1), desc="classifier epochs", unit="ep"):
        model.train()
        idx = rng.choice(len(train.labels), size=steps * batch_size, p=p_sample)
        losses: list[float] = []
        correct = 0
        t0 = time.monotonic()
        for s in tqdm(range(steps), desc=f"epoch {epoch}", leave=False):
            b = idx[s * batch_size : (s + 1) * batch_size]
            crops = np.stack(
                [_augment_crop(train.images[i], config.crop_px, rng, jitter_px) for i in b]
            )
            x = normalise_crops(torch.from_numpy(crops), config.mean, config.std)
            y = torch.from_numpy(train.labels[b])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last) if bf16 else x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, weight=class_weight, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            average.update()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "train_accuracy": correct / len(idx),
            "seconds": time.monotonic() - t0,
            "lr": float(sched.get_last_lr()[0]),
        }
        if val_crops is not None:
            logits = classifier_logits(kept, val_crops, config)
            yv = torch.from_numpy(val.labels)
            row["val_loss"] = float(F.cross_entropy(logits, yv))
            probs = torch.softmax(logits, 1).numpy()
            m = classification_metrics(
                [BETHESDA_CLASSES[i] for i in val.labels],
                [BETHESDA_CLASSES[i] for i in probs.argmax(1)],
                abnormal_probability(probs),
            )
            row["val_accuracy_6"] = m["six_class"]["accuracy"] or 0.0
            row["val_accuracy_4"] = m["four_class"]["accuracy"] or 0.0
            row["val_balanced_accuracy_4"] = m["four_class"]["balanced_accuracy"] or 0.0
            row["val_auc_abnormal"] = m["abnormal_vs_nilm"].get("auc") or 0.0
            score = _selection_score(m)
            row["val_score"] = score
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = _state_copy(kept)
        if _close_epoch(history, row, log=log, epoch=epoch, started=started, max_s=max_seconds):
            break
    best_epoch = _keep_best(model, kept, best_state, best_epoch, history)
    model.eval()
    temperature, threshold = 1.0, 0.5
    val_metrics: dict[str, Any] = {}
    if val_crops is not None:
        logits = classifier_logits(model, val_crops, config)
        yv = torch.from_numpy(val.labels)
        nll_before = float(F.cross_entropy(logits, yv))
        temperature = fit_temperature(logits, yv)
        nll_after = float(F.cross_entropy(logits / temperature, yv))
        probs = torch.softmax(logits / temperature, 1).numpy()
        is_abn = val.labels != BETHESDA_CLASSES.index("NILM")
        threshold = choose_abnormal_threshold(abnormal_probability(probs), is_abn, min_sensitivity)
        truth = [BETHESDA_CLASSES[i] for i in val.labels]
        val_metrics = classification_metrics(
            truth, decide_labels(probs, threshold), abnormal_probability(probs)
        )
        val_metrics["calibration"] = {
            "temperature": temperature,
            "nll_before": nll_before,
            "nll_after": nll_after,
            "ece_after": expected_calibration_error(probs, val.labels),
        }
        val_metrics["abnormal_threshold"] = threshold
        val_metrics["argmax"] = classification_metrics(
            truth, [BETHESDA_CLASSES[i] for i in probs.argmax(1)], abnormal_probability(probs)
        )
        log(
            f"best epoch {best_epoch}; T={temperature:.3f} (NLL {nll_before:.3f} -> "
            f"{nll_after:.3f}); P(abnormal) threshold {threshold:.3f}"
        )
    return ClassifierTrainResult(
        model, config, history, best_epoch, temperature, threshold, val_metrics
    )


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    conf = probs.max(1)
    pred = probs.argmax(1)
    ece = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(ece)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    c = Counter(int(i) for i in labels)
    return {code: c.get(i, 0) for i, code in enumerate(BETHESDA_CLASSES)}


def iter_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for s in range(0, len(items), size):
        yield items[s : s + size]


def default_out(path: Path | None, stage: str) -> Path:
    return path or Path("runs") / stage
