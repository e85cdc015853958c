"""The review workflow around a slide: the interpretation being drafted, and the slide's events
(assignments and reopenings, each with who, when, why, before and after). Never updated."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.cases.models import Slide, SpecimenAdequacy, SpecimenType
from papreview.core.choices import BETHESDA_CHOICES, BETHESDA_CLASSES
from papreview.core.models import TimeStampedModel


class InterpretationDraft(TimeStampedModel):
    """What the reviewer has set so far in the interpretation panel, before signing out."""

    slide = models.OneToOneField(
        Slide, on_delete=models.CASCADE, related_name="interpretation_draft"
    )
    bethesda_category = models.CharField(max_length=8, choices=BETHESDA_CHOICES, blank=True)
    specimen_adequacy = models.CharField(
        max_length=16, choices=SpecimenAdequacy.choices, default=SpecimenAdequacy.SATISFACTORY
    )
    comment = models.TextField(blank=True)
    specimen_type = models.CharField(max_length=16, choices=SpecimenType.choices, blank=True)
    report = models.JSONField(default=dict, blank=True)
    # Optimistic locking as for cells: a save must send the version it read.
    version = models.PositiveIntegerField(default=1)
    # The category of the last save by a pathologist: a cytotechnologist's later save does not
    # hide it from the two-tier sign-out rules (papreview.workflow.services).
    pathologist_category = models.CharField(max_length=8, choices=BETHESDA_CHOICES, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(bethesda_category="") | Q(bethesda_category__in=BETHESDA_CLASSES),
                name="draft_category_valid",
            ),
            models.CheckConstraint(
                condition=Q(specimen_adequacy__in=SpecimenAdequacy.values),
                name="draft_adequacy_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"draft {self.bethesda_category or '-'} for slide {self.slide_id}"


class SlideEventKind(models.TextChoices):
    ASSIGNED = "assigned", "Assigned"
    REOPENED = "reopened", "Reopened"
    REFERRED = "referred", "Referred to a pathologist"


class SlideEvent(models.Model):
    """One workflow change of a slide. A reopening keeps the interpretation it undid."""

    slide = models.ForeignKey(Slide, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=SlideEventKind.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["slide", "at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=SlideEventKind.values), name="slide_event_kind_valid"
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=[SlideEventKind.REOPENED, SlideEventKind.REFERRED])
                | ~Q(reason=""),
                name="slide_event_reason_required",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} slide {self.slide_id} by {self.by_id}"
