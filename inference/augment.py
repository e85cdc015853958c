"""Image augmentation for training (numpy + OpenCV, no torch): geometry, stain/colour, blur.

Pap smears vary in stain intensity and hue between labs and slides, cells lie in any
orientation, and focus varies: every transform here mirrors one of those.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB); for Papanicolaou this is only an
# approximate colour basis, used to perturb stain amounts rather than to separate stains.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """Scale and shift each stain's optical density (Tellez et al. style HED augmentation)."""
    od = -np.log((img.astype(np.float32) + 1.0) / 256.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3).astype(np.float32)
    beta = rng.uniform(-sigma, sigma, size=3).astype(np.float32)
    hed = hed * alpha + beta * np.abs(hed).mean(axis=0, keepdims=True).clip(0.05, None)
    rgb = np.exp(-(hed @ _RGB_FROM_HED)) * 256.0 - 1.0
    return np.clip(rgb, 0, 255).reshape(img.shape).astype(np.uint8)


def hsv_jitter(
    img: np.ndarray,
    rng: np.random.Generator,
    hue: float = 0.04,
    saturation: float = 0.25,
    value: float = 0.2,
) -> np.ndarray:
    """Shift hue (fraction of the circle) and scale saturation/value."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 180.0) % 180.0
    hsv[..., 1] *= rng.uniform(1 - saturation, 1 + saturation)
    hsv[..., 2] *= rng.uniform(1 - value, 1 + value)
    hsv = np.clip(hsv, 0, [179, 255, 255])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def contrast_gamma(img: np.ndarray, rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    gamma = math.exp(rng.uniform(-strength, strength))
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lut[img]


def blur_or_sharpen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.25:
        return cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.4, 1.4)))
    if r < 0.35:
        soft = cv2.GaussianBlur(img, (0, 0), sigmaX=1.0)
        amount = float(rng.uniform(0.2, 0.6))
        return cv2.addWeighted(img, 1 + amount, soft, -amount, 0)
    return img


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    if rng.random() >= p:
        return img
    noise = rng.normal(0.0, rng.uniform(1.0, 5.0), size=img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def to_grey(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Monochrome in all three channels, as a grey camera or an extended-depth-of-field
    composite gives a field: luminance, or a random mix of the channels (another filter)."""
    if rng.random() < 0.5:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
    else:
        weights = rng.dirichlet((2.0, 2.0, 2.0)).astype(np.float32)
    grey = np.clip(img.astype(np.float32) @ weights, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


GREY_P = 0.2  # share of training samples made monochrome


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain/colour jitter (HED or HSV), contrast, blur/sharpen, noise; a share made grey
    (without it stage 1 finds half the nuclei of a monochrome field)."""
    out = hed_jitter(img, rng) if rng.random() < 0.5 else hsv_jitter(img, rng)
    if rng.random() < GREY_P:
        out = to_grey(out, rng)
    if rng.random() < 0.5:
        out = contrast_gamma(out, rng)
    out = blur_or_sharpen(out, rng)
    return gaussian_noise(out, rng)


def random_affine(
    rng: np.random.Generator,
    centre: tuple[float, float],
    *,
    max_rotation: float = 180.0,
    scale: tuple[float, float] = (0.85, 1.15),
    flip: bool = True,
) -> np.ndarray:
    """A 2x3 matrix: rotation about `centre` (any multiple of 90 degrees plus a small angle when
    max_rotation < 45), isotropic scale and an optional horizontal flip."""
    if max_rotation >= 180:
        angle = rng.uniform(-180.0, 180.0)
    else:
        angle = 90.0 * int(rng.integers(0, 4)) + rng.uniform(-max_rotation, max_rotation)
    s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    m = cv2.getRotationMatrix2D(centre, angle, s)
    if flip and rng.random() < 0.5:
        cx = centre[0]
        f = np.array([[-1.0, 0.0, 2 * cx], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = m @ f
    return m.astype(np.float64)


def warp(
    img: np.ndarray,
    m: np.ndarray,
    size: tuple[int, int],
    *,
    border: int = cv2.BORDER_REFLECT_101,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp with a 2x3 matrix; a constant border is white (the slide background) in every
    channel (a bare 255 would fill only the first channel: red)."""
    white = (255, 255, 255, 255)
    return cv2.warpAffine(img, m, size, flags=interpolation, borderMode=border, borderValue=white)


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return points.reshape(0, 2)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]
