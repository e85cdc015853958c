from django.contrib import admin

from papreview.analysis.models import AnalysisRun, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin[ModelVersion]):
    list_display = ("name", "stage", "is_active", "activated_at", "created_at")
    list_filter = ("stage", "is_active")
    search_fields = ("name", "sha256")
    readonly_fields = ("sha256", "activated_at", "created_at", "updated_at")


@admin.register(AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin[AnalysisRun]):
    list_display = ("id", "slide", "status", "progress", "device", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("slide",)
    readonly_fields = [f.name for f in AnalysisRun._meta.fields]
