"""The model registry around the retraining loop: which export a version was trained on, its
evaluations on export splits (as a pair with a version of the other stage), and retraining jobs.

The versions themselves (`analysis.ModelVersion`) stay with the analysis app: the workers need
to know what runs without depending on datasets; everything that learns from exports lives here,
above datasets, so the apps (and their models) import one way.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.models import TimeStampedModel
from papreview.datasets.models import DatasetExport


class ModelTraining(TimeStampedModel):
    """The dataset export a model version was trained on."""

    model_version = models.OneToOneField(
        "analysis.ModelVersion", on_delete=models.CASCADE, related_name="training"
    )
    export = models.ForeignKey(
        DatasetExport, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.model_version} trained on {self.export}"


class EvaluationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ModelEvaluation(TimeStampedModel):
    """A model version scored on one split of a ready export (metrics + confusion matrix)."""

    model_version = models.ForeignKey(
        "analysis.ModelVersion", on_delete=models.CASCADE, related_name="evaluations"
    )
    # the version of the other stage it ran with: a version is scored as the pipeline it makes
    partner = models.ForeignKey(
        "analysis.ModelVersion",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    export = models.ForeignKey(DatasetExport, on_delete=models.CASCADE, related_name="+")
    split = models.CharField(max_length=8, default="test")
    status = models.CharField(
        max_length=16, choices=EvaluationStatus.choices, default=EvaluationStatus.PENDING
    )
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["export", "model_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "partner", "export", "split"],
                name="evaluation_unique_with_partner",
            ),
            models.CheckConstraint(
                condition=Q(split__in=["train", "val", "test"]), name="evaluation_split_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=EvaluationStatus.values), name="evaluation_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.export} ({self.split})"


class RetrainStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RetrainJob(TimeStampedModel):
    """Retrain both stages on an export (`papreview.registry.retrain`): the job's progress, the
    new (inactive) versions, and their test-split figures beside the active versions'."""

    export = models.ForeignKey(DatasetExport, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=16, choices=RetrainStatus.choices, default=RetrainStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done.")
    step = models.CharField(max_length=200, blank=True)
    from_scratch = models.BooleanField(default=False)
    epochs = models.PositiveIntegerField(null=True, blank=True)
    base_detector = models.ForeignKey(
        "analysis.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    base_classifier = models.ForeignKey(
        "analysis.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    new_detector = models.ForeignKey(
        "analysis.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    new_classifier = models.ForeignKey(
        "analysis.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    comparison = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RetrainStatus.values), name="retrain_status_valid"
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="retrain_progress_valid"),
        ]

    def __str__(self) -> str:
        return f"retrain #{self.pk} on {self.export_id} ({self.status})"
