"""Writes for dataset exports: asking for one (`dataset_export_create`) and asking again
(`dataset_export_requeue`).

The life of an export:

1. `dataset_export_create(...)` (page, API) checks the filter (signed-out slides only) and that
   its patients can be split (3 or more, or a train-only export), takes the next version of the
   export's name and creates a `pending` row; on commit the id goes to the
   `celery` queue (`dataset_export_build_task`).
2. `dataset_export_build(export_id=...)` (the task, in `papreview.datasets.build`) writes the
   zip and marks the row `ready`, or `failed` with its reason.

What an export is asked for (`ExportParams`, `ExportFilters`) is in `papreview.datasets.params`,
where each cell's label comes from in `papreview.datasets.provenance`, the formats in
`papreview.datasets.writers`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from papreview.accounts.roles import user_can_write
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.core.exceptions import ApplicationError, ConflictError, PermissionDeniedError
from papreview.datasets.models import DatasetExport, ExportFormat, ExportStatus
from papreview.datasets.params import (
    MIN_SPLIT_PATIENTS,
    ExportFilters,
    ExportParams,
    SplitRefusedError,
    split_refusal,
)
from papreview.datasets.selectors import export_slides


class EmptyExportError(ApplicationError):
    code = "empty_export"


def dataset_export_create(
    *,
    name: str,
    created_by: User,
    filters: dict[str, Any] | ExportFilters | None = None,
    params: dict[str, Any] | ExportParams | None = None,
) -> DatasetExport:
    """A new version of the named export, queued for building (on commit)."""
    if not user_can_write(created_by):
        raise PermissionDeniedError("Your role can read exports but not make them.")
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the export a name."})
    if len(name) > 100:
        raise ValidationError({"name": "At most 100 characters."})
    # Dicts (pages, commands, tests) go through the API's serializers: the same errors.
    f = filters if isinstance(filters, ExportFilters) else ExportFilters.from_dict(filters)
    p = params if isinstance(params, ExportParams) else ExportParams.from_dict(params)
    slides = export_slides(filters=f)
    count = slides.count()
    if count == 0:
        raise EmptyExportError(
            "No signed-out slide matches this filter; only signed-out slides are exported."
        )
    patients = slides.order_by().values("patient_id").distinct().count()
    refusal = split_refusal(patients=patients, params=p)
    if refusal:
        raise SplitRefusedError(refusal, extra={"patients": patients, "needed": MIN_SPLIT_PATIENTS})
    from papreview.datasets.tasks import dataset_export_build_task

    with transaction.atomic():
        # Serialise version numbers per name: lock the name's rows (or the table's first row).
        existing = list(
            DatasetExport.objects.select_for_update()
            .filter(name=name)
            .values_list("version", flat=True)
        )
        export = DatasetExport.objects.create(
            name=name,
            version=max(existing, default=0) + 1,
            formats=[f.value for f in ExportFormat],
            filters=f.to_dict(),
            params=p.to_dict(),
            slide_count=count,
            created_by=created_by,
        )
        export_id = export.pk
        audit_record(
            action=AuditAction.EXPORT_CREATED,
            actor=created_by,
            target=export,
            data={
                "name": name,
                "version": export.version,
                "slide_count": count,
                "patients": patients,
                "train_only": p.train_only,
            },
        )
        transaction.on_commit(lambda: dataset_export_build_task.delay(export_id))
    return export


def dataset_export_requeue(*, export: DatasetExport) -> DatasetExport:
    """Queue a failed or stuck (pending/running with no live build) export again. A ready
    export never changes: make a new version instead."""
    if export.status == ExportStatus.READY:
        raise ConflictError(f"Export {export} is ready and never changes; make a new version.")
    from papreview.datasets.tasks import dataset_export_build_task

    with transaction.atomic():
        DatasetExport.objects.filter(pk=export.pk).exclude(status=ExportStatus.READY).update(
            status=ExportStatus.PENDING, error="", progress=0, slides_done=0,
            updated_at=timezone.now(),
        )  # fmt: skip
        export_id = export.pk
        transaction.on_commit(lambda: dataset_export_build_task.delay(export_id))
    export.refresh_from_db()
    return export
