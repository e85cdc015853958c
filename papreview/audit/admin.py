"""Read-only admin page of the audit trail, with filters and a CSV export of what is shown."""

from __future__ import annotations

import csv
import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import URLPattern, path
from django.utils import timezone

from papreview.audit.models import AuditEvent

CSV_COLUMNS = (
    "id",
    "at",
    "action",
    "actor_id",
    "actor_username",
    "address",
    "target_type",
    "target_id",
    "slide_id",
    "patient_id",
    "data",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    # Spreadsheet formula injection: a cell starting with = + - @ is shown as text.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def audit_csv_rows(queryset: QuerySet[AuditEvent]) -> Any:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for row in queryset.values_list(*CSV_COLUMNS).iterator(chunk_size=2000):
        yield writer.writerow(["" if v is None else _csv_cell(v) for v in row])


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    list_display = (
        "at",
        "action",
        "actor_username",
        "address",
        "target_type",
        "target_id",
        "slide_id",
        "patient_id",
    )
    list_filter = ("action", ("at", admin.DateFieldListFilter), "target_type")
    search_fields = ("actor_username", "=address", "=target_id", "=slide_id", "=patient_id")
    date_hierarchy = "at"
    readonly_fields = (*CSV_COLUMNS[1:3], "actor", *CSV_COLUMNS[4:])
    change_list_template = "admin/audit/auditevent/change_list.html"
    list_per_page = 100
    show_full_result_count = False

    # Append-only: nobody adds, changes or deletes events here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}  # no bulk delete

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.export_csv)
        return [path("export.csv", view, name="audit_auditevent_export"), *super().get_urls()]

    def export_csv(self, request: HttpRequest) -> StreamingHttpResponse:
        """The events the change list shows (same filters and search), as CSV."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        queryset = changelist.get_queryset(request)
        response = StreamingHttpResponse(audit_csv_rows(queryset), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        return response
