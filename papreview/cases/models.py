"""Patients, their slides, and the slide-level interpretation signed out by a reviewer."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from papreview.core.choices import BETHESDA_CHOICES, BETHESDA_CLASSES, SLIDE_KIND_CHOICES
from papreview.core.models import TimeStampedModel


class Patient(TimeStampedModel):
    """A pseudonymous patient: no names, only an identifier that means something to the lab."""

    identifier = models.CharField(
        max_length=64, unique=True, help_text="Pseudonymous identifier, unique in the lab."
    )
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="patients_created",
    )

    class Meta:
        ordering = ["identifier"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(identifier=""), name="patient_identifier_not_empty"
            ),
            models.CheckConstraint(
                condition=Q(birth_year__isnull=True)
                | Q(birth_year__gte=1900, birth_year__lte=2100),
                name="patient_birth_year_plausible",
            ),
        ]

    def __str__(self) -> str:
        return self.identifier


class SlideStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    QUEUED = "queued", "Queued for analysis"
    ANALYSING = "analysing", "Analysing"
    ANALYSED = "analysed", "Analysed"
    IN_REVIEW = "in_review", "In review"
    # Screened by a cytotechnologist and referred: a pathologist signs it out.
    REFERRED = "referred", "Referred to a pathologist"
    SIGNED_OUT = "signed_out", "Signed out"
    FAILED = "failed", "Failed"


class Slide(TimeStampedModel):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="slides")
    file = models.FileField(upload_to="slides/%Y/%m/", max_length=255)
    original_filename = models.CharField(max_length=255)
    format = models.CharField(
        max_length=32, help_text="Detected from the bytes, e.g. jpeg, aperio."
    )
    kind = models.CharField(max_length=8, choices=SLIDE_KIND_CHOICES)
    width = models.PositiveIntegerField(help_text="Level-0 width in pixels.")
    height = models.PositiveIntegerField(help_text="Level-0 height in pixels.")
    mpp = models.FloatField(null=True, blank=True, help_text="Microns per level-0 pixel.")
    level_count = models.PositiveSmallIntegerField(default=1)
    focal_planes = models.PositiveSmallIntegerField(
        default=1, help_text="Focal planes (Z) of a stack; 1 for a single plane."
    )
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=SlideStatus.choices, default=SlideStatus.UPLOADED
    )
    failure_reason = models.TextField(blank=True)
    # Higher means more suspicious: severity rank of `triage_class` times its confidence (see
    # papreview.cases.services.triage_score_for). Null until analysed.
    triage_score = models.FloatField(null=True, blank=True)
    triage_class = models.CharField(max_length=8, choices=BETHESDA_CHOICES, blank=True)
    assigned_reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="slides_assigned",
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="slides_uploaded",
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "sha256"],
                name="slide_unique_file_per_patient",
                violation_error_message="This file was already uploaded for this patient.",
            ),
            models.CheckConstraint(
                condition=Q(width__gt=0) & Q(height__gt=0), name="slide_dimensions_positive"
            ),
            models.CheckConstraint(
                condition=Q(mpp__isnull=True) | Q(mpp__gt=0), name="slide_mpp_positive"
            ),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="slide_sha256_hex"
            ),
            models.CheckConstraint(
                condition=Q(status__in=SlideStatus.values), name="slide_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[k for k, _ in SLIDE_KIND_CHOICES]), name="slide_kind_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=SlideStatus.FAILED) | ~Q(failure_reason=""),
                name="slide_failed_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(triage_score__isnull=True) | Q(triage_score__gte=0),
                name="slide_triage_score_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(triage_class="") | Q(triage_class__in=BETHESDA_CLASSES),
                name="slide_triage_class_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-triage_score"], name="slide_status_triage_idx"),
            models.Index(fields=["-triage_score"], name="slide_triage_idx"),
            models.Index(fields=["sha256"], name="slide_sha256_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.original_filename} ({self.patient_id})"


# What the upload service (`slide_create`) reads from the stored file; never edited afterwards.
SLIDE_FILE_FIELDS: tuple[str, ...] = (
    "original_filename",
    "format",
    "kind",
    "width",
    "height",
    "mpp",
    "level_count",
    "focal_planes",
    "size_bytes",
    "sha256",
)


class SpecimenAdequacy(models.TextChoices):
    SATISFACTORY = "satisfactory", "Satisfactory for evaluation"
    UNSATISFACTORY = "unsatisfactory", "Unsatisfactory for evaluation"


class SpecimenType(models.TextChoices):
    CONVENTIONAL = "conventional", "Conventional smear"
    LIQUID_BASED = "liquid_based", "Liquid-based preparation"


class Interpretation(TimeStampedModel):
    """The slide-level result, set when a reviewer signs the slide out (kept on reopen)."""

    slide = models.OneToOneField(Slide, on_delete=models.CASCADE, related_name="interpretation")
    bethesda_category = models.CharField(max_length=8, choices=BETHESDA_CHOICES)
    specimen_adequacy = models.CharField(
        max_length=16, choices=SpecimenAdequacy.choices, default=SpecimenAdequacy.SATISFACTORY
    )
    comment = models.TextField(blank=True)
    specimen_type = models.CharField(max_length=16, choices=SpecimenType.choices, blank=True)
    # The rest of the structured Bethesda 2014 report (papreview.workflow.bethesda.report_clean).
    report = models.JSONField(default=dict, blank=True)
    signed_out_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="interpretations"
    )
    signed_out_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(bethesda_category__in=BETHESDA_CLASSES),
                name="interpretation_category_valid",
            ),
            models.CheckConstraint(
                condition=Q(specimen_adequacy__in=SpecimenAdequacy.values),
                name="interpretation_adequacy_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bethesda_category} for slide {self.slide_id}"
