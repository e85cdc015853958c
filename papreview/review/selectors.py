"""Reads of cells: lists, one cell, its revisions, and the cells the model flagged for review."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import F, FloatField, QuerySet, Value
from django.db.models.expressions import OrderBy, RawSQL
from django.db.models.functions import Coalesce

from inference.types import Bethesda, suspicion
from papreview.core.choices import SEVERITY
from papreview.core.exceptions import NotFoundError
from papreview.review.models import Cell, CellRevision, ReviewStatus

CELL_ORDERINGS: dict[str, tuple[str | OrderBy, ...]] = {
    "id": ("id",),
    "-detection_score": (F("detection_score").desc(nulls_last=True), "id"),
}


def cell_list(
    *,
    slide_id: int,
    review_status: str | None = None,
    current_class: str | None = None,
    ordering: str = "id",
) -> QuerySet[Cell]:
    qs = Cell.objects.filter(slide_id=slide_id)
    if review_status:
        qs = qs.filter(review_status=review_status)
    if current_class:
        qs = qs.filter(current_class=current_class)
    return qs.order_by(*CELL_ORDERINGS[ordering])


def cell_get(*, cell_id: int) -> Cell:
    """One cell, with its slide (one query; `cell_update` needs both)."""
    cell = Cell.objects.select_related("slide").filter(pk=cell_id).first()
    if cell is None:
        raise NotFoundError(f"No cell with id {cell_id}.")
    return cell


def cell_revision_list(*, cell_id: int) -> QuerySet[CellRevision]:
    return CellRevision.objects.filter(cell_id=cell_id).select_related("changed_by")


def probability_of_predicted_class() -> RawSQL:
    """probabilities[predicted_class] computed by the database (no JSON decoding per row)."""
    if connection.vendor == "postgresql":
        sql = "(probabilities ->> predicted_class)::double precision"
    else:  # SQLite, the zero-setup default
        sql = "CAST(json_extract(probabilities, '$.\"' || predicted_class || '\"') AS REAL)"
    return RawSQL(sql, [], output_field=FloatField())


def flagged_cells(*, slide_id: int) -> QuerySet[Cell]:
    """The cells the model flagged for a person's eyes: predicted by a run, called abnormal, with
    a confidence (probability of the predicted class, else the detection score) of at least
    REVIEW_FLAG_THRESHOLD. The review page counts them with the same rule (page config)."""
    return (
        Cell.objects.filter(slide_id=slide_id, run__isnull=False)
        .exclude(predicted_class__in=["", Bethesda.NILM.value])
        .annotate(
            confidence=Coalesce(
                probability_of_predicted_class(),
                F("detection_score"),
                Value(0.0),
                output_field=FloatField(),
            )
        )
        .filter(confidence__gte=settings.REVIEW_FLAG_THRESHOLD)
    )


@dataclass(frozen=True)
class FlagSummary:
    flagged: int
    reviewed: int  # flagged cells a person decided
    undecided: list[tuple[int, str]]  # (cell id, class) not yet decided, most severe first

    def undecided_above(self, category: str) -> list[int]:
        """Undecided flagged cells more severe than `category` (what a sign-out would hide)."""
        return [pk for pk, cls in self.undecided if SEVERITY[cls] > SEVERITY[category]]


def slide_flag_summary(*, slide_id: int) -> FlagSummary:
    """Flagged, reviewed and the undecided flagged cells of a slide (one query)."""
    # "confidence" is flagged_cells' annotation, which django-stubs cannot see.
    rows = flagged_cells(slide_id=slide_id).values_list(  # type: ignore[misc]
        "pk", "predicted_class", "review_status", "confidence"
    )
    flagged = reviewed = 0
    undecided: list[tuple[float, int, str]] = []
    for pk, cls, status, confidence in rows:
        flagged += 1
        if status == ReviewStatus.PREDICTED:
            undecided.append((suspicion(cls, confidence), pk, cls))
        else:
            reviewed += 1
    undecided.sort(key=lambda row: (-row[0], row[1]))
    return FlagSummary(
        flagged=flagged, reviewed=reviewed, undecided=[(pk, cls) for _, pk, cls in undecided]
    )
