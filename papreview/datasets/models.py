"""Immutable, versioned exports of reviewed slides (filled in by the dataset issue)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.models import TimeStampedModel


class ExportFormat(models.TextChoices):
    COCO = "coco", "COCO"
    YOLO = "yolo", "YOLO"
    IMAGEFOLDER = "imagefolder", "ImageFolder crops"
    GEOJSON = "geojson", "QuPath GeoJSON"


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class DatasetExport(TimeStampedModel):
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    formats = models.JSONField(default=list, blank=True, help_text="List of ExportFormat values.")
    status = models.CharField(
        max_length=16, choices=ExportStatus.choices, default=ExportStatus.PENDING
    )
    file = models.FileField(upload_to="exports/", max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    slide_count = models.PositiveIntegerField(default=0)
    cell_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="export_unique_version"),
            models.CheckConstraint(condition=Q(version__gte=1), name="export_version_positive"),
            models.CheckConstraint(
                condition=Q(status__in=ExportStatus.values), name="export_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
