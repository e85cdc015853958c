"""Batch norms folded into their convolutions for inference: the same outputs (to float
rounding) with no BatchNorm pass left, on both networks, and the caller's model untouched."""

from __future__ import annotations

import torch
from torch import nn

from inference.classifier import ClassifierConfig, build_classifier
from inference.detector import DetectorConfig, build_detector
from inference.folding import fold_batch_norms


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters that are not the identity (as after training)."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_networks_give_the_same_outputs() -> None:
    detector = _trained_statistics(build_detector(DetectorConfig(widths=(8, 8, 16, 16), neck=8)))
    classifier = _trained_statistics(build_classifier(ClassifierConfig(crop_px=32)))
    for model, x in (
        (detector, torch.randn(2, 3, 64, 96)),
        (classifier, torch.randn(3, 3, 32, 32)),
    ):
        before = _norms(model)
        folded = fold_batch_norms(model)
        assert before > 0 and _norms(folded) == 0 and _norms(model) == before
        with torch.inference_mode():
            want, got = model(x), folded(x)
        for a, b in zip(
            want if isinstance(want, tuple) else (want,),
            got if isinstance(got, tuple) else (got,),
            strict=True,
        ):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())
