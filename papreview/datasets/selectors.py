"""Reads for dataset exports and QC re-reviews."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from papreview.cases.models import Slide, SlideStatus
from papreview.core.exceptions import NotFoundError
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.review.models import Cell, CellRevision
from papreview.review.services import BOX_FIELDS

if TYPE_CHECKING:
    from papreview.datasets.params import ExportFilters


def export_slides(*, filters: ExportFilters) -> QuerySet[Slide]:
    """Signed-out slides (with an interpretation) matching the filter, by id."""
    qs = Slide.objects.filter(status=SlideStatus.SIGNED_OUT, interpretation__isnull=False)
    if filters.signed_out_from:
        qs = qs.filter(interpretation__signed_out_at__date__gte=filters.signed_out_from)
    if filters.signed_out_to:
        qs = qs.filter(interpretation__signed_out_at__date__lte=filters.signed_out_to)
    if filters.categories:
        qs = qs.filter(interpretation__bethesda_category__in=filters.categories)
    if filters.patients:
        qs = qs.filter(patient__identifier__in=filters.patients)
    if filters.slide_ids:
        qs = qs.filter(pk__in=filters.slide_ids)
    if filters.reviewed_by:
        qs = qs.filter(interpretation__signed_out_by__in=filters.reviewed_by)
    return qs.order_by("pk")


def slide_cells_for_export(
    *, slide_id: int
) -> tuple[list[Cell], dict[int, tuple[int, int, int, int]]]:
    """A slide's cells (with run, model versions and reviewer: three queries in all) and, per
    cell changed by a reviewer, its box before the first change (the model's box)."""
    cells = list(
        Cell.objects.filter(slide_id=slide_id)
        .select_related("run__detector_version", "run__classifier_version", "last_reviewed_by")
        .order_by("pk")
    )
    original: dict[int, tuple[int, int, int, int]] = {}
    revisions = (
        CellRevision.objects.filter(cell__slide_id=slide_id)
        .order_by("cell_id", "version")
        .values_list("cell_id", "before")
    )
    for cell_id, before in revisions:
        if cell_id in original or not before:
            continue
        if all(isinstance(before.get(k), int) for k in BOX_FIELDS):
            x, y, w, h = (int(before[k]) for k in BOX_FIELDS)
            original[cell_id] = (x, y, w, h)
    return cells, original


def dataset_export_list() -> QuerySet[DatasetExport]:
    return DatasetExport.objects.select_related("created_by").order_by("-created_at", "-id")


def dataset_export_get(*, export_id: int) -> DatasetExport:
    export = DatasetExport.objects.select_related("created_by").filter(pk=export_id).first()
    if export is None:
        raise NotFoundError(f"Export {export_id} does not exist.")
    return export


def dataset_exports_ready() -> QuerySet[DatasetExport]:
    return DatasetExport.objects.filter(status=ExportStatus.READY).order_by("-created_at", "-id")
