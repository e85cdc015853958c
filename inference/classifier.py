"""Stage 2: a small ResNet-style CNN that classifies a full-resolution crop centred on a nucleus
into the six Bethesda classes, plus temperature scaling for calibrated probabilities.

The crop is `crop_px` level-0 pixels square (when the model's and the slide's microns per pixel
are known, `crop_um = crop_px * model_mpp` fixes its physical size instead). The four-class view
(NILM, LSIL, HSIL, SCC) is derived from the six-class probabilities with `TO_FOUR_CLASS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DictConfig
from .detector import normalise_nhwc
from .types import BETHESDA_CLASSES, FOUR_CLASSES, STAGE2_CLASSES, TO_FOUR_CLASS


@dataclass(frozen=True)
class ClassifierConfig(DictConfig):
    crop_px: int = 112  # crop side at level 0 (and network input side)
    widths: tuple[int, int, int, int] = (24, 32, 64, 128)
    dropout: float = 0.2
    mean: tuple[float, float, float] = (0.70, 0.66, 0.74)
    std: tuple[float, float, float] = (0.20, 0.22, 0.18)
    members: int = 1  # > 1: an ensemble of that many such networks (`ClassifierEnsemble`)
    # a seventh output, NOT_A_CELL, after the six Bethesda classes (`stage2_classes`)
    not_a_cell: bool = False


def stage2_classes(config: ClassifierConfig) -> tuple[str, ...]:
    """The classifier's outputs, in order: the six Bethesda classes, then NOT_A_CELL if it has
    that outcome."""
    return STAGE2_CLASSES if config.not_a_cell else BETHESDA_CLASSES


def bethesda_truth(labels: np.ndarray) -> list[str]:
    """Training label indices (`STAGE2_CLASSES`) as the Bethesda codes reports score them: not
    a cell is negative for a lesion (NILM)."""
    return [BETHESDA_CLASSES[i] if i < len(BETHESDA_CLASSES) else "NILM" for i in labels]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(self.short(x) + y, inplace=True)


class CellClassifier(nn.Module):
    """stem (/4) -> 3 residual stages (/4, /8, /16) -> global average pool -> linear."""

    def __init__(self, config: ClassifierConfig | None = None, num_classes: int = 6) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        w0, w1, w2, w3 = self.config.widths
        self.stem = nn.Sequential(_conv_bn(3, w0, 2), _conv_bn(w0, w1, 2))
        self.stage1 = BasicBlock(w1, w1)
        self.stage2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.stage3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))
        self.drop = nn.Dropout(self.config.dropout)
        self.fc = nn.Linear(w3, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x)))


class ClassifierEnsemble(nn.Module):
    """`config.members` networks of one architecture, trained apart (other seeds, other data
    order): their logits are averaged, so that errors one member makes and the others do not
    average out. Built by `python -m inference ensemble-classifiers` (`inference.ensemble`)."""

    def __init__(self, config: ClassifierConfig, num_classes: int = 6) -> None:
        super().__init__()
        self.config = config
        single = replace(config, members=1)
        self.members = nn.ModuleList(
            CellClassifier(single, num_classes) for _ in range(config.members)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


# Stage 2: one network or an ensemble of them (same input, same output).
Classifier = CellClassifier | ClassifierEnsemble


def build_classifier(config: dict[str, object] | ClassifierConfig | None = None) -> Classifier:
    if isinstance(config, dict):
        config = ClassifierConfig.from_dict(config)
    config = config or ClassifierConfig()
    classes = len(stage2_classes(config))
    if config.members > 1:
        return ClassifierEnsemble(config, num_classes=classes)
    return CellClassifier(config, num_classes=classes)


def widen_to_not_a_cell(model: CellClassifier, six_class: dict[str, torch.Tensor]) -> None:
    """Start a NOT_A_CELL model from a six-class one's weights: everything is copied, and the
    new output starts as a copy of NILM's (what such objects were taught as before), so the
    first steps of fine-tuning only have to pull the two apart."""
    weights = dict(six_class)
    fc_w, fc_b = weights.pop("fc.weight"), weights.pop("fc.bias")
    model.load_state_dict(weights, strict=False)
    nilm = BETHESDA_CLASSES.index("NILM")
    with torch.no_grad():
        model.fc.weight.copy_(torch.cat([fc_w, fc_w[nilm : nilm + 1]]))
        model.fc.bias.copy_(torch.cat([fc_b, fc_b[nilm : nilm + 1]]))


# ------------------------------------------------------------------------------------------
# Calibration and class views
# ------------------------------------------------------------------------------------------


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al., 2017)."""
    logits = logits.detach().float()
    labels = labels.detach().long()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    return float(np.clip(t, 0.05, 20.0))


def four_class_probs(probs6: np.ndarray) -> np.ndarray:
    """(N, 6) probabilities in BETHESDA_CLASSES order -> (N, 4) in FOUR_CLASSES order."""
    out = np.zeros((probs6.shape[0], len(FOUR_CLASSES)), dtype=np.float64)
    for i, code in enumerate(BETHESDA_CLASSES):
        out[:, FOUR_CLASSES.index(TO_FOUR_CLASS[code])] += probs6[:, i]
    return out


def abnormal_probability(probs6: np.ndarray) -> np.ndarray:
    """P(any abnormal class) = 1 - P(NILM)."""
    return 1.0 - probs6[:, BETHESDA_CLASSES.index("NILM")]


def fold_not_a_cell(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 6 or 7) stage 2 probabilities -> (the six Bethesda classes with NOT_A_CELL's mass
    added to NILM's, P(not a cell) or None). Not a cell is negative for a lesion, so every
    decision on P(abnormal) (thresholds, fusion, AUC) reads the folded probabilities."""
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == len(BETHESDA_CLASSES):
        return probs, None
    p_not_cell = probs[:, len(BETHESDA_CLASSES)]
    folded = probs[:, : len(BETHESDA_CLASSES)].copy()
    folded[:, BETHESDA_CLASSES.index("NILM")] += p_not_cell
    return folded, p_not_cell


def not_a_cell_mask(
    probs: np.ndarray, p_not_cell: np.ndarray | None, labels: Sequence[str]
) -> np.ndarray | None:
    """True where a crop is set aside as not a cell: decided NILM (not abnormal), and stage 2
    finds not a cell likelier than a NILM cell (`probs` unfolded, stage 2's own split)."""
    if p_not_cell is None:
        return None
    nilm = np.asarray(probs, np.float64)[:, BETHESDA_CLASSES.index("NILM")]
    return np.array([lab == "NILM" for lab in labels], bool) & (p_not_cell > nilm)


def decide_labels(probs6: np.ndarray, abnormal_threshold: float) -> list[str]:
    """NILM when P(abnormal) < threshold, else the most probable abnormal class.

    With threshold 0.5 this differs from argmax only when NILM is below 0.5 yet the largest
    class; the threshold itself is chosen on validation for high abnormal sensitivity.
    """
    p_abn = abnormal_probability(probs6)
    labels: list[str] = []
    for row, pa in zip(probs6, p_abn, strict=True):
        if pa < abnormal_threshold:
            labels.append("NILM")
        else:
            labels.append(BETHESDA_CLASSES[1 + int(np.argmax(row[1:]))])
    return labels


def argmax_labels(probs6: np.ndarray) -> list[str]:
    """The most probable class of each row (the plain rule, no sensitivity-first threshold)."""
    return [BETHESDA_CLASSES[int(i)] for i in np.asarray(probs6).argmax(1)] if len(probs6) else []


def normalise_crops(
    crops_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float (channels-last memory)."""
    return normalise_nhwc(crops_uint8, mean, std)


# The dihedral group of the square, on (N, C, H, W) batches: cells have no orientation, so a
# crop and its flips/rotations must get the same call. Ordered so the first 2 and first 4 views
# are also closed sets of views (identity + flip; the four flips), averaged for test-time
# augmentation.
_DIHEDRAL: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    lambda x: x,
    lambda x: x.flip(3),
    lambda x: x.flip(2),
    lambda x: x.flip(2, 3),
    lambda x: x.transpose(2, 3),
    lambda x: x.transpose(2, 3).flip(3),
    lambda x: x.transpose(2, 3).flip(2),
    lambda x: x.transpose(2, 3).flip(2, 3),
)
TTA_VIEW_COUNTS = (1, 2, 4, 8)


def dihedral_mean_logits(model: nn.Module, x: torch.Tensor, views: int = 1) -> torch.Tensor:
    """Mean logits over the first `views` dihedral views of normalised crops x (N, 3, H, W)."""
    if views not in TTA_VIEW_COUNTS:
        raise ValueError(f"views must be one of {TTA_VIEW_COUNTS}, got {views!r}")
    total = model(x).float()
    for view in _DIHEDRAL[1:views]:
        total = total + model(view(x).contiguous(memory_format=torch.channels_last)).float()
    return total / views
