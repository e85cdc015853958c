"""What a reviewer faces (`inference.reviewer_load`), on hand-made fields whose answers are known,
with scikit-learn as the oracle of the field-level AUC; and `evaluate` on fields that have only a
field label, resized first (`--fields`, `--upscale`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from inference.__main__ import main as inference_main
from inference.metrics import ImageEval
from inference.reviewer_load import reviewer_load
from inference.synthetic import synthetic_field

Marked = list[tuple[float, float, str]]  # x, y, class
Called = list[tuple[float, float, str, float]]  # x, y, class, P(abnormal)


def field(name: str, gt: Marked, pred: Called) -> ImageEval:
    return ImageEval(
        name=name,
        gt_xy=np.array([(x, y) for x, y, _ in gt], np.float64).reshape(-1, 2),
        gt_labels=[c for _, _, c in gt],
        pred_xy=np.array([(x, y) for x, y, _, _ in pred], np.float64).reshape(-1, 2),
        pred_labels=[c for _, _, c, _ in pred],
        pred_p_abnormal=np.array([p for *_, p in pred], np.float64),
    )


FIELDS = [
    # an abnormal field: one call on the HSIL cell, one on the NILM cell, one far away, and a
    # NILM call that does not count
    field(
        "a",
        [(100, 100, "HSIL"), (300, 100, "NILM")],
        [
            (105, 100, "HSIL", 0.9),
            (302, 98, "LSIL", 0.95),
            (600, 600, "SCC", 0.7),
            (900, 900, "NILM", 0.1),
        ],
    ),
    # a NILM field with one far call and nothing else
    field("b", [(50, 50, "NILM")], [(400, 400, "ASC-US", 0.6)]),
    # an abnormal field whose abnormal cell is missed (35 px off: found only at 40 px)
    field("c", [(200, 200, "LSIL")], [(235, 200, "LSIL", 0.8)]),
]


def test_calls_are_placed_and_counted_per_field() -> None:
    load = reviewer_load(FIELDS, radius=20.0)
    per = load["abnormal_calls_per_field"]
    # a: 1 near the HSIL, 1 on the NILM, 1 far; b: 1 far; c: 1 far (35 px > 30 px)
    assert per["near_marked_abnormal"]["mean"] == pytest.approx(1 / 3)
    assert per["on_marked_nilm"]["mean"] == pytest.approx(1 / 3)
    assert per["far_from_marked"]["mean"] == pytest.approx(3 / 3)
    assert load["false_alarms_per_field"] == pytest.approx((2 + 1 + 1) / 3)
    assert load["false_alarms_per_nilm_field"]["mean"] == 1.0  # field b only
    assert load["abnormal_recall_by_radius_px"] == {"20": 0.5, "30": 0.5, "40": 1.0}
    # top-k by P(abnormal): in a, the most suspicious call (0.95) is on the NILM cell
    assert load["top_k_hit"]["abnormal_fields"] == 2
    assert load["top_k_hit"]["top_1"] == 0.0 and load["top_k_hit"]["top_5"] == 0.5


def test_field_auc_matches_scikit_learn_and_takes_given_labels() -> None:
    load = reviewer_load(FIELDS, radius=20.0)
    truth = [True, False, True]
    assert load["field_auc"]["auc_max_cell"] == pytest.approx(
        roc_auc_score(truth, [0.95, 0.6, 0.8])
    )
    given = reviewer_load(FIELDS, radius=20.0, field_labels={"a": False, "b": True})
    assert given["field_auc"]["fields"] == 2 and given["field_auc"]["labels"] == "given"
    assert given["field_auc"]["auc_top3_mean"] == pytest.approx(
        roc_auc_score([False, True], [np.mean([0.95, 0.9, 0.7]), 0.6])
    )


def test_nilm_fields_follow_the_given_field_labels() -> None:
    """With field labels (LBC: no marks at all), a NILM field is one labelled NILM, not every
    field without a marked abnormal cell; a field the labels do not name is left out."""
    given = reviewer_load(FIELDS, radius=20.0, field_labels={"a": False, "b": True})
    # a is labelled NILM (2 false alarms), b abnormal, c unnamed
    assert given["false_alarms_per_nilm_field"]["mean"] == 2.0
    unmarked = [field(f.name, [], [(x, y, c, p) for (x, y), c, p in zip(
        f.pred_xy, f.pred_labels, f.pred_p_abnormal, strict=True)]) for f in FIELDS]  # fmt: skip
    labelled = reviewer_load(unmarked, radius=20.0, field_labels={"a": True, "b": False})
    assert labelled["false_alarms_per_nilm_field"]["mean"] == 1.0  # b only


def test_reliability_bins_and_ece() -> None:
    rel = reviewer_load(FIELDS, radius=20.0)["reliability"]
    # matched within 20 px: (0.9, abnormal) and (0.95, NILM): one bin [0.9, 1.0]
    assert rel["cells"] == 2 and len(rel["bins"]) == 1
    [b] = rel["bins"]
    assert b["n"] == 2 and b["abnormal_share"] == 0.5
    assert rel["ece"] == pytest.approx(abs(0.5 - 0.925))


def test_evaluate_on_fields_with_a_field_label_only_resized_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "lbc"
    images.mkdir()
    nuclei = [(60.0 + 110 * i, 70.0 + 120 * j, 8.0) for i in range(4) for j in range(3)]
    for i in range(3):
        img = synthetic_field(480, 400, cells=nuclei, seed=i)
        Image.fromarray(img).save(images / f"f{i}.jpg", quality=95)
    labels = tmp_path / "fields.csv"
    labels.write_text("image_filename,field_label\nf0.jpg,NILM\nf1.jpg,abnormal\nf2.jpg,NILM\n")
    out = tmp_path / "lbc.json"
    argv = ["evaluate", "--images", str(images), "--fields", str(labels), "--upscale", "1.5"]
    assert inference_main([*argv, "--split", "all", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["upscale"] == 1.5 and result["images_evaluated"] == 3
    auc = result["reviewer"]["field_auc"]
    assert auc["labels"] == "given" and auc["fields"] == 3 and auc["abnormal_fields"] == 1
    assert result["reviewer"]["false_alarms_per_nilm_field"]["mean"] is not None
    assert out.with_name("lbc_reviewer.png").is_file()
    grey_out = tmp_path / "grey.json"
    grey = [*argv, "--grey", "--split", "all", "--device", "cpu", "--out", str(grey_out)]
    assert inference_main(grey) == 0
    assert json.loads(grey_out.read_text())["grey"] is True
    assert inference_main(["evaluate", "--images", str(images)]) == 2
    assert "--cells and/or --fields" in capsys.readouterr().err


def test_threshold_for_a_budget_of_far_calls_per_field() -> None:
    """The lowest threshold keeping the calls far from every marked cell within the budget:
    far calls here are a's SCC (0.7) and NILM (0.1) calls, b's (0.6) and c's (0.8, 35 px off)."""
    from inference.reviewer_load import threshold_for_budget

    one = threshold_for_budget(FIELDS, 1.0)  # 3 far calls allowed over 3 fields
    assert 0.1 < one["threshold"] < 0.6 and one["far_per_field"] == pytest.approx(1.0)
    tight = threshold_for_budget(FIELDS, 0.5)  # 1 allowed: only the 0.8 call stays
    assert 0.7 < tight["threshold"] < 0.8
    assert tight["far_per_field"] == pytest.approx(1 / 3)
    assert tight["abnormal_recall"] == 0.5  # a's HSIL (0.9); c's LSIL call is 35 px off
    assert threshold_for_budget(FIELDS, 10.0)["threshold"] == 0.0  # never spent: every call


def test_a_budget_rule_is_kept_in_the_fusion_and_named_in_the_version() -> None:
    from inference.calibration import PipelineCalibration, calibrated_meta
    from inference.fusion import Fusion

    fusion = Fusion(0.7, 1.2, 0.0, "detector-1-abcd", 0.19, far_budget=5.0)
    assert Fusion.from_dict(fusion.to_dict()) == fusion
    meta = calibrated_meta(
        {"version": "classifier-1-ef01"}, PipelineCalibration(fusion, {}, True), tta_views=2
    )
    assert meta["version"] == "classifier-1-ef01-tta2-fused-abcd-fa5"
    assert meta["fusion"]["far_budget"] == 5.0
    old = {k: v for k, v in fusion.to_dict().items() if k != "far_budget"}
    assert Fusion.from_dict(old).far_budget is None  # checkpoints from before the rule
