"""What a reviewer faces on a set of annotated fields (numpy only, no torch).

`detection_metrics` (metrics.py) counts matches; a reviewer wades through *calls*. Here, per
field, every call labelled abnormal is put in one of three places:

* `near_marked_abnormal`: within `far_px` of a marked abnormal cell (a true alarm, or at least
  one on the right spot);
* `on_marked_nilm`: not near a marked abnormal cell, but within `far_px` of a marked NILM cell
  (a known false alarm);
* `far_from_marked`: more than `far_px` from every marked cell (unlabelled area: an unmarked
  abnormal cell, or, far more often, debris, inflammation or an overlapping group).

`false_alarms_per_field` is the mean of the last two (every abnormal call not near a marked
abnormal cell): the figure the activation gate compares. Also: abnormal-cell recall at several
radii (a marked abnormal cell recalled when an abnormal call lies within the radius, one call per
cell), the share of abnormal fields whose top-k most suspicious cells (by P(abnormal)) include one
within `far_px` of a marked abnormal cell, field-level AUC (field score: the max cell P(abnormal),
and the mean of the top 3) against field labels (given, or: a field is abnormal when it has a
marked abnormal cell), and a reliability table with expected calibration error of P(abnormal) on
the calls matched to marked cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import ImageEval, match_points, roc_auc
from .types import is_abnormal

FAR_PX = 30.0
RECALL_RADII_PX = (20.0, 30.0, 40.0)
TOP_K = (1, 5, 10)
RELIABILITY_BINS = 10


def _nearest(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """Distance from each prediction to its nearest point of gt_xy (inf when there is none)."""
    if len(gt_xy) == 0 or len(pred_xy) == 0:
        return np.full(len(pred_xy), np.inf)
    d = np.linalg.norm(pred_xy[:, None, :] - gt_xy[None, :, :], axis=2)
    return np.asarray(d.min(axis=1))


def _called_abnormal(im: ImageEval) -> np.ndarray:
    """Which calls are abnormal: by their labels, or a mask a threshold sweep put in `extra`."""
    if "called_abnormal" in im.extra:
        return np.asarray(im.extra["called_abnormal"], bool)
    return np.array([is_abnormal(c) for c in im.pred_labels], bool)


def _places(im: ImageEval, far_px: float) -> dict[str, int]:
    abn_gt = np.array([is_abnormal(c) for c in im.gt_labels], bool)
    called = _called_abnormal(im)
    xy = im.pred_xy[called]
    near_abn = _nearest(xy, im.gt_xy[abn_gt]) <= far_px
    near_nilm = _nearest(xy, im.gt_xy[~abn_gt]) <= far_px
    return {
        "near_marked_abnormal": int(near_abn.sum()),
        "on_marked_nilm": int((~near_abn & near_nilm).sum()),
        "far_from_marked": int((~near_abn & ~near_nilm).sum()),
    }


def threshold_for_budget(
    images: Sequence[ImageEval], far_budget: float, *, far_px: float = FAR_PX
) -> dict[str, Any]:
    """The lowest P(abnormal) threshold at which the abnormal calls farther than `far_px` from
    every marked cell average at most `far_budget` per field over `images` (validation fields):
    the most sensitive rule whose false alarms in unmarked areas, what a reviewer must wade
    through, stay within the budget. Returns the threshold with the far calls per field and the
    abnormal-cell recall (at `far_px`) it gives there."""
    far_p = []
    for im in images:
        far = _nearest(im.pred_xy, im.gt_xy) > far_px
        far_p.extend(im.pred_p_abnormal[far].tolist())
    allowed = int(np.floor(far_budget * len(images) + 1e-9))
    ranked = np.sort(np.asarray(far_p, np.float64))[::-1]
    # Just above the first far call over the budget; every call when the budget is never hit.
    threshold = float(np.nextafter(ranked[allowed], 1.0)) if allowed < len(ranked) else 0.0
    at = [
        ImageEval(
            im.name,
            im.gt_xy,
            im.gt_labels,
            im.pred_xy,
            im.pred_labels,
            im.pred_p_abnormal,
            extra={"called_abnormal": im.pred_p_abnormal >= threshold},
        )
        for im in images
    ]
    return {
        "rule": f"lowest threshold with <= {far_budget:g} abnormal calls per field farther than "
        f"{far_px:g} px from every marked cell (validation fields)",
        "far_budget": far_budget,
        "threshold": threshold,
        "fields": len(images),
        "far_per_field": float(np.mean([_places(im, far_px)["far_from_marked"] for im in at]))
        if at
        else None,
        "abnormal_recall": _recall_at(at, far_px),
    }


def summary_stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "max": None}
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "median": float(np.median(arr)), "max": float(arr.max())}


def _recall_at(images: Sequence[ImageEval], radius: float) -> float | None:
    found = total = 0
    for im in images:
        abn_gt = np.array([is_abnormal(c) for c in im.gt_labels], bool)
        total += int(abn_gt.sum())
        called = _called_abnormal(im)
        found += len(match_points(im.pred_xy[called], im.gt_xy[abn_gt], radius))
    return found / total if total else None


def _top_k_hits(images: Sequence[ImageEval], far_px: float) -> dict[str, Any]:
    abnormal_fields = [im for im in images if any(is_abnormal(c) for c in im.gt_labels)]
    out: dict[str, Any] = {"abnormal_fields": len(abnormal_fields)}
    for k in TOP_K:
        hits = 0
        for im in abnormal_fields:
            abn_gt = im.gt_xy[np.array([is_abnormal(c) for c in im.gt_labels], bool)]
            order = np.argsort(-im.pred_p_abnormal, kind="stable")[:k]
            hits += bool((_nearest(im.pred_xy[order], abn_gt) <= far_px).any())
        out[f"top_{k}"] = hits / len(abnormal_fields) if abnormal_fields else None
    return out


def _field_scores(im: ImageEval) -> tuple[float, float]:
    p = np.sort(im.pred_p_abnormal)[::-1]
    if not len(p):
        return 0.0, 0.0
    return float(p[0]), float(p[:3].mean())


def _field_is_abnormal(im: ImageEval, labels: Mapping[str, bool] | None) -> bool | None:
    """The field's truth: its given label (None: a field the labels do not name), else whether
    it holds a marked abnormal cell."""
    if labels is not None:
        return labels.get(im.name)
    return any(is_abnormal(c) for c in im.gt_labels)


def _field_auc(images: Sequence[ImageEval], labels: Mapping[str, bool] | None) -> dict[str, Any]:
    truths = [(im, _field_is_abnormal(im, labels)) for im in images]
    named = [(im, y) for im, y in truths if y is not None]
    truth = np.array([y for _, y in named], bool)
    scores = np.array([_field_scores(im) for im, _ in named], np.float64).reshape(-1, 2)
    return {
        "fields": len(named),
        "abnormal_fields": int(truth.sum()),
        "labels": "given" if labels is not None else "marked abnormal cell",
        "auc_max_cell": roc_auc(truth, scores[:, 0]),
        "auc_top3_mean": roc_auc(truth, scores[:, 1]),
    }


def reliability(images: Sequence[ImageEval], radius: float) -> dict[str, Any]:
    """P(abnormal) of the calls matched to marked cells against the truth, in equal-width bins."""
    p_list, y_list = [], []
    for im in images:
        for pi, gi in match_points(im.pred_xy, im.gt_xy, radius):
            p_list.append(float(im.pred_p_abnormal[pi]))
            y_list.append(is_abnormal(im.gt_labels[gi]))
    p, y = np.asarray(p_list, np.float64), np.asarray(y_list, bool)
    bins = []
    ece = 0.0
    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        m = (p >= lo) & ((p < hi) if i < RELIABILITY_BINS - 1 else (p <= hi))
        if not m.any():
            continue
        conf, freq = float(p[m].mean()), float(y[m].mean())
        ece += float(m.mean()) * abs(freq - conf)
        bins.append(
            {
                "from": float(lo),
                "to": float(hi),
                "n": int(m.sum()),
                "mean_p": conf,
                "abnormal_share": freq,
            }
        )
    return {"cells": len(p), "ece": ece if len(p) else None, "bins": bins}


def reviewer_load(
    images: Sequence[ImageEval],
    *,
    radius: float,
    far_px: float = FAR_PX,
    field_labels: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The figures of the module docstring for a set of evaluated fields."""
    places = [_places(im, far_px) for im in images]
    per_field = {
        key: summary_stats([p[key] for p in places])
        for key in ("near_marked_abnormal", "on_marked_nilm", "far_from_marked")
    }
    false_alarms = [p["on_marked_nilm"] + p["far_from_marked"] for p in places]
    # A NILM field by its given label where there is one (an unmarked LBC field of an abnormal
    # class is not NILM), else by having no marked abnormal cell.
    nilm_fields = [
        fa
        for fa, im in zip(false_alarms, images, strict=True)
        if _field_is_abnormal(im, field_labels) is False
    ]
    return {
        "far_px": far_px,
        "fields": len(images),
        "abnormal_calls_per_field": per_field,
        "false_alarms_per_field": summary_stats(false_alarms)["mean"],
        "false_alarms_per_nilm_field": summary_stats(nilm_fields),
        "abnormal_recall_by_radius_px": {f"{r:g}": _recall_at(images, r) for r in RECALL_RADII_PX},
        "top_k_hit": _top_k_hits(images, far_px),
        "field_auc": _field_auc(images, field_labels),
        "reliability": reliability(images, radius),
    }
