"""Writes of the review workflow: assigning a slide, saving the interpretation draft.

Reopening a signed-out slide is `papreview.cases.services.slide_reopen`."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction

from papreview.accounts.roles import Role, user_can_write, user_has_role
from papreview.cases.models import Slide, SlideStatus, SpecimenAdequacy
from papreview.core.choices import BETHESDA_CLASSES
from papreview.core.exceptions import ConflictError, PermissionDeniedError
from papreview.workflow.models import InterpretationDraft, SlideEvent, SlideEventKind

REVIEWER_ROLES = (Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST, Role.ADMIN)


class SlideSignedOutError(ConflictError):
    code = "slide_signed_out"


@transaction.atomic
def slide_assign(*, slide: Slide, reviewer: User | None, by: User) -> Slide:
    """Give the slide to a reviewer (a pathologist or cytotechnologist), or to nobody."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not assign them.")
    if reviewer is not None and not (
        reviewer.is_active and user_has_role(reviewer, *REVIEWER_ROLES)
    ):
        raise ValidationError(
            {"reviewer": f"{reviewer.username} is not a pathologist or cytotechnologist."}
        )
    locked = Slide.objects.select_for_update().get(pk=slide.pk)
    before = locked.assigned_reviewer_id
    after = reviewer.pk if reviewer is not None else None
    if before != after:
        Slide.objects.filter(pk=slide.pk).update(assigned_reviewer_id=after)
        SlideEvent.objects.create(
            slide=locked,
            kind=SlideEventKind.ASSIGNED,
            by=by,
            before={"assigned_reviewer": before},
            after={"assigned_reviewer": after},
        )
    slide.assigned_reviewer = reviewer
    return slide


@transaction.atomic
def interpretation_draft_save(
    *,
    slide: Slide,
    by: User,
    bethesda_category: str = "",
    specimen_adequacy: str = SpecimenAdequacy.SATISFACTORY,
    comment: str = "",
) -> InterpretationDraft:
    """Keep what the reviewer has chosen so far (nothing is lost on a reload)."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not interpret them.")
    if bethesda_category and bethesda_category not in BETHESDA_CLASSES:
        raise ValidationError(
            {"bethesda_category": f"Choose one of {', '.join(BETHESDA_CLASSES)}."}
        )
    if specimen_adequacy not in SpecimenAdequacy.values:
        raise ValidationError(
            {"specimen_adequacy": f"Choose one of {', '.join(SpecimenAdequacy.values)}."}
        )
    locked = Slide.objects.select_for_update().only("pk", "status").get(pk=slide.pk)
    if locked.status == SlideStatus.SIGNED_OUT:
        raise SlideSignedOutError(
            f"Slide {slide.pk} is signed out; a pathologist must reopen it before it can change."
        )
    draft, _ = InterpretationDraft.objects.update_or_create(
        slide_id=slide.pk,
        defaults={
            "bethesda_category": bethesda_category,
            "specimen_adequacy": specimen_adequacy,
            "comment": comment,
            "updated_by": by,
        },
    )
    return draft
