"""Reads for patients and slides, with the joins each list needs (no N+1)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.db.models.expressions import OrderBy

from papreview.cases.models import Patient, Slide
from papreview.core.exceptions import NotFoundError

SLIDE_ORDERINGS: dict[str, tuple[str | OrderBy, ...]] = {
    "-triage_score": (F("triage_score").desc(nulls_last=True), "-created_at", "-id"),
    "triage_score": (F("triage_score").asc(nulls_last=True), "-created_at", "-id"),
    "-created_at": ("-created_at", "-id"),
    "created_at": ("created_at", "id"),
}


def patient_list(*, search: str = "") -> QuerySet[Patient]:
    qs = Patient.objects.annotate(slide_count=Count("slides")).order_by("identifier")
    if search:
        qs = qs.filter(identifier__icontains=search.strip())
    return qs


def patient_get(*, patient_id: int) -> Patient:
    patient = patient_list().filter(pk=patient_id).first()
    if patient is None:
        raise NotFoundError(f"No patient with id {patient_id}.")
    return patient


def _latest_run() -> QuerySet[Any]:
    """The slide's latest analysis run, read through the slides' `runs` relation (cases sits
    below analysis in the import layers)."""
    runs = Slide._meta.get_field("runs").related_model
    assert runs is not None and not isinstance(runs, str)
    return runs._default_manager.filter(slide=OuterRef("pk")).order_by("-created_at", "-id")


def _slide_queryset() -> QuerySet[Slide]:
    return Slide.objects.select_related(
        "patient", "interpretation", "interpretation__signed_out_by"
    ).annotate(
        progress=Subquery(_latest_run().values("progress")[:1]),
        latest_run_id=Subquery(_latest_run().values("id")[:1]),
        latest_run_status=Subquery(_latest_run().values("status")[:1]),
        latest_run_tiles_done=Subquery(_latest_run().values("tiles_done")[:1]),
        latest_run_tiles_total=Subquery(_latest_run().values("tiles_total")[:1]),
    )


def slide_list(*, ordering: str = "-created_at") -> QuerySet[Slide]:
    """Slides with their patient, interpretation and latest run (filter them with
    `papreview.cases.filters.SlideFilter`); `-triage_score` is the review queue (most
    suspicious first, slides without a score last)."""
    return _slide_queryset().order_by(*SLIDE_ORDERINGS[ordering])


def slide_get(*, slide_id: int) -> Slide:
    slide = _slide_queryset().filter(pk=slide_id).first()
    if slide is None:
        raise NotFoundError(f"No slide with id {slide_id}.")
    return slide
