"""Cells on a slide (predicted by a run or added by a reviewer) and the audit trail of changes."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.choices import BETHESDA_CHOICES, BETHESDA_CLASSES
from papreview.core.models import TimeStampedModel


class ReviewStatus(models.TextChoices):
    PREDICTED = "predicted", "Predicted (not reviewed)"
    CONFIRMED = "confirmed", "Confirmed"
    RELABELLED = "relabelled", "Relabelled"
    REJECTED = "rejected", "Rejected"
    ADDED = "added", "Added by a reviewer"
    # "Reviewed, none abnormal": a flagged cell the reviewer saw in the gallery (or selected) and
    # confirmed as not abnormal in one action; its class becomes NILM.
    CLEARED = "cleared", "Reviewed: not abnormal"


# A cell is decided only by a person's action; `predicted` is the one undecided status.
DECIDED_STATUSES: tuple[str, ...] = tuple(s for s in ReviewStatus.values if s != "predicted")


class Cell(TimeStampedModel):
    """One cell's box in level-0 slide pixels (origin top-left) and its current class.

    `version` increases by one on every change; writers must send the version they read
    (optimistic locking, see papreview.review.services.cell_update).
    """

    slide = models.ForeignKey("cases.Slide", on_delete=models.CASCADE, related_name="cells")
    run = models.ForeignKey(
        "analysis.AnalysisRun",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="cells",
        help_text="The run that predicted the cell; empty for a cell a reviewer added.",
    )
    x = models.IntegerField()
    y = models.IntegerField()
    width = models.IntegerField()
    height = models.IntegerField()
    predicted_class = models.CharField(max_length=8, choices=BETHESDA_CHOICES, blank=True)
    probabilities = models.JSONField(default=dict, blank=True)
    detection_score = models.FloatField(null=True, blank=True)
    focal_plane = models.PositiveSmallIntegerField(
        default=0, help_text="The focal plane (Z) the cell was found and classified in."
    )
    current_class = models.CharField(max_length=8, choices=BETHESDA_CHOICES)
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PREDICTED
    )
    last_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="cells_reviewed",
    )
    last_reviewed_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(x__gte=0) & Q(y__gte=0), name="cell_origin_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(width__gt=0) & Q(height__gt=0), name="cell_size_positive"
            ),
            models.CheckConstraint(
                condition=Q(current_class__in=BETHESDA_CLASSES), name="cell_current_class_valid"
            ),
            models.CheckConstraint(
                condition=Q(predicted_class="") | Q(predicted_class__in=BETHESDA_CLASSES),
                name="cell_predicted_class_valid",
            ),
            models.CheckConstraint(
                condition=Q(review_status__in=ReviewStatus.values), name="cell_review_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(detection_score__isnull=True)
                | (Q(detection_score__gte=0) & Q(detection_score__lte=1)),
                name="cell_detection_score_0_1",
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="cell_version_positive"),
            # A reviewer-added cell has no run; a predicted cell has one.
            models.CheckConstraint(
                condition=~Q(review_status=ReviewStatus.ADDED) | Q(run__isnull=True),
                name="cell_added_has_no_run",
            ),
            models.CheckConstraint(
                condition=~Q(review_status=ReviewStatus.PREDICTED) | Q(run__isnull=False),
                name="cell_predicted_has_run",
            ),
        ]
        indexes = [
            models.Index(fields=["slide", "review_status"], name="cell_slide_status_idx"),
            models.Index(fields=["slide", "-detection_score"], name="cell_slide_score_idx"),
            models.Index(fields=["slide", "current_class"], name="cell_slide_class_idx"),
        ]

    def __str__(self) -> str:
        return f"cell {self.pk} {self.current_class} on slide {self.slide_id}"


class SightingVia(models.TextChoices):
    SELECTED = "selected", "Selected in the viewer"
    GALLERY = "gallery", "Shown in the gallery at review size"


class CellSighting(models.Model):
    """A reviewer saw a cell (selected it, or its crop was shown in the gallery at review size).

    One row per cell, reviewer and way, with the first time: what the "reviewed, none abnormal"
    action may vouch for. Seeing is not deciding: a sighting never changes the cell."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="sightings")
    seen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cell_sightings"
    )
    via = models.CharField(max_length=16, choices=SightingVia.choices)
    seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["cell", "seen_by", "via"], name="sighting_unique_per_reviewer_and_way"
            ),
            models.CheckConstraint(
                condition=Q(via__in=SightingVia.values), name="sighting_via_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"cell {self.cell_id} seen by {self.seen_by_id} ({self.via})"


class CellRevision(models.Model):
    """One change of one cell: who, when, the fields before and after. Never updated."""

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="revisions")
    version = models.PositiveIntegerField(help_text="The cell's version after this change.")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cell_revisions"
    )
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict)

    class Meta:
        ordering = ["cell", "version"]
        constraints = [
            models.UniqueConstraint(fields=["cell", "version"], name="revision_unique_version"),
        ]

    def __str__(self) -> str:
        return f"cell {self.cell_id} v{self.version} by {self.changed_by_id}"
