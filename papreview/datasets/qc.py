"""Quality control: a random share of signed-out slides is re-reviewed blind by a second
reviewer; both reviewers' labels of each cell are kept for Cohen's kappa (dashboard).

* `qc_settings_get()` / `qc_settings_set(share=..., by=admin)`: the share (one settings row).
* `qc_sample()` draws that share of the signed-out slides not drawn before (random, seeded
  optionally) and creates pending QC reviews (admin action, `manage.py qc_sample`, dashboard).
* `qc_review_submit(qc_review=..., by=..., labels={cell id: class or "rejected"})`: the second
  reviewer's labels of EVERY cell of the slide (as the first reviewer left them: rejected and
  added ones included). The second reviewer must have neither screened the slide (decided,
  saw or referred any of it) nor signed it out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from papreview.accounts.roles import user_can_write, user_is_admin
from papreview.cases.models import Slide, SlideStatus
from papreview.core.exceptions import ConflictError, NotFoundError, PermissionDeniedError
from papreview.datasets.models import (
    QC_LABELS,
    QC_REJECTED,
    QCLabel,
    QCReview,
    QCSettings,
    QCStatus,
)
from papreview.review.models import Cell, CellRevision, CellSighting, ReviewStatus
from papreview.workflow.models import SlideEvent, SlideEventKind


def qc_settings_get() -> QCSettings:
    settings_row, _ = QCSettings.objects.get_or_create(pk=1)
    return settings_row


def qc_settings_set(*, share: float, by: User) -> QCSettings:
    if not user_is_admin(by):
        raise PermissionDeniedError("Only an administrator may change the QC share.")
    if not 0.0 <= share <= 1.0:
        raise ValidationError({"share": "Choose a share between 0 and 1."})
    row = qc_settings_get()
    row.share = share
    row.updated_by = by
    row.save()
    return row


def qc_candidates(*, signed_out_after: datetime | None, until: datetime) -> QuerySet[Slide]:
    qs = Slide.objects.filter(
        status=SlideStatus.SIGNED_OUT,
        interpretation__isnull=False,
        interpretation__signed_out_at__lte=until,
        qc_review__isnull=True,
    )
    if signed_out_after is not None:
        qs = qs.filter(interpretation__signed_out_at__gt=signed_out_after)
    return qs.order_by("pk")


def qc_sample(*, share: float | None = None, seed: int | None = None) -> list[QCReview]:
    """Draw `share` (default: the settings row's) of the slides signed out since the last draw.

    Each sign-out is considered once (the settings row keeps the watermark), so drawing often
    (celery beat, `manage.py qc_sample`, the dashboard button) keeps the share; a slide reopened
    and signed out again is considered again.
    """
    with transaction.atomic():
        row = QCSettings.objects.select_for_update().get(pk=qc_settings_get().pk)
        share = row.share if share is None else share
        now = timezone.now()
        candidates = list(
            qc_candidates(signed_out_after=row.considered_until, until=now).values_list(
                "pk", "interpretation__signed_out_by"
            )
        )
        k = round(share * len(candidates))
        chosen = random.Random(seed).sample(candidates, k) if k else []
        drawn = [
            QCReview.objects.create(slide_id=slide_id, first_reviewer_id=first)
            for slide_id, first in sorted(chosen)
        ]
        row.considered_until = now
        row.save(update_fields=["considered_until", "updated_at"])
    return drawn


def qc_review_list(*, status: str | None = None) -> QuerySet[QCReview]:
    qs = QCReview.objects.select_related("slide", "slide__patient", "first_reviewer", "reviewer")
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("created_at", "id")


def qc_review_get(*, qc_review_id: int) -> QCReview:
    review = qc_review_list().filter(pk=qc_review_id).first()
    if review is None:
        raise NotFoundError(f"QC review {qc_review_id} does not exist.")
    return review


def qc_review_cells(qc_review: QCReview) -> QuerySet[Cell]:
    return Cell.objects.filter(slide_id=qc_review.slide_id).order_by("pk")


def qc_reviews_open_to(user: User) -> QuerySet[QCReview]:
    """Pending QC reviews this user may do: they neither signed the slide out nor screened it
    (decided, saw or referred any of it)."""
    slide = OuterRef("slide_id")
    return (
        qc_review_list(status=QCStatus.PENDING)
        .exclude(first_reviewer=user)
        .exclude(Exists(CellRevision.objects.filter(cell__slide_id=slide, changed_by=user)))
        .exclude(Exists(CellSighting.objects.filter(cell__slide_id=slide, seen_by=user)))
        .exclude(
            Exists(SlideEvent.objects.filter(slide_id=slide, kind=SlideEventKind.REFERRED, by=user))
        )
    )


def qc_refusal(*, qc_review: QCReview, by: User) -> str:
    """Why `by` may not rescreen this slide ("" when they may)."""
    if qc_review.first_reviewer_id == by.pk:
        return "You signed this slide out; the QC review needs a second reviewer."
    if by.pk in slide_screeners(slide_id=qc_review.slide_id):
        return (
            "You screened this slide; the QC rescreening needs someone who neither screened nor "
            "signed it."
        )
    return ""


def slide_screeners(*, slide_id: int) -> set[int]:
    """Users who screened the slide: decided or saw any of its cells, or referred it."""
    decided = CellRevision.objects.filter(cell__slide_id=slide_id).values_list("changed_by_id")
    seen = CellSighting.objects.filter(cell__slide_id=slide_id).values_list("seen_by_id")
    referred = SlideEvent.objects.filter(
        slide_id=slide_id, kind=SlideEventKind.REFERRED
    ).values_list("by_id")
    return {pk for (pk,) in decided.union(seen, referred)}


def first_label(cell: Cell) -> str:
    return QC_REJECTED if cell.review_status == ReviewStatus.REJECTED else cell.current_class


@transaction.atomic
def qc_review_submit(*, qc_review: QCReview, by: User, labels: Mapping[int, str]) -> QCReview:
    if not user_can_write(by):
        raise PermissionDeniedError("Your role cannot review cells.")
    review = QCReview.objects.select_for_update().get(pk=qc_review.pk)
    if review.status == QCStatus.DONE:
        raise ConflictError("This QC review was already submitted.")
    refusal = qc_refusal(qc_review=review, by=by)
    if refusal:
        raise PermissionDeniedError(refusal)
    cells = list(qc_review_cells(review))
    missing = [c.pk for c in cells if c.pk not in labels]
    unknown = sorted(set(labels) - {c.pk for c in cells})
    bad = sorted(k for k, v in labels.items() if v not in QC_LABELS)
    errors = {}
    if missing:
        errors["labels"] = f"Label every cell; missing: {', '.join(map(str, missing))}."
    if unknown:
        errors["cells"] = f"Not cells of this slide: {', '.join(map(str, unknown))}."
    if bad:
        errors["values"] = (
            f"Cells {', '.join(map(str, bad))}: choose one of {', '.join(QC_LABELS)}."
        )
    if errors:
        raise ValidationError(errors)
    QCLabel.objects.bulk_create(
        QCLabel(
            qc_review=review,
            cell=c,
            first_label=first_label(c),
            second_label=labels[c.pk],
            model_label=c.predicted_class,
        )
        for c in cells
    )
    review.status = QCStatus.DONE
    review.reviewer = by
    review.completed_at = timezone.now()
    review.save()
    return review
