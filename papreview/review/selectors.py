from __future__ import annotations

from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy

from papreview.core.exceptions import NotFoundError
from papreview.review.models import Cell, CellRevision

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
