"""Stage 1: a small fully convolutional centre detector (CenterNet-style) and its decoding.

One forward pass over a downsampled field or slide tile gives, at output stride 4:

* `heat[:, 0]`: the likelihood of a labelled-cell nucleus centre (any Bethesda class),
* `heat[:, 1]`: the likelihood of an *abnormal* (non-NILM) nucleus centre, the stage-1
  abnormality score,
* `offset[:, 0:2]`: the sub-cell position of the centre (in output cells).

The training data gives nucleus centres only, so boxes have a fixed side (`box_px`, level-0
pixels) around each centre. Peaks are found with a 3x3 max-pool NMS on max(heat[0], heat[1]).

Targets (`make_targets`): a Gaussian at each labelled centre, its peak set to exactly 1. Because
unlabelled cells are unknown rather than negative, negative pixels far from any labelled cell are
down-weighted (`unlabelled_weight`); negatives near labelled cells, where the annotator looked, get
full weight, and near NILM-labelled cells the abnormal channel gets `nilm_weight` (definite
negatives for abnormality).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DictConfig

CELL, ABNORMAL = 0, 1


@dataclass(frozen=True)
class DetectorConfig(DictConfig):
    input_scale: float = 0.5  # network input pixels per level-0 pixel
    stride: int = 4  # output stride relative to the network input
    widths: tuple[int, int, int, int] = (16, 32, 64, 96)
    neck: int = 48
    sigma_px: float = 10.0  # Gaussian sigma of a centre, level-0 px
    box_px: int = 96  # side of the box drawn around a detection, level-0 px
    known_radius_px: float = 40.0  # negatives within this distance of a labelled cell are "known"
    unlabelled_weight: float = 0.15
    unlabelled_weight_abnormal: float = 0.5
    nilm_weight: float = 2.0
    mean: tuple[float, float, float] = (0.70, 0.66, 0.74)
    std: tuple[float, float, float] = (0.20, 0.22, 0.18)

    @property
    def level0_per_cell(self) -> float:
        """Level-0 pixels per heatmap cell."""
        return self.stride / self.input_scale


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(x + y, inplace=True)


class DetectorNet(nn.Module):
    """A 4-stage CNN (stride 16) with a small top-down path back to stride 4."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        w1, w2, w3, w4 = self.config.widths
        n = self.config.neck
        self.stem = _conv_bn(3, w1, 2)  # /2
        self.layer2 = _conv_bn(w1, w2, 2)  # /4
        self.layer3 = nn.Sequential(_conv_bn(w2, w3, 2), ResBlock(w3))  # /8
        self.layer4 = nn.Sequential(_conv_bn(w3, w4, 2), ResBlock(w4), ResBlock(w4))  # /16
        self.lat2 = nn.Conv2d(w2, n, 1)
        self.lat3 = nn.Conv2d(w3, n, 1)
        self.lat4 = nn.Conv2d(w4, n, 1)
        self.fuse = _conv_bn(n, n)
        self.heat = nn.Conv2d(n, 2, 1)
        self.offset = nn.Conv2d(n, 2, 1)
        assert self.heat.bias is not None
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.01) / 0.01))  # prior p = 0.01

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: normalised (B, 3, H, W) with H, W multiples of 16 -> (heat logits, offsets)."""
        c2 = self.layer2(self.stem(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        p = self.lat4(c4)
        p = F.interpolate(p, size=c3.shape[-2:], mode="nearest") + self.lat3(c3)
        p = F.interpolate(p, size=c2.shape[-2:], mode="nearest") + self.lat2(c2)
        p = self.fuse(p)
        return self.heat(p), self.offset(p)


# ------------------------------------------------------------------------------------------
# Targets and loss
# ------------------------------------------------------------------------------------------


@dataclass
class DetectorTargets:
    heat: np.ndarray  # (2, h, w) float32 in [0, 1], exactly 1 at centres
    neg_weight: np.ndarray  # (2, h, w) float32 weight of the negative term
    offset: np.ndarray  # (2, h, w) float32 sub-cell offsets at centres
    offset_mask: np.ndarray  # (h, w) float32, 1 at centres
    extra: dict[str, object] = field(default_factory=dict)


def make_targets(
    points: np.ndarray,
    abnormal: np.ndarray,
    out_size: tuple[int, int],
    config: DetectorConfig,
    valid: np.ndarray | None = None,
) -> DetectorTargets:
    """Heatmap targets for one image.

    points: (N, 2) nucleus centres in *network input* pixels; abnormal: (N,) bool;
    out_size: (h, w) of the heatmap; valid: optional (h, w) mask of real (non-padded) pixels.
    """
    h, w = out_size
    stride = config.stride
    sigma = config.sigma_px * config.input_scale / stride  # in heatmap cells
    known_r = config.known_radius_px * config.input_scale / stride
    heat = np.zeros((2, h, w), np.float32)
    neg = np.empty((2, h, w), np.float32)
    neg[CELL] = config.unlabelled_weight
    neg[ABNORMAL] = config.unlabelled_weight_abnormal
    offset = np.zeros((2, h, w), np.float32)
    mask = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for (px, py), is_abn in zip(points, abnormal, strict=True):
        cx, cy = px / stride - 0.5, py / stride - 0.5  # centre in heatmap cell coordinates
        ix, iy = round(cx), round(cy)
        r = math.ceil(max(3 * sigma, known_r)) + 1
        x0, x1, y0, y1 = max(ix - r, 0), min(ix + r + 1, w), max(iy - r, 0), min(iy + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        d2 = (xs[y0:y1, x0:x1] - cx) ** 2 + (ys[y0:y1, x0:x1] - cy) ** 2
        g = np.exp(-d2 / (2 * sigma**2)).astype(np.float32)
        near = d2 <= known_r**2
        neg[CELL, y0:y1, x0:x1][near] = 1.0
        abn_w = 1.0 if is_abn else config.nilm_weight
        region = neg[ABNORMAL, y0:y1, x0:x1]
        region[near] = np.maximum(region[near], abn_w)
        np.maximum(heat[CELL, y0:y1, x0:x1], g, out=heat[CELL, y0:y1, x0:x1])
        if is_abn:
            np.maximum(heat[ABNORMAL, y0:y1, x0:x1], g, out=heat[ABNORMAL, y0:y1, x0:x1])
        if 0 <= ix < w and 0 <= iy < h:
            heat[CELL, iy, ix] = 1.0
            if is_abn:
                heat[ABNORMAL, iy, ix] = 1.0
            offset[:, iy, ix] = (cx - ix, cy - iy)
            mask[iy, ix] = 1.0
    if valid is not None:
        neg *= valid[None].astype(np.float32)
    return DetectorTargets(heat, neg, offset, mask)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, neg_weight: torch.Tensor
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, with a per-pixel weight on the negative term,
    normalised by the number of centres (per channel, then summed)."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    log_p = F.logsigmoid(logits.float())
    log_1mp = F.logsigmoid(-logits.float())
    pos_loss = -((1 - p) ** 2) * log_p * pos
    neg_loss = -((1 - target) ** 4) * p**2 * log_1mp * (1 - pos) * neg_weight
    dims = (0, 2, 3)
    n_pos = pos.sum(dim=dims).clamp(min=1.0)
    return ((pos_loss.sum(dim=dims) + neg_loss.sum(dim=dims)) / n_pos).sum()


def detector_loss(
    heat_logits: torch.Tensor,
    offsets: torch.Tensor,
    heat: torch.Tensor,
    neg_weight: torch.Tensor,
    offset: torch.Tensor,
    offset_mask: torch.Tensor,
    offset_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    hm = focal_loss(heat_logits, heat, neg_weight)
    m = offset_mask.unsqueeze(1)
    off = (torch.abs(offsets.float() - offset) * m).sum() / m.sum().clamp(min=1.0)
    total = hm + offset_weight * off
    return total, {"heatmap": float(hm.detach()), "offset": float(off.detach())}


# ------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peak:
    x: float  # level-0 pixels (after `to_level0`), else network-input pixels
    y: float
    cell_score: float
    abnormal_score: float


def heatmap_peaks(
    scores: torch.Tensor, *, threshold: float, kernel: int = 3, top_k: int = 500
) -> list[torch.Tensor]:
    """Max-pool NMS on a (B, h, w) score map: indices (K, 2) as (row, col) of local maxima
    with score >= threshold, highest first, at most top_k per image."""
    pooled = F.max_pool2d(scores.unsqueeze(1), kernel, stride=1, padding=kernel // 2).squeeze(1)
    keep = (scores == pooled) & (scores >= threshold)
    out = []
    for b in range(scores.shape[0]):
        idx = keep[b].nonzero()
        if idx.shape[0] > 0:
            vals = scores[b][idx[:, 0], idx[:, 1]]
            order = torch.argsort(vals, descending=True)[:top_k]
            idx = idx[order]
        out.append(idx)
    return out


def decode(
    heat_logits: torch.Tensor,
    offsets: torch.Tensor,
    config: DetectorConfig,
    *,
    cell_threshold: float,
    abnormal_threshold: float,
    top_k: int = 500,
) -> list[list[Peak]]:
    """Peaks per image, in network-input pixels, keeping those with a cell score >=
    cell_threshold or an abnormal score >= abnormal_threshold."""
    probs = torch.sigmoid(heat_logits.float())
    combined = probs.max(dim=1).values
    floor = min(cell_threshold, abnormal_threshold)
    peaks = heatmap_peaks(combined, threshold=floor, top_k=top_k)
    result: list[list[Peak]] = []
    s = config.stride
    for b, idx in enumerate(peaks):
        found: list[Peak] = []
        if idx.shape[0]:
            rows, cols = idx[:, 0], idx[:, 1]
            cell = probs[b, CELL, rows, cols].cpu().numpy()
            abn = probs[b, ABNORMAL, rows, cols].cpu().numpy()
            off = offsets[b, :, rows, cols].float().cpu().numpy()
            r_np, c_np = rows.cpu().numpy(), cols.cpu().numpy()
            for i in range(len(r_np)):
                if cell[i] < cell_threshold and abn[i] < abnormal_threshold:
                    continue
                x = (c_np[i] + 0.5 + float(np.clip(off[0, i], -1, 1))) * s
                y = (r_np[i] + 0.5 + float(np.clip(off[1, i], -1, 1))) * s
                found.append(Peak(x, y, float(cell[i]), float(abn[i])))
        result.append(found)
    return result


def point_nms(points: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Indices of points kept after suppressing any point within `radius` of a higher-scoring
    kept point (used to merge detections from overlapping tiles)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    pts = np.asarray(points, np.float64)
    kept: list[int] = []
    suppressed = np.zeros(len(pts), bool)
    r2 = radius * radius
    for i in order:
        if suppressed[i]:
            continue
        kept.append(int(i))
        d2 = ((pts - pts[i]) ** 2).sum(axis=1)
        suppressed |= d2 <= r2
    return np.array(kept, dtype=np.int64)


def normalise(
    batch_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> normalised (B, 3, H, W) float (channels-last memory)."""
    return normalise_nhwc(batch_uint8, mean, std)


def normalise_nhwc(
    batch_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 view of channels-last memory, each value
    (v / 255 - mean[c]) / std[c].

    One float buffer, normalised in place with the per-channel constants repeated along a row
    (an inner dimension of W * C, not C = 3, so the arithmetic vectorises): the same operations
    in the same order as `(x / 255 - mean) / std` on (B, C, H, W), so the same bits, faster on
    the CPU and without two temporary copies of the batch.
    """
    b, h, w, c = batch_uint8.shape
    x = batch_uint8.contiguous().float()
    rows = x.view(b, h, w * c)
    rows.div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).repeat(w)
    sd = torch.tensor(std, dtype=x.dtype, device=x.device).repeat(w)
    rows.sub_(m).div_(sd)
    return x.permute(0, 3, 1, 2)


def build_detector(config: dict[str, object] | DetectorConfig | None = None) -> DetectorNet:
    if isinstance(config, dict):
        config = DetectorConfig.from_dict(config)
    return DetectorNet(config)
