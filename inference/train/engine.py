"""The epoch loop both stages share (after torchvision's detection references, engine.py).

`fit(model, stage, ...)` runs AdamW with a one-cycle learning-rate schedule over the batches a
`Stage` draws each epoch, folds every step into a `WeightAverage`, validates the kept weights
after each epoch, keeps the best of them, logs one row per epoch and stops at a time budget.
A `Stage` (train/detector.py, train/classifier.py) supplies only what differs: its batches, its
loss and its validation metric. Also the small helpers every run needs (seeding, bf16 support).
"""

from __future__ import annotations

import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

Log = Callable[[str], None]


def log_line(msg: str) -> None:
    """The default log: one line above the progress bars."""
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


def autocast(bf16: bool) -> torch.autocast:
    """bfloat16 autocast on the CPU for the forward pass (a no-op when `bf16` is false)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


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


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def keep_best(
    model: torch.nn.Module,
    kept: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    best_epoch: int,
    history: list[dict[str, float]],
) -> int:
    """Load the best validated weights into `model`; without validation, the last weights of
    `kept` (the model itself or its moving average). Returns the epoch of the weights loaded."""
    if best_state is None:
        if kept is not model:
            model.load_state_dict(kept.state_dict())
        return len(history)
    model.load_state_dict(best_state)
    return best_epoch


class Stage(ABC):
    """What one stage brings to `fit`: its batches, its loss and its validation."""

    name: ClassVar[str]  # "detector", "classifier": names the progress bars
    clip_grad_norm: ClassVar[float | None] = None
    steps_per_epoch: int  # batches per epoch, for the learning-rate schedule

    @abstractmethod
    def batches(self) -> Sequence[Any]:
        """The epoch's batches (sample indices), drawn when the epoch starts."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The training loss of one batch (augmentation and forward pass included)."""

    def train_figures(self) -> dict[str, float]:
        """Figures of the epoch's training batches beyond the mean loss, for its row."""
        return {}

    @abstractmethod
    def validate(self, model: torch.nn.Module) -> tuple[dict[str, float], float] | None:
        """The row's validation figures for these weights and the score to keep the best by
        (higher is better); None without validation data."""


@dataclass
class Fitted:
    history: list[dict[str, float]]  # one row per epoch run
    best_epoch: int  # the epoch whose weights the model now holds


@dataclass(frozen=True)
class LoopOptions:
    """The options of the loop itself, the same for both stages."""

    epochs: int
    lr: float  # peak of the one-cycle schedule
    weight_decay: float
    ema_decay: float | None  # None or 0: validate and keep the raw weights
    max_seconds: float | None  # time budget: stop after the epoch that passes it
    log: Log


def fit(model: torch.nn.Module, stage: Stage, options: LoopOptions) -> Fitted:
    """Train `model` in place and leave it, in eval mode, holding the best validated weights
    (with `ema_decay`, of the weights' moving average: `WeightAverage`)."""
    epochs, lr, log, max_seconds = options.epochs, options.lr, options.log, options.max_seconds
    average = WeightAverage(model, options.ema_decay)
    kept = average.kept
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=options.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * stage.steps_per_epoch, pct_start=0.15
    )
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch = -math.inf, -1
    started = time.monotonic()
    for epoch in tqdm(range(1, epochs + 1), desc=f"{stage.name} epochs", unit="ep"):
        model.train()
        batches = stage.batches()
        losses: list[float] = []
        t0 = time.monotonic()
        for batch in tqdm(batches, desc=f"epoch {epoch}", leave=False):
            loss = stage.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if stage.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), stage.clip_grad_norm)
            opt.step()
            sched.step()
            average.update()
            losses.append(loss.item())
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **stage.train_figures(),
            "seconds": time.monotonic() - t0,
            "lr": float(sched.get_last_lr()[0]),
        }
        validated = stage.validate(kept)
        if validated is not None:
            figures, score = validated
            row.update(figures)
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = state_copy(kept)
        history.append(row)
        log(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            log(f"time budget of {max_seconds:.0f}s reached after epoch {epoch}")
            break
    best_epoch = keep_best(model, kept, best_state, best_epoch, history)
    model.eval()
    return Fitted(history, best_epoch)
