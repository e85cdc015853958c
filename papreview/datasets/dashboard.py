"""Reads for the model dashboard: what reviewers did with each model version's cells, and how
well reviewers agree with each other (QC re-reviews) and with the model (Cohen's kappa).

Every figure is counted by the database (GROUP BY); nothing here loads cells one by one.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count, OuterRef, Subquery

from inference.types import BETHESDA_CLASSES
from papreview.analysis.models import AnalysisRun, ModelStage, RunStatus
from papreview.cases.models import SlideStatus
from papreview.datasets.agreement import agreement_report
from papreview.datasets.models import QC_LABELS, QC_REJECTED, QCLabel, QCReview, QCStatus
from papreview.review.models import Cell, ReviewStatus

# What people decided about a model's cells; `undecided` cells (nobody decided them: sign-out
# decides nothing) are counted apart and never count as kept.
OUTCOMES: tuple[str, ...] = ("confirmed", "relabelled", "cleared", "rejected", "added", "undecided")


def _empty_row() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


def model_outcomes(*, stage: ModelStage | str) -> list[dict[str, Any]]:
    """Per version of `stage` and per class, on signed-out slides: how many of its cells the
    reviewers confirmed, relabelled, cleared (flagged, then "none abnormal"), rejected, left
    undecided, and how
    many cells they had to add (misses, counted against the versions of the slide's latest
    successful run). Class: the model's class; for added cells the reviewer's class."""
    stage = ModelStage(stage)
    field = f"run__{stage.value}_version__name"
    rows: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: {c: _empty_row() for c in BETHESDA_CLASSES}
    )
    status_to_outcome = {
        ReviewStatus.CONFIRMED: "confirmed",
        ReviewStatus.PREDICTED: "undecided",
        ReviewStatus.RELABELLED: "relabelled",
        ReviewStatus.CLEARED: "cleared",
        ReviewStatus.REJECTED: "rejected",
    }
    predicted = (
        Cell.objects.filter(slide__status=SlideStatus.SIGNED_OUT, run__isnull=False)
        .exclude(**{f"{field}__isnull": True})
        .values(field, "predicted_class", "review_status")
        .annotate(n=Count("id"))
    )
    for row in predicted:
        outcome = status_to_outcome.get(row["review_status"])
        if outcome and row["predicted_class"] in BETHESDA_CLASSES:
            rows[row[field]][row["predicted_class"]][outcome] += row["n"]
    latest = AnalysisRun.objects.filter(
        slide=OuterRef("slide"), status=RunStatus.SUCCEEDED
    ).order_by("-created_at", "-id")
    added = (
        Cell.objects.filter(slide__status=SlideStatus.SIGNED_OUT, review_status=ReviewStatus.ADDED)
        .annotate(made_by=Subquery(latest.values(f"{stage.value}_version__name")[:1]))
        .exclude(made_by__isnull=True)
        .values("made_by", "current_class")
        .annotate(n=Count("id"))
    )
    for row in added:
        rows[row["made_by"]][row["current_class"]]["added"] += row["n"]
    out = []
    for version in sorted(rows):
        per_class = rows[version]
        totals = _empty_row()
        for counts in per_class.values():
            for k, v in counts.items():
                totals[k] += v
        out.append(
            {"stage": stage.value, "version": version, "classes": per_class, "total": totals}
        )
    return out


def _table(rows: Any, a: str, b: str) -> dict[tuple[str, str], int]:
    table: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        table[(row[a], row[b])] += row["n"]
    return dict(table)


def reviewer_model_table() -> dict[tuple[str, str], int]:
    """(reviewer's final label, model's label) counts over the predicted cells of signed-out
    slides that a person decided; a rejected cell's final label is `rejected`."""
    rows = (
        Cell.objects.filter(slide__status=SlideStatus.SIGNED_OUT, run__isnull=False)
        .exclude(predicted_class="")
        .exclude(review_status=ReviewStatus.PREDICTED)
        .values("current_class", "predicted_class", "review_status")
        .annotate(n=Count("id"))
    )
    table: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        final = (
            QC_REJECTED if row["review_status"] == ReviewStatus.REJECTED else row["current_class"]
        )
        table[(final, row["predicted_class"])] += row["n"]
    return dict(table)


def agreement_summary() -> dict[str, Any]:
    """Cohen's kappa (overall and one-vs-rest per label) for: first reviewer vs QC reviewer,
    first reviewer vs model (every signed-out slide), QC reviewer vs model."""
    done = QCLabel.objects.filter(qc_review__status=QCStatus.DONE)
    rr = _table(
        # The first reviewer's label counts only where they decided the cell.
        done.exclude(cell__review_status=ReviewStatus.PREDICTED)
        .values("first_label", "second_label")
        .annotate(n=Count("id")),
        "first_label",
        "second_label",
    )
    qm = _table(
        done.exclude(model_label="").values("second_label", "model_label").annotate(n=Count("id")),
        "second_label",
        "model_label",
    )
    return {
        "labels": list(QC_LABELS),
        "reviewer_vs_reviewer": agreement_report(rr, QC_LABELS),
        "reviewer_vs_model": agreement_report(reviewer_model_table(), QC_LABELS),
        "qc_reviewer_vs_model": agreement_report(qm, QC_LABELS),
        "qc_reviews": {
            "pending": QCReview.objects.filter(status=QCStatus.PENDING).count(),
            "done": QCReview.objects.filter(status=QCStatus.DONE).count(),
        },
    }


def model_dashboard() -> dict[str, Any]:
    return {
        "classes": list(BETHESDA_CLASSES),
        "outcomes": list(OUTCOMES),
        "detector": model_outcomes(stage=ModelStage.DETECTOR),
        "classifier": model_outcomes(stage=ModelStage.CLASSIFIER),
        "agreement": agreement_summary(),
    }
