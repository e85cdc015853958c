"""Figures (matplotlib, Agg backend): training curves, confusion matrices, reviewer load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_training_curves(history: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    """Losses (left axis) and validation metrics (right panel) per epoch."""
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    loss_keys = [k for k in ("train_loss", "val_loss") if any(k in h for h in history)]
    metric_keys = sorted(
        {k for h in history for k in h if k.startswith("val_") and k != "val_loss"}
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in loss_keys:
        axes[0].plot(epochs, [h.get(k, np.nan) for h in history], label=k, marker=".")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].set_title(f"{title}: loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    for k in metric_keys:
        axes[1].plot(epochs, [h.get(k, np.nan) for h in history], label=k, marker=".")
    if "train_accuracy" in history[0] if history else False:
        axes[1].plot(
            epochs, [h["train_accuracy"] for h in history], label="train_accuracy", ls="--"
        )
    axes[1].set_xlabel("epoch")
    axes[1].set_title(f"{title}: validation")
    if metric_keys:
        axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str
) -> Path:
    """Counts with row-normalised colour (each true class sums to 1)."""
    path = Path(path)
    m = np.asarray(cm, dtype=np.int64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, np.float64), where=rows > 0)
    size = 1.0 + 0.75 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("annotated")
    ax.set_title(title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                color="white" if frac[i, j] > 0.6 else "black",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(reviewer: dict[str, Any], path: Path) -> Path:
    """What reviewers face (`inference.reviewer_load`): abnormal calls per field by place, and
    the reliability diagram of P(abnormal) on matched cells with its ECE."""
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    places = reviewer["abnormal_calls_per_field"]
    keys = ("near_marked_abnormal", "on_marked_nilm", "far_from_marked")
    names = ("near a marked\nabnormal cell", "on a marked\nNILM cell", "far from any\nmarked cell")
    means = [places[k]["mean"] or 0.0 for k in keys]
    bars = axes[0].bar(names, means, color=["#009e73", "#e69f00", "#d55e00"])
    axes[0].bar_label(bars, fmt="%.1f")
    axes[0].set_ylabel("abnormal calls per field (mean)")
    axes[0].set_title(f"{reviewer['fields']} fields, far = > {reviewer['far_px']:g} px")
    rel = reviewer["reliability"]
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    xs = [b["mean_p"] for b in rel["bins"]]
    ys = [b["abnormal_share"] for b in rel["bins"]]
    axes[1].plot(xs, ys, marker="o", color="#0072b2")
    for b in rel["bins"]:
        axes[1].annotate(str(b["n"]), (b["mean_p"], b["abnormal_share"]), fontsize=7)
    ece = rel["ece"]
    axes[1].set_title(
        f"reliability, {rel['cells']} matched cells, ECE {ece:.3f}"
        if ece is not None
        else "reliability (no matched cells)"
    )
    axes[1].set_xlabel("predicted P(abnormal)")
    axes[1].set_ylabel("share annotated abnormal")
    axes[1].set_xlim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
