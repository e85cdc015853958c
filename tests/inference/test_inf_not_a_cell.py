"""Stage 2's not-a-cell outcome: a candidate not called abnormal that the classifier finds
likelier no cell than a NILM cell is set aside (not reported, counted), never an abnormal call;
evaluation still scores it as the NILM call it is; a six-class classifier widens into one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.classifier import (
    CellClassifier,
    ClassifierConfig,
    abnormal_probability,
    build_classifier,
    fold_not_a_cell,
    not_a_cell_mask,
    stage2_classes,
    widen_to_not_a_cell,
)
from inference.data.cric import AnnotatedImage, CellsTable
from inference.detector import DetectorConfig
from inference.evaluation import analyse_annotated
from inference.pipeline import Pipeline
from inference.synthetic import synthetic_field
from inference.types import BETHESDA_CLASSES, NOT_A_CELL
from tests.inference.test_inf_pipeline import DarkSpotDetector

NUCLEI = [(60.0 + 110 * i, 70.0 + 120 * j, 10.0) for i in range(4) for j in range(3)]


def test_folding_keeps_p_abnormal_and_marks_only_what_is_not_called_abnormal() -> None:
    # columns: NILM, ASC-US, LSIL, ASC-H, HSIL, SCC, not a cell
    probs = np.array(
        [
            [0.10, 0.0, 0.0, 0.0, 0.0, 0.05, 0.85],  # debris: not abnormal, set aside
            [0.60, 0.0, 0.1, 0.0, 0.0, 0.00, 0.30],  # a NILM cell
            [0.00, 0.0, 0.0, 0.0, 0.3, 0.00, 0.70],  # likeliest not a cell, yet P(abn) 0.3
        ]
    )
    folded, p_not_cell = fold_not_a_cell(probs)
    assert folded.shape == (3, 6) and np.allclose(folded.sum(1), 1.0)
    assert np.allclose(abnormal_probability(folded), [0.05, 0.1, 0.3])
    assert p_not_cell is not None and np.allclose(p_not_cell, [0.85, 0.30, 0.70])
    labels = ["NILM", "NILM", "HSIL"]  # at a P(abnormal) threshold of 0.2
    mask = not_a_cell_mask(probs, p_not_cell, labels)
    assert mask is not None and mask.tolist() == [True, False, False]
    six = probs[:, :6] / probs[:, :6].sum(1, keepdims=True)
    assert fold_not_a_cell(six)[1] is None and not_a_cell_mask(six, None, labels) is None


def test_a_six_class_classifier_widens_with_not_a_cell_starting_as_nilm() -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16))
    six = build_classifier(config).eval()
    wide = build_classifier(dataclasses.replace(config, not_a_cell=True))
    assert isinstance(wide, CellClassifier)
    assert stage2_classes(wide.config) == (*BETHESDA_CLASSES, NOT_A_CELL)
    widen_to_not_a_cell(wide, six.state_dict())
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        a, b = six(x), wide.eval()(x)
    assert b.shape == (4, 7)
    assert torch.allclose(b[:, :6], a) and torch.allclose(b[:, 6], a[:, 0])


def _pipeline(bias: dict[str, float]) -> Pipeline:
    """Fake stage 1 (dark blobs) and a not-a-cell classifier whose calls its biases decide."""
    torch.manual_seed(0)
    det = DarkSpotDetector(DetectorConfig(widths=(8, 8, 8, 8), neck=8))
    cls = build_classifier(ClassifierConfig(crop_px=32, widths=(8, 8, 16, 16), not_a_cell=True))
    assert isinstance(cls, CellClassifier)
    with torch.no_grad():
        cls.fc.weight.zero_()
        cls.fc.bias.copy_(torch.tensor([bias.get(c, 0.0) for c in stage2_classes(cls.config)]))
    meta_d = {"version": "fake-detector", "thresholds": {"cell": 0.5, "abnormal": 0.5}}
    meta_c = {"version": "nc-classifier", "temperature": 1.0, "abnormal_threshold": 0.5}
    return Pipeline(det, meta_d, cls, meta_c, device="cpu")


@pytest.fixture
def field_png(tmp_path: Path) -> Path:
    path = tmp_path / "field.png"
    Image.fromarray(synthetic_field(480, 400, cells=NUCLEI, seed=3)).save(path)
    return path


def test_candidates_judged_not_cells_are_set_aside_counted_and_scored_as_nilm(
    field_png: Path,
) -> None:
    pipeline = _pipeline({NOT_A_CELL: 4.0, "NILM": 1.0})
    assert pipeline.operating_point["not_a_cell"] is True
    res = pipeline.analyse(field_png)
    assert res.cells == [] and len(res.set_aside) == len(NUCLEI)
    assert res.candidates == res.set_aside
    for call in res.set_aside:  # what evaluation scores: a NILM call, folded probabilities
        assert call.label == "NILM"
        assert sum(call.probabilities.values()) == pytest.approx(1.0)
        assert call.probabilities["NILM"] > 0.9
    # evaluation counts them and scores each as a NILM call
    table = CellsTable(field_png.parent, {field_png.name: AnnotatedImage(field_png.name)})
    (scored,), _ = analyse_annotated(pipeline, table, [field_png.name])
    assert scored.extra["set_aside"] == len(NUCLEI)
    assert scored.pred_labels == ["NILM"] * len(NUCLEI) and len(scored.pred_xy) == len(NUCLEI)


def test_an_abnormal_call_is_never_set_aside(field_png: Path) -> None:
    # not a cell is stage 2's likeliest outcome, but P(abnormal) 0.58 is over the threshold
    pipeline = _pipeline({NOT_A_CELL: 2.0, "HSIL": 1.7, "SCC": 1.0})
    res = pipeline.analyse(field_png)
    assert res.set_aside == [] and len(res.cells) == len(NUCLEI)
    assert {c.label for c in res.cells} == {"HSIL"}
    crops = np.zeros((3, 32, 32, 3), np.uint8)
    calls = pipeline.classify_crops(crops)
    assert calls.labels == ["HSIL"] * 3 and calls.not_cell is not None and not calls.not_cell.any()
    assert calls.probabilities.shape == (3, 6)
