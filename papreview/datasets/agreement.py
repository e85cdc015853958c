"""Cohen's kappa, written out (no scikit-learn): agreement of two raters beyond chance.

    kappa = (p_o - p_e) / (1 - p_e)
    p_o = share of items both raters put in the same category
    p_e = sum over categories of (share rater A used it) x (share rater B used it)

`None` where kappa is undefined: no items, or p_e = 1 (both raters used one and the same single
category throughout, so chance already explains everything). Per class, one-vs-rest: the class
against everything else, a 2 x 2 table.

Counts come in as a contingency table {(label of A, label of B): count}, so the database can do
the counting (GROUP BY) and no list of labels needs to be held in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Table = Mapping[tuple[str, str], int]


def table_from_pairs(a: Sequence[str], b: Sequence[str]) -> dict[tuple[str, str], int]:
    if len(a) != len(b):
        raise ValueError(f"the raters labelled different numbers of items ({len(a)}, {len(b)})")
    return dict(Counter(zip(a, b, strict=True)))


def cohen_kappa_table(table: Table) -> float | None:
    n = sum(table.values())
    if n == 0:
        return None
    row: Counter[str] = Counter()
    col: Counter[str] = Counter()
    agree = 0
    for (x, y), count in table.items():
        row[x] += count
        col[y] += count
        if x == y:
            agree += count
    p_o = agree / n
    p_e = sum(row[c] * col[c] for c in set(row) | set(col)) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    return cohen_kappa_table(table_from_pairs(a, b))


def one_vs_rest(table: Table, label: str) -> dict[tuple[str, str], int]:
    """The 2 x 2 table of `label` against every other label."""
    out: Counter[tuple[str, str]] = Counter()
    for (x, y), count in table.items():
        out[("yes" if x == label else "no", "yes" if y == label else "no")] += count
    return dict(out)


def agreement_report(table: Table, labels: Iterable[str]) -> dict[str, Any]:
    """n, observed agreement, overall kappa and one-vs-rest kappa per label (with each
    label's count for rater A and rater B)."""
    n = sum(table.values())
    agree = sum(c for (x, y), c in table.items() if x == y)
    per_class = {}
    for label in labels:
        a_count = sum(c for (x, _), c in table.items() if x == label)
        b_count = sum(c for (_, y), c in table.items() if y == label)
        per_class[label] = {
            "kappa": cohen_kappa_table(one_vs_rest(table, label)),
            "a": a_count,
            "b": b_count,
        }
    return {
        "n": n,
        "observed_agreement": agree / n if n else None,
        "kappa": cohen_kappa_table(table),
        "per_class": per_class,
    }
