"""Our metric implementations against scikit-learn on random inputs: ROC AUC (ties included),
the confusion matrix, per-class sensitivity / precision / F1, accuracy and balanced accuracy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from inference.metrics import binary_report, confusion_matrix, report_from_confusion, roc_auc

CLASSES = ["A", "B", "C", "D"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=60),
    st.booleans(),
)
def test_roc_auc_matches_sklearn(pairs: list[tuple[bool, int]], continuous: bool) -> None:
    y = np.array([t for t, _ in pairs])
    # small integer scores: many ties (counted half); else add distinct fractions
    s = np.array([float(v) for _, v in pairs])
    if continuous:
        s = s + np.linspace(0.0, 0.5, len(s))
    ours = roc_auc(y, s)
    if y.all() or not y.any():
        assert ours is None  # undefined with one class (sklearn raises)
        return
    assert ours == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_confusion_matrix_and_report_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    # some classes may be absent from the truth, the predictions or both
    present = CLASSES[: int(rng.integers(1, len(CLASSES) + 1))]
    y_true = list(rng.choice(present, n))
    y_pred = list(rng.choice(CLASSES, n))
    cm = confusion_matrix(y_true, y_pred, CLASSES)
    assert cm.tolist() == sk.confusion_matrix(y_true, y_pred, labels=CLASSES).tolist()

    rep = report_from_confusion(cm, CLASSES)
    assert rep["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():  # sklearn warns of predicted classes absent from the truth
        warnings.simplefilter("ignore", UserWarning)
        balanced = sk.balanced_accuracy_score(y_true, y_pred)
    assert rep["balanced_accuracy"] == pytest.approx(balanced)
    prec, rec, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=CLASSES, zero_division=np.nan
    )
    for i, c in enumerate(CLASSES):
        ours = rep["per_class"][c]
        assert ours["support"] == support[i]
        for key, theirs in (("sensitivity", rec[i]), ("precision", prec[i])):
            assert (ours[key] is None) == bool(np.isnan(theirs)), (c, key)
            if ours[key] is not None:
                assert ours[key] == pytest.approx(theirs)
        if ours["f1"] is not None and not np.isnan(f1[i]):
            assert ours["f1"] == pytest.approx(f1[i])


@pytest.mark.parametrize("seed", range(10))
def test_binary_report_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.random(50) < 0.3
    p = rng.random(50) < 0.4
    rep = binary_report(list(t), list(p))
    (tn, fp), (fn, _tp) = sk.confusion_matrix(t, p, labels=[False, True])
    assert rep["sensitivity"] == pytest.approx(sk.recall_score(t, p))
    assert rep["specificity"] == pytest.approx(tn / (tn + fp))
    assert rep["precision"] == pytest.approx(sk.precision_score(t, p))
    assert rep["npv"] == pytest.approx(tn / (tn + fn))
    assert rep["accuracy"] == pytest.approx(sk.accuracy_score(t, p))
