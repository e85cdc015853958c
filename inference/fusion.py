"""Late fusion of the two stages' abnormality evidence, fitted on validation.

Stage 1's abnormal heatmap sees a wide context around each nucleus; stage 2 sees the cell at
full resolution. A logistic model on their logits,

    P(abnormal) = sigmoid(a * logit(1 - P2(NILM)) + b * logit(s1) + c),

is fitted on validation cells (matched detections), and the six-class probabilities are rescaled
so that NILM = 1 - P(abnormal) and the abnormal classes keep stage 2's proportions. It is only
applied with the detector version it was fitted with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .types import BETHESDA_CLASSES

_NILM = BETHESDA_CLASSES.index("NILM")
_EPS = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


@dataclass(frozen=True)
class Fusion:
    w_classifier: float
    w_detector: float
    bias: float
    detector_version: str
    abnormal_threshold: float
    # The threshold's rule: None, sensitivity >= 0.95 on matched validation cells; a number, at
    # most that many abnormal calls per validation field far from every marked cell.
    far_budget: float | None = None

    def p_abnormal(self, p2_abnormal: np.ndarray, s1: np.ndarray) -> np.ndarray:
        z = self.w_classifier * logit(p2_abnormal) + self.w_detector * logit(s1) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def apply(self, probs6: np.ndarray, s1: np.ndarray) -> np.ndarray:
        """Six-class probabilities with the fused P(abnormal); rows still sum to 1."""
        probs6 = np.asarray(probs6, np.float64)
        p_abn = self.p_abnormal(1.0 - probs6[:, _NILM], np.asarray(s1, np.float64))
        abn = np.delete(probs6, _NILM, axis=1)
        abn = abn / np.clip(abn.sum(axis=1, keepdims=True), 1e-12, None)
        out = np.empty_like(probs6)
        out[:, _NILM] = 1.0 - p_abn
        out[:, [i for i in range(len(BETHESDA_CLASSES)) if i != _NILM]] = abn * p_abn[:, None]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "w_classifier": self.w_classifier,
            "w_detector": self.w_detector,
            "bias": self.bias,
            "detector_version": self.detector_version,
            "abnormal_threshold": self.abnormal_threshold,
            "far_budget": self.far_budget,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fusion:
        return cls(
            float(d["w_classifier"]),
            float(d["w_detector"]),
            float(d["bias"]),
            str(d["detector_version"]),
            float(d["abnormal_threshold"]),
            None if d.get("far_budget") is None else float(d["far_budget"]),
        )


def fit_fusion(
    p2_abnormal: np.ndarray, s1: np.ndarray, is_abnormal: np.ndarray, l2: float = 1e-3
) -> tuple[float, float, float]:
    """Logistic regression (Newton steps, light L2) of is_abnormal on the two logits."""
    X = np.stack([logit(p2_abnormal), logit(s1), np.ones(len(s1))], axis=1)
    y = np.asarray(is_abnormal, np.float64)
    w = np.array([1.0, 0.0, 0.0])
    reg = np.diag([l2, l2, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + reg @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1]), float(w[2])
