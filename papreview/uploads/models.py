"""Resumable uploads: a file received in chunks into a private temporary file, then handed to
`papreview.cases.services.slide_create` (the one place slides are checked and created)."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from papreview.core.models import TimeStampedModel


class UploadStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving chunks"
    COMPLETE = "complete", "Complete (slide created)"
    FAILED = "failed", "Failed"


class Upload(TimeStampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey("cases.Patient", on_delete=models.CASCADE, related_name="+")
    filename = models.CharField(max_length=255)
    size = models.BigIntegerField(help_text="Announced size of the whole file in bytes.")
    offset = models.BigIntegerField(default=0, help_text="Bytes received so far.")
    status = models.CharField(
        max_length=16, choices=UploadStatus.choices, default=UploadStatus.RECEIVING
    )
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    slide = models.ForeignKey(
        "cases.Slide", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(size__gt=0), name="upload_size_positive"),
            models.CheckConstraint(
                condition=Q(offset__gte=0) & Q(offset__lte=F("size")),
                name="upload_offset_within_size",
            ),
            models.CheckConstraint(
                condition=Q(status__in=UploadStatus.values), name="upload_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=UploadStatus.FAILED) | ~Q(error=""),
                name="upload_failed_has_error",
            ),
            models.CheckConstraint(
                condition=~Q(status=UploadStatus.COMPLETE) | Q(offset=F("size")),
                name="upload_complete_has_all_bytes",
            ),
        ]

    def __str__(self) -> str:
        return f"upload {self.pk} {self.filename} {self.offset}/{self.size}"

    @property
    def part_path(self) -> Path:
        """Where the bytes received so far are kept (outside media storage)."""
        return Path(settings.UPLOAD_TEMP_DIR) / f"{self.pk}.part"
