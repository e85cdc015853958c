"""Model versions of the two pipeline stages, and analysis runs of a slide."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.models import TimeStampedModel


class ModelStage(models.TextChoices):
    DETECTOR = "detector", "Stage 1: detector"
    CLASSIFIER = "classifier", "Stage 2: classifier"


class ModelVersion(TimeStampedModel):
    """A trained checkpoint of one stage. At most one active version per stage."""

    stage = models.CharField(max_length=16, choices=ModelStage.choices)
    name = models.CharField(max_length=100, help_text="Version string, e.g. detector-2026-11-26.")
    file = models.FileField(upload_to="models/", max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    training_data = models.CharField(
        max_length=255, blank=True, help_text="Dataset export or data set the model was trained on."
    )
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    previous = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The version of this stage that was active before this one was last activated "
        "(what a rollback goes back to).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["stage", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage"],
                condition=Q(is_active=True),
                name="modelversion_one_active_per_stage",
                violation_error_message="Another version of this stage is already active.",
            ),
            models.UniqueConstraint(fields=["stage", "name"], name="modelversion_unique_name"),
            models.CheckConstraint(
                condition=Q(stage__in=ModelStage.values), name="modelversion_stage_valid"
            ),
            models.CheckConstraint(
                condition=Q(sha256="") | Q(sha256__regex=r"^[0-9a-f]{64}$"),
                name="modelversion_sha256_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stage}:{self.name}{' (active)' if self.is_active else ''}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


# Set-aside boxes kept per run: enough for a whole slide's debris, bounded in the row (~0.5 MB).
SET_ASIDE_BOXES_MAX = 20_000


class AnalysisRun(TimeStampedModel):
    """One analysis of one slide by the pipeline; its cells point back to it."""

    slide = models.ForeignKey("cases.Slide", on_delete=models.CASCADE, related_name="runs")
    detector_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    classifier_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # stage -> version string as reported by the pipeline (inference.types.SlideResult).
    model_versions = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done, 0-100.")
    tiles_done = models.PositiveIntegerField(default=0, help_text="Detector tiles processed.")
    tiles_total = models.PositiveIntegerField(default=0, help_text="Detector tiles in the slide.")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Executions started (deliveries, retries, takeovers after a crash)."
    )
    # Outbox: null until the broker accepted the job; the sweeper re-sends unpublished runs.
    published_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life of the execution (start, every progress write); the sweeper's deadline.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the execution.")
    device = models.CharField(max_length=64, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Stage -> seconds.")
    # What the model set aside as not cells: not stored as cells (no counts, flags or exports),
    # kept so that a reviewer can look at them (GET /api/slides/{id}/set-aside/).
    set_aside_boxes = models.JSONField(
        default=list,
        blank=True,
        help_text="Level-0 boxes [x, y, width, height] of the candidates set aside as not cells "
        f"(the first {SET_ASIDE_BOXES_MAX:,}; their number is timings.set_aside).",
    )
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="run_progress_0_100"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True)
                | Q(started_at__isnull=True)
                | Q(finished_at__gte=models.F("started_at")),
                name="run_finished_after_started",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.FAILED) | ~Q(error=""),
                name="run_failed_has_error",
            ),
            models.CheckConstraint(
                condition=Q(tiles_done__lte=models.F("tiles_total")),
                name="run_tiles_done_le_total",
            ),
            # At most one unfinished run per slide: two requests cannot queue the same slide twice.
            models.UniqueConstraint(
                fields=["slide"],
                condition=Q(status__in=["queued", "running"]),
                name="run_one_active_per_slide",
            ),
        ]
        indexes = [
            models.Index(fields=["slide", "-created_at"], name="run_slide_recent_idx"),
            models.Index(
                fields=["status", "heartbeat_at"],
                condition=Q(status__in=["queued", "running"]),
                name="run_active_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of slide {self.slide_id} ({self.status})"
