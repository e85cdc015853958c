"""Cohen's kappa (papreview.datasets.agreement, written out) against scikit-learn's on random
pairs of raters, overall and one-vs-rest."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from papreview.datasets.agreement import (
    cohen_kappa,
    cohen_kappa_table,
    one_vs_rest,
    table_from_pairs,
)

LABELS = ["NILM", "ASC-US", "LSIL", "HSIL"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS)), max_size=60))
def test_cohen_kappa_matches_sklearn(pairs: list[tuple[str, str]]) -> None:
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    ours = cohen_kappa(a, b)
    if not pairs or (len(set(a)) == 1 and set(a) == set(b)):
        assert ours is None  # undefined: no items, or chance explains everything
        return
    theirs = cohen_kappa_score(a, b)
    assert ours == pytest.approx(theirs, abs=1e-12)
    table = table_from_pairs(a, b)
    for label in LABELS:
        mine = cohen_kappa_table(one_vs_rest(table, label))
        yes_a = [x == label for x in a]
        yes_b = [y == label for y in b]
        if mine is None:
            assert len(set(yes_a) | set(yes_b)) == 1
        else:
            expected = cohen_kappa_score(yes_a, yes_b)
            assert not math.isnan(expected)
            assert mine == pytest.approx(expected, abs=1e-12)
