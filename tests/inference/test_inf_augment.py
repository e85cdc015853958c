"""Training augmentation geometry: the annotated points move with the image. A field (or
patch) holding a single dark dot is warped by the random rotations, scales and flips the
trainers draw; the transformed annotation must land on the warped dot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference import augment
from inference.train import FieldSample
from inference.train.classifier import _augment_crop
from inference.train.detector import _detector_crop


def _dot_image(w: int, h: int, x: int, y: int) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.circle(img, (x, y), 3, (0, 0, 0), -1)
    return img


def _dot_centre(img: np.ndarray) -> np.ndarray:
    """Darkness-weighted centroid (x, y) of the dot."""
    dark = 255.0 - img.astype(np.float64).min(axis=2)
    dark[dark < 64] = 0.0
    ys, xs = np.nonzero(dark)
    assert len(xs), "the dot left the image"
    w = dark[ys, xs]
    return np.array([np.average(xs, weights=w), np.average(ys, weights=w)])


@pytest.mark.parametrize("seed", range(16))
def test_affine_points_follow_the_warp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = _dot_image(160, 120, 100, 40)
    m = augment.random_affine(rng, (80.0, 60.0), max_rotation=180.0, scale=(0.8, 1.25))
    warped = augment.warp(img, m, (160, 120), border=cv2.BORDER_CONSTANT)
    (pt,) = augment.transform_points(np.array([[100.0, 40.0]]), m)
    assert np.hypot(*(_dot_centre(warped) - pt)) < 0.75


def test_affine_draws_flips_and_quarter_turns() -> None:
    rng = np.random.default_rng(0)
    dets = [np.linalg.det(augment.random_affine(rng, (0.0, 0.0))[:, :2]) for _ in range(64)]
    assert any(d < 0 for d in dets) and any(d > 0 for d in dets)  # mirrored and not


def test_detector_crops_carry_their_points_and_valid_mask() -> None:
    img = _dot_image(240, 200, 150, 70)
    sample = FieldSample("dot", img, np.array([[150.0, 70.0]]), ["HSIL"])
    inside = 0
    for seed in range(24):
        crop, pts, abn, valid = _detector_crop(
            sample, 128, np.random.default_rng(seed), augment_photo=False
        )
        assert crop.shape == (128, 128, 3) and valid.shape == (128, 128)
        assert abn.tolist() == [True]
        # outside the field the crop is the white border, and marked invalid
        assert (crop[valid == 0] == 255).all()
        assert valid.any()
        x, y = pts[0]
        if 8 <= x < 120 and 8 <= y < 120:
            inside += 1
            assert np.hypot(*(_dot_centre(crop) - pts[0])) < 0.75, seed
    assert inside >= 8  # half the crops are placed near the abnormal cell


@pytest.mark.parametrize("jitter", [0.0, 6.0])
def test_classifier_crops_keep_the_cell_at_the_centre(
    jitter: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(augment, "photometric", lambda img, _rng: img)  # geometry only
    patch = _dot_image(64, 64, 32, 32)
    for seed in range(12):
        crop = _augment_crop(patch, 40, np.random.default_rng(seed), jitter)
        offset = _dot_centre(crop) - 20.0
        assert (np.abs(offset) <= jitter + 0.75).all(), (seed, offset)


def test_grey_is_monochrome_in_three_channels_and_a_share_of_samples_get_it() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    for _ in range(4):  # luminance or a random channel mix
        grey = augment.to_grey(img, rng)
        assert grey.shape == img.shape and grey.dtype == np.uint8
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200  # pure red: jitter keeps it coloured unless made grey
    mono = 0
    for seed in range(400):
        out = augment.photometric(colour, np.random.default_rng(seed)).astype(int)
        mono += int(np.abs(out[..., 0] - out[..., 2]).max() <= 3)
    assert 0.1 < mono / 400 < 0.3  # GREY_P = 0.2
