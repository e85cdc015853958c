"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from inference.metrics import (
    ImageEval,
    binary_report,
    check_targets,
    classification_metrics,
    confusion_matrix,
    detection_metrics,
    match_points,
    report_from_confusion,
    roc_auc,
)


def test_match_points_one_to_one_closest_first() -> None:
    pred = np.array([[0, 0], [10, 0], [100, 100]], float)
    gt = np.array([[3, 0], [12, 0], [300, 300]], float)
    # pred 1 is 2 px from gt 1 and 7 px from gt 0; pred 0 is 3 px from gt 0
    assert match_points(pred, gt, radius=20) == [(0, 0), (1, 1)]
    # a single prediction between two annotations takes the closer one only
    assert match_points(np.array([[9.0, 0.0]]), gt[:2], radius=20) == [(0, 1)]
    assert match_points(np.zeros((0, 2)), gt, radius=20) == []
    assert match_points(pred, gt, radius=1) == []


def test_confusion_and_per_class_by_hand() -> None:
    classes = ["A", "B", "C"]
    y_true = ["A", "A", "A", "B", "B", "C"]
    y_pred = ["A", "A", "B", "B", "C", "C"]
    cm = confusion_matrix(y_true, y_pred, classes)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rep = report_from_confusion(cm, classes)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (rep["per_class"][k] for k in classes)
    assert a["sensitivity"] == pytest.approx(2 / 3)
    assert a["specificity"] == pytest.approx(1.0)  # 3 non-A, none called A
    assert a["precision"] == pytest.approx(1.0)
    assert a["f1"] == pytest.approx(0.8)
    assert b["sensitivity"] == pytest.approx(0.5)
    assert b["precision"] == pytest.approx(0.5)
    assert b["specificity"] == pytest.approx(3 / 4)
    assert c["precision"] == pytest.approx(0.5) and c["sensitivity"] == 1.0
    assert rep["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_binary_and_auc_by_hand() -> None:
    rep = binary_report([True, True, False, False, False], [True, False, True, False, False])
    assert rep["sensitivity"] == 0.5 and rep["specificity"] == pytest.approx(2 / 3)
    assert rep["precision"] == 0.5 and rep["npv"] == pytest.approx(2 / 3)
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0
    assert roc_auc([True, True, False, False], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.5, 0.5]) == 0.5
    assert roc_auc([True], [0.5]) is None


def test_four_class_view_merges_asc() -> None:
    m = classification_metrics(
        ["ASC-US", "LSIL", "ASC-H", "NILM"], ["LSIL", "ASC-US", "HSIL", "NILM"]
    )
    assert m["six_class"]["accuracy"] == pytest.approx(0.25)
    assert m["four_class"]["accuracy"] == 1.0
    assert m["abnormal_vs_nilm"]["sensitivity"] == 1.0


def test_detection_metrics_by_hand() -> None:
    # image 1: an HSIL cell found as HSIL, a NILM cell called LSIL (known FP), an LSIL cell
    # missed, and an abnormal prediction on an unlabelled area (unknown)
    im1 = ImageEval(
        name="1",
        gt_xy=np.array([[100, 100], [300, 300], [500, 500]], float),
        gt_labels=["HSIL", "NILM", "LSIL"],
        pred_xy=np.array([[105, 100], [300, 310], [800, 800]], float),
        pred_labels=["HSIL", "LSIL", "SCC"],
        pred_p_abnormal=np.array([0.9, 0.6, 0.7]),
    )
    # image 2: one NILM cell found as NILM, one ASC-US cell found but called NILM
    im2 = ImageEval(
        name="2",
        gt_xy=np.array([[50, 50], [200, 50]], float),
        gt_labels=["NILM", "ASC-US"],
        pred_xy=np.array([[52, 52], [200, 45]], float),
        pred_labels=["NILM", "NILM"],
        pred_p_abnormal=np.array([0.1, 0.3]),
    )
    m = detection_metrics([im1, im2], radius=20)
    assert m["annotated_cells"] == 5 and m["predicted_cells"] == 5
    assert m["detection_recall"] == pytest.approx(4 / 5)
    assert m["detection_precision_lower_bound"] == pytest.approx(4 / 5)
    assert m["annotated_abnormal_cells"] == 3
    assert m["abnormal_detection_recall"] == pytest.approx(2 / 3)
    assert m["abnormal_recall"] == pytest.approx(1 / 3)
    assert m["fp_per_image"] == pytest.approx(1 / 2)
    assert m["unlabelled_abnormal_per_image"] == pytest.approx(1 / 2)
    assert m["fp_per_image_upper_bound"] == pytest.approx(1.0)
    # lowering the threshold to 0.3 also calls the ASC-US cell abnormal: recall 2/3
    assert m["abnormal_recall_at_5fp"] == pytest.approx(2 / 3)
    matched = m["matched_cells"]
    assert matched["six_class"]["n"] == 4
    assert matched["abnormal_vs_nilm"]["sensitivity"] == pytest.approx(0.5)
    assert matched["abnormal_vs_nilm"]["specificity"] == pytest.approx(0.5)
    targets = check_targets(m)
    assert targets["abnormal_recall>=0.90@<=5fp/image"]["met"] is False


def test_abnormal_detection_recall_by_match_radius() -> None:
    # four abnormal cells with a prediction 5, 15, 25 and 35 px away, and a NILM cell
    gt = np.array([[100, 100], [300, 100], [500, 100], [700, 100], [900, 100]], float)
    pred = gt + np.array([[5, 0], [0, 15], [-25, 0], [0, -35], [0, 0]], float)
    im = ImageEval(
        name="r",
        gt_xy=gt,
        gt_labels=["HSIL", "LSIL", "ASC-US", "SCC", "NILM"],
        pred_xy=pred,
        pred_labels=["NILM"] * 5,
        pred_p_abnormal=np.zeros(5),
    )
    m = detection_metrics([im], radius=20)
    assert m["abnormal_detection_recall_by_radius_px"] == {
        "10": pytest.approx(1 / 4),
        "20": pytest.approx(2 / 4),
        "30": pytest.approx(3 / 4),
        "40": pytest.approx(1.0),
    }
    assert m["abnormal_detection_recall"] == pytest.approx(2 / 4)  # the chosen radius
