from django.contrib import admin

from papreview.datasets.models import DatasetExport


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin[DatasetExport]):
    list_display = ("name", "version", "status", "slide_count", "cell_count", "created_at")
    list_filter = ("status",)
    readonly_fields = ("sha256", "manifest", "created_at", "updated_at")
