from django.contrib import admin

from papreview.analysis.admin import slides_analyse_again
from papreview.cases.models import SLIDE_FILE_FIELDS, Interpretation, Patient, Slide


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin[Patient]):
    list_display = ("identifier", "birth_year", "created_by", "created_at")
    search_fields = ("identifier",)
    readonly_fields = ("created_by", "created_at", "updated_at")


class InterpretationInline(admin.StackedInline[Interpretation, Slide]):
    model = Interpretation
    extra = 0
    readonly_fields = ("signed_out_by", "signed_out_at")


@admin.register(Slide)
class SlideAdmin(admin.ModelAdmin[Slide]):
    list_display = (
        "id",
        "original_filename",
        "patient",
        "status",
        "triage_class",
        "triage_score",
        "kind",
        "created_at",
    )
    list_filter = ("status", "kind", "format")
    search_fields = ("original_filename", "patient__identifier", "sha256")
    actions = [slides_analyse_again]
    list_select_related = ("patient",)
    raw_id_fields = ("patient",)
    # Files and their checks come from the upload service; the admin edits the workflow fields.
    readonly_fields = (
        "file",
        *SLIDE_FILE_FIELDS,
        "status",
        "failure_reason",
        "status_changed_at",
        "uploaded_by",
        "created_at",
        "updated_at",
    )
    inlines = [InterpretationInline]

    def has_add_permission(self, request: object) -> bool:
        return False  # uploads go through the API or the upload page (they are checked there)
