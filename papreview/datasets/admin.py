"""Admin for exports (read-only: an export never changes; the registry app adds checkpoint
registration to it) and QC re-review (the share, drawing slides)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from papreview.datasets.models import DatasetExport, ExportStatus, QCReview, QCSettings
from papreview.datasets.qc import qc_sample
from papreview.datasets.services import dataset_export_requeue


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin[DatasetExport]):
    list_display = (
        "name",
        "version",
        "status",
        "progress",
        "slide_count",
        "cell_count",
        "size_bytes",
        "created_by",
        "created_at",
    )
    list_filter = ("status",)
    search_fields = ("name", "sha256")
    actions = ["build_again"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: DatasetExport | None = None
    ) -> list[str]:
        return [f.name for f in DatasetExport._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # exports are made on the Datasets page or through the API

    @admin.action(description="Build again (failed or stuck exports; ready ones never change)")
    def build_again(self, request: HttpRequest, queryset: QuerySet[DatasetExport]) -> None:
        queued = 0
        for export in queryset.exclude(status=ExportStatus.READY):
            dataset_export_requeue(export=export)
            queued += 1
        skipped = queryset.filter(status=ExportStatus.READY).count()
        messages.success(
            request, f"{queued} export(s) queued again; {skipped} ready one(s) left as they are."
        )


@admin.register(QCSettings)
class QCSettingsAdmin(admin.ModelAdmin[QCSettings]):
    list_display = ("share", "updated_by", "updated_at")
    readonly_fields = ("updated_by", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not QCSettings.objects.exists()  # one row

    def save_model(self, request: HttpRequest, obj: QCSettings, form: Any, change: bool) -> None:
        user: Any = request.user
        obj.updated_by = user
        super().save_model(request, obj, form, change)


@admin.register(QCReview)
class QCReviewAdmin(admin.ModelAdmin[QCReview]):
    list_display = ("slide", "status", "first_reviewer", "reviewer", "created_at", "completed_at")
    list_filter = ("status",)
    raw_id_fields = ("slide",)
    readonly_fields = ("first_reviewer", "reviewer", "completed_at")
    actions = ["draw_now"]

    @admin.action(description="Draw the QC share of signed-out slides now")
    def draw_now(self, request: HttpRequest, queryset: QuerySet[QCReview]) -> None:
        drawn = qc_sample()
        messages.success(request, f"{len(drawn)} slide(s) drawn for QC re-review.")
