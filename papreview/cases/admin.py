"""Admin for patients. The slide admin (with its re-analysis action) is in
papreview.analysis.admin: analysis sits above cases in the import layers."""

from django.contrib import admin

from papreview.cases.models import Patient


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin[Patient]):
    list_display = ("identifier", "birth_year", "created_by", "created_at")
    search_fields = ("identifier",)
    readonly_fields = ("created_by", "created_at", "updated_at")
