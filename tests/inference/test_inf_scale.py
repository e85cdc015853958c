"""A scale from the images' own nuclei (`inference.scale`, `estimate-scale`, `evaluate --upscale
auto`): synthetic fields whose nuclei have a known diameter, at two magnifications."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as inference_main
from inference.scale import (
    REFERENCE_NUCLEUS_PX,
    ScaleEstimate,
    estimate_batch_scale,
    estimate_scale,
    rescaled,
)
from inference.synthetic import synthetic_field


def field(zoom: float, seed: int = 0) -> np.ndarray:
    """A 640 x 480 field of 30 cells whose nuclei are 12 px across at zoom 1 (random places)."""
    rng = np.random.default_rng(seed)
    w, h = round(640 * zoom), round(480 * zoom)
    cells = [
        (float(rng.uniform(40, 600)) * zoom, float(rng.uniform(40, 440)) * zoom, 6.0 * zoom)
        for _ in range(30)
    ]
    return synthetic_field(w, h, cells=cells, seed=seed)


def test_the_nucleus_size_follows_the_magnification() -> None:
    small, large = estimate_scale(field(1.0)), estimate_scale(field(2.0))
    assert small.nucleus_px is not None and large.nucleus_px is not None
    assert small.nucleus_px == pytest.approx(12.0, rel=0.15)
    assert large.nucleus_px / small.nucleus_px == pytest.approx(2.0, rel=0.1)
    assert small.factor == pytest.approx(REFERENCE_NUCLEUS_PX / small.nucleus_px)
    # a blank field gives no estimate rather than a wild one
    blank = estimate_scale(np.full((200, 200, 3), 235, np.uint8))
    assert blank == ScaleEstimate(None, 0, None)


def test_a_rescaled_field_has_nuclei_of_the_new_size() -> None:
    small = field(1.0)
    assert rescaled(small, 1.0) is small  # nothing to do: no copy, no resampling
    enlarged, shrunk = rescaled(small, 1.77), rescaled(small, 0.5)
    assert enlarged.shape == (850, 1133, 3) and shrunk.shape == (240, 320, 3)
    base, big = estimate_scale(small).nucleus_px, estimate_scale(enlarged).nucleus_px
    assert base is not None and big is not None
    assert big / base == pytest.approx(1.77, rel=0.1)


def test_the_batch_scale_is_the_median_over_the_fields_that_gave_one() -> None:
    fields = [ScaleEstimate(10.0, 9, 2.0), ScaleEstimate(None, 2, None), ScaleEstimate(14.0, 9, 1)]
    batch = estimate_batch_scale(fields, reference_px=24.0)
    assert batch.nucleus_px == 12.0 and batch.nuclei == 2 and batch.factor == 2.0
    assert estimate_batch_scale([ScaleEstimate(None, 0, None)]).factor is None


def test_estimate_scale_and_evaluate_with_upscale_auto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "fields"
    images.mkdir()
    for i in range(3):
        Image.fromarray(field(1.0, seed=i)).save(images / f"f{i}.png")
    assert inference_main(["estimate-scale", str(images)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["fields"]) == 3
    assert printed["batch"]["factor"] == pytest.approx(REFERENCE_NUCLEUS_PX / 12.0, rel=0.15)
    labels = tmp_path / "fields.csv"
    labels.write_text("image_filename,field_label\nf0.png,NILM\nf1.png,abnormal\nf2.png,NILM\n")
    out = tmp_path / "auto.json"
    argv = ["evaluate", "--images", str(images), "--fields", str(labels), "--upscale", "auto"]
    assert inference_main([*argv, "--split", "all", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["upscale"] == pytest.approx(printed["batch"]["factor"], 1e-2)
    with pytest.raises(SystemExit) as refused:
        inference_main(["evaluate", "--images", str(images), "--upscale", "big"])
    assert refused.value.code == 2
    assert "neither a number nor auto" in capsys.readouterr().err
