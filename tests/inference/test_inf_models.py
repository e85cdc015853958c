"""Stage 1 targets, decoding and NMS; stage 2 calibration and class views; short training runs
on synthetic data that lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.classifier import (
    CellClassifier,
    ClassifierConfig,
    abnormal_probability,
    build_classifier,
    decide_labels,
    fit_temperature,
    four_class_probs,
)
from inference.detector import (
    ABNORMAL,
    CELL,
    DetectorConfig,
    build_detector,
    decode,
    detector_loss,
    focal_loss,
    heatmap_peaks,
    make_targets,
    point_nms,
)
from inference.synthetic import synthetic_field
from inference.train import (
    CellPatches,
    FieldSample,
    choose_abnormal_threshold,
    extract_patches,
    train_classifier,
    train_detector,
)
from inference.types import BETHESDA_CLASSES

SMALL_DET = DetectorConfig(widths=(8, 16, 16, 24), neck=16)


def test_targets_peak_at_centres_and_weights() -> None:
    cfg = DetectorConfig()  # input scale 0.5, stride 4: 8 level-0 px per heatmap cell
    pts = np.array([[34.0, 18.0], [90.0, 90.0]])  # network-input pixels
    t = make_targets(pts, np.array([True, False]), (32, 32), cfg)
    # centre (34, 18) / 4 - 0.5 = (8.0, 4.0)
    assert t.heat[CELL, 4, 8] == 1.0 and t.heat[ABNORMAL, 4, 8] == 1.0
    iy, ix = round(90 / 4 - 0.5), round(90 / 4 - 0.5)
    assert t.heat[CELL, iy, ix] == 1.0
    assert t.heat[ABNORMAL, iy, ix] < 0.01  # NILM: no abnormal peak
    assert t.neg_weight[ABNORMAL, iy, ix] == cfg.nilm_weight  # a definite abnormal negative
    assert t.neg_weight[CELL, 4, 8] == 1.0  # known area around a labelled cell
    assert t.neg_weight[CELL, 31, 0] == pytest.approx(cfg.unlabelled_weight)  # unknown area
    assert t.offset_mask.sum() == 2
    assert np.allclose(t.offset[:, 4, 8], 0.0)
    assert (t.heat <= 1).all() and (t.heat >= 0).all()


def test_heatmap_peaks_nms_and_threshold() -> None:
    s = torch.zeros(1, 10, 10)
    s[0, 2, 2] = 0.9
    s[0, 2, 3] = 0.8  # neighbour of a higher peak: suppressed
    s[0, 7, 7] = 0.6
    s[0, 5, 0] = 0.2  # below threshold
    idx = heatmap_peaks(s, threshold=0.5)[0]
    assert idx.tolist() == [[2, 2], [7, 7]]
    assert heatmap_peaks(s, threshold=0.5, top_k=1)[0].tolist() == [[2, 2]]


def test_decode_positions_and_scores() -> None:
    cfg = DetectorConfig()
    logits = torch.full((1, 2, 8, 8), -8.0)
    logits[0, CELL, 3, 5] = 3.0
    logits[0, ABNORMAL, 3, 5] = 1.0
    logits[0, CELL, 6, 1] = -1.0  # p = 0.27: kept only by a low cell threshold
    offsets = torch.zeros(1, 2, 8, 8)
    offsets[0, 0, 3, 5] = 0.25
    peaks = decode(logits, offsets, cfg, cell_threshold=0.5, abnormal_threshold=0.5)[0]
    assert len(peaks) == 1
    p = peaks[0]
    assert p.x == pytest.approx((5 + 0.5 + 0.25) * 4) and p.y == pytest.approx((3 + 0.5) * 4)
    assert p.cell_score == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert p.abnormal_score == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert len(decode(logits, offsets, cfg, cell_threshold=0.2, abnormal_threshold=0.9)[0]) == 2


def test_point_nms_merges_close_points() -> None:
    pts = np.array([[0, 0], [5, 0], [50, 50], [53, 50]], float)
    keep = point_nms(pts, np.array([0.5, 0.9, 0.3, 0.2]), radius=10)
    assert sorted(keep.tolist()) == [1, 2]


def test_focal_loss_prefers_correct_heatmaps() -> None:
    target = torch.zeros(1, 2, 8, 8)
    target[0, :, 4, 4] = 1.0
    w = torch.ones_like(target)
    good = torch.full_like(target, -6.0)
    good[0, :, 4, 4] = 6.0
    bad = -good
    assert focal_loss(good, target, w) < focal_loss(bad, target, w)
    # unlabelled (zero-weight) negatives cost nothing
    assert focal_loss(bad, target, torch.zeros_like(w)) < focal_loss(bad, target, w)


def _synthetic_fields(n: int, size: int = 192, seed: int = 0) -> list[FieldSample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cells = [(float(x), float(y), 6.0) for x, y in rng.uniform(20, size - 20, (5, 2))]
        img = synthetic_field(size, size, cells=cells, seed=i)
        labels = ["HSIL" if k % 2 else "NILM" for k in range(len(cells))]
        pts = np.array([(x, y) for x, y, _ in cells])
        out.append(FieldSample(f"f{i}.png", img, pts, labels, 1.0))
    return out


def test_short_detector_training_lowers_the_loss() -> None:
    torch.set_num_threads(2)
    fields = _synthetic_fields(6)
    res = train_detector(
        fields,
        fields[:2],
        config=SMALL_DET,
        epochs=6,
        crops_per_image=4,
        crop_size=96,
        batch_size=8,
        lr=5e-3,
        seed=0,
        log=lambda _m: None,
    )
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(res.thresholds) == {"cell", "abnormal"}
    assert 1 <= res.best_epoch <= 6


def test_short_classifier_training_lowers_the_loss() -> None:
    torch.set_num_threads(2)
    fields = _synthetic_fields(8, seed=1)
    # make the HSIL cells larger and darker so the task is learnable
    for f in fields:
        cells = [
            (x, y, 10.0 if lab == "HSIL" else 4.0)
            for (x, y), lab in zip(f.points, f.labels, strict=True)
        ]
        f.image = synthetic_field(192, 192, cells=cells, seed=3)
    patches = extract_patches(fields, 48)
    assert patches.images.shape[1:] == (48, 48, 3)
    cfg = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16), dropout=0.0)
    res = train_classifier(
        patches,
        patches,
        config=cfg,
        epochs=5,
        samples_per_epoch=128,
        batch_size=32,
        lr=5e-3,
        seed=0,
        log=lambda _m: None,
    )
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0], losses
    assert res.temperature > 0
    assert 0 < res.abnormal_threshold <= 0.5
    assert (
        res.val_metrics["calibration"]["nll_after"]
        <= res.val_metrics["calibration"]["nll_before"] + 1e-6
    )


def test_temperature_scaling_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(0, 3, (4000, 6))).float()
    true_t = 2.5
    p = torch.softmax(z / true_t, 1)
    y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(0)).squeeze(1)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.1)


def test_class_views_and_decision() -> None:
    probs = np.array(
        [
            [0.70, 0.10, 0.05, 0.05, 0.05, 0.05],  # P(abn) = 0.30
            [0.30, 0.05, 0.05, 0.10, 0.45, 0.05],
        ]
    )
    four = four_class_probs(probs)
    assert four.shape == (2, 4) and np.allclose(four.sum(1), 1.0)
    assert four[0].tolist() == pytest.approx([0.70, 0.15, 0.10, 0.05])
    assert abnormal_probability(probs).tolist() == pytest.approx([0.30, 0.70])
    assert decide_labels(probs, 0.5) == ["NILM", "HSIL"]
    assert decide_labels(probs, 0.25) == ["ASC-US", "HSIL"]
    scores = np.linspace(0.01, 1.0, 100)
    thr = choose_abnormal_threshold(scores, np.ones(100, bool), 0.95)
    assert (scores >= thr).mean() >= 0.95


def test_models_are_small_and_fully_convolutional() -> None:
    det = build_detector(DetectorConfig()).eval()
    cls = build_classifier(ClassifierConfig())
    assert isinstance(cls, CellClassifier)  # one network unless members > 1
    n_det = sum(p.numel() for p in det.parameters())
    n_cls = sum(p.numel() for p in cls.parameters())
    assert 100_000 < n_det < 3_000_000 and 100_000 < n_cls < 3_000_000
    with torch.inference_mode():
        for h, w in ((64, 96), (160, 128)):
            heat, off = det(torch.zeros(1, 3, h, w))
            assert heat.shape == (1, 2, h // 4, w // 4) and off.shape == heat.shape
    assert len(BETHESDA_CLASSES) == cls.fc.out_features
    assert isinstance(
        CellPatches(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64)), CellPatches
    )
    loss, parts = detector_loss(
        torch.zeros(1, 2, 4, 4),
        torch.zeros(1, 2, 4, 4),
        torch.zeros(1, 2, 4, 4),
        torch.ones(1, 2, 4, 4),
        torch.zeros(1, 2, 4, 4),
        torch.zeros(1, 4, 4),
    )
    assert torch.isfinite(loss) and set(parts) == {"heatmap", "offset"}


def test_fusion_fit_and_apply() -> None:
    from inference.fusion import Fusion, fit_fusion, logit

    rng = np.random.default_rng(0)
    n = 4000
    z2, z1 = rng.normal(0, 2, n), rng.normal(0, 2, n)
    true = 1 / (1 + np.exp(-(0.5 * z2 + 1.5 * z1 - 0.3)))
    y = rng.random(n) < true
    p2, s1 = 1 / (1 + np.exp(-z2)), 1 / (1 + np.exp(-z1))
    a, b, c = fit_fusion(p2, s1, y)
    assert a == pytest.approx(0.5, abs=0.15) and b == pytest.approx(1.5, abs=0.2)
    assert c == pytest.approx(-0.3, abs=0.2)
    fusion = Fusion(a, b, c, "det-v", 0.5)
    probs = np.array([[0.7, 0.1, 0.1, 0.0, 0.1, 0.0], [0.1, 0.0, 0.0, 0.0, 0.6, 0.3]])
    out = fusion.apply(probs, np.array([0.9, 0.05]))
    assert np.allclose(out.sum(1), 1.0)
    # abnormal classes keep stage 2's proportions
    assert out[1, 4] / out[1, 5] == pytest.approx(2.0)
    # a higher stage-1 score raises P(abnormal)
    lo = fusion.apply(probs[:1], np.array([0.1]))[0, 0]
    hi = fusion.apply(probs[:1], np.array([0.9]))[0, 0]
    assert hi < lo  # NILM probability falls
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_test_time_views_make_the_call_orientation_free() -> None:
    from inference.classifier import dihedral_mean_logits

    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(widths=(8, 8, 16, 16), crop_px=32)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        one = dihedral_mean_logits(model, x, 1)
        assert torch.allclose(one, model(x))
        # a plain model is not flip-invariant; the four flips are a closed set, all eight
        # views close under rotation as well
        assert not torch.allclose(model(x.flip(3)), one, atol=1e-4)
        four = dihedral_mean_logits(model, x, 4)
        assert torch.allclose(dihedral_mean_logits(model, x.flip(3), 4), four, atol=1e-5)
        assert torch.allclose(dihedral_mean_logits(model, x.flip(2), 4), four, atol=1e-5)
        eight = dihedral_mean_logits(model, x, 8)
        rotated = x.transpose(2, 3).flip(3)  # 90 degrees
        assert torch.allclose(dihedral_mean_logits(model, rotated, 8), eight, atol=1e-5)
        assert not torch.allclose(dihedral_mean_logits(model, rotated, 4), four, atol=1e-4)
    with pytest.raises(ValueError, match="views must be one of"):
        dihedral_mean_logits(model, x, 3)


def test_weight_average_keeps_the_moving_average_of_weights_and_batchnorm_statistics() -> None:
    from inference.train.engine import WeightAverage, keep_best

    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    raw = WeightAverage(model, None)
    assert raw.kept is model
    average = WeightAverage(model, 0.9)
    weight, stats = model.state_dict()["0.weight"], model.state_dict()["1.running_mean"]

    def value(module: torch.nn.Module, key: str) -> float:
        return float(module.state_dict()[key])

    with torch.no_grad():
        weight.fill_(1.0)
        stats.fill_(2.0)
        average.update()  # the first update copies
        weight.fill_(3.0)
        stats.fill_(4.0)
        average.update()  # n = 1: decay ramps up, min(0.9, 2 / 11)
        d = 2 / 11
        kept = average.kept
        assert value(kept, "0.weight") == pytest.approx(1.0 * d + 3.0 * (1 - d))
        assert value(kept, "1.running_mean") == pytest.approx(2.0 * d + 4.0 * (1 - d))
        for _ in range(200):  # the ramp ends at the configured decay
            average.update()
        assert value(kept, "0.weight") == pytest.approx(3.0, abs=1e-6)
        weight.fill_(5.0)
        average.update()
        assert value(kept, "0.weight") == pytest.approx(0.9 * 3.0 + 0.1 * 5.0)
    # without validation the averaged weights, not the raw last ones, end in the model
    assert keep_best(model, kept, None, -1, [{}, {}]) == 2
    assert value(model, "0.weight") == pytest.approx(value(kept, "0.weight"))
    assert value(model, "0.weight") != pytest.approx(5.0)
