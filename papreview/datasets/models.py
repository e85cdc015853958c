"""Immutable, versioned exports of reviewed slides; model evaluations on them; QC re-reviews.

* `DatasetExport`: one export (name + version), built by a Celery task into a zip under media
  `exports/`. Once `ready` its file and manifest never change (a new export is a new version).
* `ModelEvaluation`: one model version scored on the test split of one export (compare page).
* `RetrainJob`: one retraining of both stages on an export (fine-tuned from the active versions
  by default), its progress, the versions it registered and their comparison with the active ones.
* `QCSettings` / `QCReview` / `QCLabel`: a random share of signed-out slides re-reviewed blind by
  a second reviewer; the labels feed Cohen's kappa on the model dashboard.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.choices import BETHESDA_CLASSES
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
    size_bytes = models.BigIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    filters = models.JSONField(
        default=dict, blank=True, help_text="How the slides were chosen (see services)."
    )
    params = models.JSONField(
        default=dict,
        blank=True,
        help_text="Tile size, overlap, empty-tile ratio, crop size, split, seed.",
    )
    slide_count = models.PositiveIntegerField(default=0)
    cell_count = models.PositiveIntegerField(default=0)
    slides_done = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done, 0-100.")
    task_id = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
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
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="export_progress_0_100"
            ),
            models.CheckConstraint(
                condition=~Q(status=ExportStatus.READY) | (~Q(file="") & ~Q(sha256="")),
                name="export_ready_has_file",
            ),
            models.CheckConstraint(
                condition=~Q(status=ExportStatus.FAILED) | ~Q(error=""),
                name="export_failed_has_error",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class QCSettings(models.Model):
    """The one settings row for quality-control re-review (edited by admins)."""

    share = models.FloatField(
        default=0.1, help_text="Share of signed-out slides drawn for a blind second review, 0-1."
    )
    considered_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Slides signed out up to here were already considered for a draw (once each).",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        verbose_name = "QC settings"
        verbose_name_plural = "QC settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(share__gte=0) & Q(share__lte=1), name="qcsettings_share_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"QC share {self.share:.0%}"


class QCStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the second review"
    DONE = "done", "Done"


class QCReview(TimeStampedModel):
    """A signed-out slide drawn for a blind second review of its cells."""

    slide = models.OneToOneField("cases.Slide", on_delete=models.CASCADE, related_name="qc_review")
    first_reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="qc_reviews",
        help_text="The second reviewer (set when they submit).",
    )
    status = models.CharField(max_length=8, choices=QCStatus.choices, default=QCStatus.PENDING)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=QCStatus.values), name="qcreview_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=QCStatus.DONE)
                | (Q(reviewer__isnull=False) & Q(completed_at__isnull=False)),
                name="qcreview_done_has_reviewer",
            ),
            models.CheckConstraint(
                condition=Q(reviewer__isnull=True) | ~Q(reviewer=models.F("first_reviewer")),
                name="qcreview_second_reviewer_differs",
            ),
        ]

    def __str__(self) -> str:
        return f"QC of slide {self.slide_id} ({self.status})"


QC_REJECTED = "rejected"
QC_LABELS: tuple[str, ...] = (*BETHESDA_CLASSES, QC_REJECTED)


class QCLabel(models.Model):
    """Both reviewers' labels of one cell: a Bethesda code, or `rejected` (not a cell)."""

    qc_review = models.ForeignKey(QCReview, on_delete=models.CASCADE, related_name="labels")
    cell = models.ForeignKey("review.Cell", on_delete=models.CASCADE, related_name="qc_labels")
    first_label = models.CharField(max_length=16, help_text="The signed-out review's label.")
    second_label = models.CharField(max_length=16, help_text="The QC reviewer's blind label.")
    model_label = models.CharField(
        max_length=8, blank=True, help_text="The model's class; empty for a cell a reviewer added."
    )

    class Meta:
        ordering = ["qc_review", "cell"]
        constraints = [
            models.UniqueConstraint(fields=["qc_review", "cell"], name="qclabel_unique_cell"),
            models.CheckConstraint(
                condition=Q(first_label__in=QC_LABELS) & Q(second_label__in=QC_LABELS),
                name="qclabel_labels_valid",
            ),
            models.CheckConstraint(
                condition=Q(model_label="") | Q(model_label__in=BETHESDA_CLASSES),
                name="qclabel_model_label_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"cell {self.cell_id}: {self.first_label} / {self.second_label}"
