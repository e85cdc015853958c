from django.contrib import admin
from django.http import HttpRequest

from papreview.workflow.models import InterpretationDraft, SlideEvent


@admin.register(InterpretationDraft)
class InterpretationDraftAdmin(admin.ModelAdmin[InterpretationDraft]):
    list_display = ("slide", "bethesda_category", "specimen_adequacy", "updated_by", "updated_at")
    raw_id_fields = ("slide",)


@admin.register(SlideEvent)
class SlideEventAdmin(admin.ModelAdmin[SlideEvent]):
    list_display = ("slide", "kind", "by", "at", "reason")
    list_filter = ("kind",)
    raw_id_fields = ("slide",)

    def has_change_permission(self, request: HttpRequest, obj: SlideEvent | None = None) -> bool:
        return False
