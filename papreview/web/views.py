"""Thin HTML views: the review queue (home), the upload page and the slide review page.

The pages are server-rendered shells; their scripts (static/js/) talk to the REST API for
everything that changes data. LoginRequiredMiddleware keeps anonymous users out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from inference.types import CLASS_COLOURS, Bethesda
from papreview.accounts.roles import (
    SIGN_OUT_CATEGORIES,
    Role,
    user_can_reopen,
    user_can_write,
    user_has_role,
)
from papreview.analysis.selectors import analysis_run_set_aside
from papreview.audit.services import audit_slide_opened
from papreview.cases.filters import OPEN, SlideFilter
from papreview.cases.models import Slide, SlideStatus, SpecimenAdequacy
from papreview.cases.selectors import patient_list, slide_get
from papreview.core.choices import BETHESDA_CLASSES, SEVERITY
from papreview.core.exceptions import NotFoundError
from papreview.imaging.selectors import TILE_GEOMETRY
from papreview.review.models import DECIDED_STATUSES, ReviewStatus
from papreview.workflow.bethesda import page_vocabulary, report_labels, slide_report_get
from papreview.workflow.selectors import (
    review_queue_list,
    review_queue_next,
    reviewer_list,
)

QUEUE_PAGE_SIZE = 50
# Bytes per upload request from the upload page (the server accepts up to UPLOAD_CHUNK_MAX_BYTES).
UPLOAD_CHUNK_SIZE = 8 * 1024 * 1024
CLASS_NAMES: dict[str, str] = {
    Bethesda.NILM: "Negative for intraepithelial lesion or malignancy",
    Bethesda.ASC_US: "Atypical squamous cells of undetermined significance",
    Bethesda.LSIL: "Low-grade squamous intraepithelial lesion",
    Bethesda.ASC_H: "Atypical squamous cells, cannot exclude HSIL",
    Bethesda.HSIL: "High-grade squamous intraepithelial lesion",
    Bethesda.SCC: "Squamous cell carcinoma",
}
IN_PROGRESS = (SlideStatus.UPLOADED, SlideStatus.QUEUED, SlideStatus.ANALYSING)


@dataclass(frozen=True)
class QueueRow:
    slide: Slide
    suggestion: str
    suggestion_source: str
    in_progress: bool


def _suggestion(slide: Slide) -> tuple[str, str]:
    interpretation = getattr(slide, "interpretation", None)
    if interpretation is not None and slide.status == SlideStatus.SIGNED_OUT:
        return interpretation.bethesda_category, "signed out"
    draft = getattr(slide, "interpretation_draft", None)
    if draft is not None and draft.bethesda_category:
        return draft.bethesda_category, "draft"
    reviewed: str | None = getattr(slide, "reviewed_class", None)
    if reviewed:
        return reviewed, "reviewed cells"
    if slide.triage_class:
        return slide.triage_class, "AI"
    return "", ""


def _query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@require_safe
def review_queue(request: HttpRequest) -> HttpResponse:
    """Slides to review, most suspicious first, with filters, patient search and paging."""
    data = request.GET.copy()
    data.setdefault("status", OPEN)  # the queue shows what is not signed out yet
    filters = SlideFilter(data, queryset=review_queue_list(), request=request)
    # Invalid filters are shown on the form; the queue is then shown unfiltered.
    slides = filters.qs if filters.is_valid() else review_queue_list()
    paginator = Paginator(slides, QUEUE_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = [
        QueueRow(slide, *_suggestion(slide), in_progress=slide.status in IN_PROGRESS)
        for slide in page.object_list
    ]
    return render(
        request,
        "web/queue.html",
        {
            "form": filters.form,
            "page": page,
            "rows": rows,
            "reviewers": list(reviewer_list()),
            "query": _query_without_page(request),
            "class_colours": CLASS_COLOURS,
            "page_config": {"slideStatusLabels": dict(SlideStatus.choices)},
            "can_write": user_can_write(request.user),
        },
    )


@require_safe
def upload_page(request: HttpRequest) -> HttpResponse:
    """Pick or create a patient, then drop slide files (chunked, resumable uploads)."""
    patients = list(patient_list().order_by("-created_at")[:200])
    selected = request.GET.get("patient", "")
    return render(
        request,
        "web/upload.html",
        {
            "patients": patients,
            "selected_patient": selected,
            "can_write": user_can_write(request.user),
            "chunk_size": min(UPLOAD_CHUNK_SIZE, settings.UPLOAD_CHUNK_MAX_BYTES),
        },
    )


def _sign_out_classes(user: Any) -> list[str]:
    allowed: set[str] = set()
    for role, categories in SIGN_OUT_CATEGORIES.items():
        if user_has_role(user, role):
            allowed |= set(BETHESDA_CLASSES if categories is None else categories)
    return [c for c in BETHESDA_CLASSES if c in allowed]


@require_safe
def slide_review(request: HttpRequest, slide_id: int) -> HttpResponse:
    """The deep-zoom viewer with the cells, the gallery and the interpretation panel."""
    try:
        slide = slide_get(slide_id=slide_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    audit_slide_opened(slide=slide, user=request.user, via="review_page")
    config = {
        "slide": {
            "id": slide.pk,
            "width": slide.width,
            "height": slide.height,
            "status": slide.status,
            "filename": slide.original_filename,
            "mpp": slide.mpp,
            "planes": slide.focal_planes,
        },
        "urls": {
            "slide": reverse("slide-detail", args=[slide.pk]),
            # the tile geometry in the URL (and so in every tile's): see imaging.selectors
            "dzi": reverse("slide-deepzoom", args=[slide.pk]) + f"?g={TILE_GEOMETRY}",
            "cellLayer": reverse("slide-cell-layer", args=[slide.pk]),
            # the whole layer, as the page loads it (preloaded: the same URL in the template)
            "cellColumns": reverse("slide-cell-layer", args=[slide.pk]) + "?layout=columns",
            "cells": reverse("slide-cells", args=[slide.pk]),
            "cell": reverse("cell-detail", args=[0]).replace("/0/", "/{id}/"),
            "crop": reverse("cell-crop", args=[0]).replace("/0/", "/{id}/"),
            "interpretation": reverse("slide-interpretation", args=[slide.pk]),
            "signOut": reverse("slide-sign-out", args=[slide.pk]),
            "analyze": reverse("slide-analyze", args=[slide.pk]),
            "reopen": reverse("slide-reopen", args=[slide.pk]),
            "refer": reverse("slide-refer", args=[slide.pk]),
            "sightings": reverse("slide-cell-sightings", args=[slide.pk]),
            "setAside": reverse("slide-set-aside", args=[slide.pk]),
            "clearSeen": reverse("slide-cells-clear", args=[slide.pk]),
            "reviewers": reverse("reviewer-list"),
            "osdImages": "/static/vendor/openseadragon/images/",
        },
        "user": {
            "canWrite": user_can_write(request.user),
            "canReopen": user_can_reopen(request.user),
            "signOutClasses": _sign_out_classes(request.user),
            "canRefer": user_can_write(request.user),
            "isPathologist": user_has_role(request.user, Role.PATHOLOGIST, Role.ADMIN),
        },
        "review": {
            "flagThreshold": settings.REVIEW_FLAG_THRESHOLD,
            "decidedStatuses": list(DECIDED_STATUSES),  # a person acted on the cell
        },
        "reviewStatusLabels": dict(ReviewStatus.choices),
        "slideStatusLabels": dict(SlideStatus.choices),
        "testHooks": settings.PAPREVIEW_TEST_HOOKS,
        "classes": list(BETHESDA_CLASSES),
        "classNames": CLASS_NAMES,
        "colours": CLASS_COLOURS,
        "severity": SEVERITY,
        "adequacy": SpecimenAdequacy.choices,
        "bethesda": page_vocabulary(),
    }
    return render(
        request,
        "web/review.html",
        {
            "slide": slide,
            "config": config,
            "classes": [(c, CLASS_COLOURS[c], CLASS_NAMES[c]) for c in BETHESDA_CLASSES],
            "adequacy": SpecimenAdequacy.choices,
            "in_progress": slide.status in IN_PROGRESS,
            "set_aside": analysis_run_set_aside(slide_id=slide.pk),
            "next_slide": (
                review_queue_next(after_slide_id=slide.pk, user=request.user)
                if isinstance(request.user, User)
                else None
            ),
        },
    )


@require_safe
def slide_report(request: HttpRequest, slide_id: int) -> HttpResponse:
    """The slide's Bethesda report as a printable page (A4); preliminary until signed out."""
    try:
        slide = slide_get(slide_id=slide_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    audit_slide_opened(slide=slide, user=request.user, via="report_page")
    rep = slide_report_get(slide=slide)
    return render(
        request,
        "web/report.html",
        {
            "slide": slide,
            "rep": rep,
            "labels": report_labels(rep) if rep is not None else None,
            "printed_at": timezone.now(),
        },
    )
