"""Writes of the review workflow, in the order a slide meets them: assigning it, saving the
interpretation draft, referring it to a pathologist, signing it out, and reopening it.

The rules that keep sign-out safe live here, next to sign-out:
- a slide is never signed out less severe than a flagged cell nobody decided
  (`papreview.review.selectors.slide_flag_summary`);
- a cytotechnologist signs out NILM only, never a referred slide, and never over a pathologist's
  more severe draft or cell labels, which they cannot reassign away either;
- a stale draft save is refused with the current draft (drafts carry a version, as cells do).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from papreview.accounts.roles import (
    Role,
    user_can_reopen,
    user_can_sign_out,
    user_can_write,
    user_has_role,
    user_roles,
)
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.errors import SignOutNotAllowedError
from papreview.cases.models import (
    Interpretation,
    Slide,
    SlideStatus,
    SpecimenAdequacy,
    SpecimenType,
)
from papreview.cases.services import slide_start_review, slide_transition
from papreview.core.choices import BETHESDA_CLASSES, SEVERITY
from papreview.core.exceptions import ConflictError, PermissionDeniedError
from papreview.review.models import CellRevision, ReviewStatus
from papreview.review.selectors import slide_flag_summary
from papreview.workflow.bethesda import report_clean
from papreview.workflow.models import InterpretationDraft, SlideEvent, SlideEventKind

REVIEWER_ROLES = (Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST, Role.ADMIN)
# Who counts as a pathologist for the two-tier rules (an admin may act as one).
PATHOLOGIST_ROLES = (Role.PATHOLOGIST, Role.ADMIN)
MAX_REASON = 2000


class SlideSignedOutError(ConflictError):
    code = "slide_signed_out"


class StaleDraftError(ConflictError):
    code = "stale_draft"


class FlaggedCellsUndecidedError(ConflictError):
    code = "flagged_cells_undecided"


class PathologistFindingError(PermissionDeniedError):
    code = "pathologist_finding"


def _is_pathologist(user: User) -> bool:
    return user_has_role(user, *PATHOLOGIST_ROLES)


def _pathologists() -> QuerySet[User]:
    return User.objects.filter(
        Q(groups__name__in=[r.value for r in PATHOLOGIST_ROLES]) | Q(is_superuser=True)
    )


def pathologist_finding(*, slide_id: int) -> str:
    """The most severe class a pathologist has put on the slide so far: their latest label of
    each cell (rejections excluded) and the category of their latest draft; "" when none.

    Read from the revisions and the draft's `pathologist_category`, so a later change by someone
    else does not hide it."""
    latest: dict[int, dict[str, Any]] = {}
    revisions = (
        CellRevision.objects.filter(cell__slide_id=slide_id, changed_by__in=_pathologists())
        .order_by("cell_id", "version")
        .values_list("cell_id", "after")
    )
    for cell_id, after in revisions:
        latest[cell_id] = after
    classes = [
        a["current_class"]
        for a in latest.values()
        if a.get("review_status") != ReviewStatus.REJECTED and a.get("current_class") in SEVERITY
    ]
    draft = InterpretationDraft.objects.filter(slide_id=slide_id).only("pathologist_category")
    category = next((d.pathologist_category for d in draft), "")
    if category:
        classes.append(category)
    return max(classes, key=lambda c: SEVERITY[c], default="")


def _check_no_pathologist_finding_above(
    *, slide: Slide, by: User, category: str, doing: str
) -> None:
    if _is_pathologist(by):
        return
    finding = pathologist_finding(slide_id=slide.pk)
    if finding and SEVERITY[finding] > SEVERITY[category]:
        raise PathologistFindingError(
            f"A pathologist has labelled this slide {finding}; a cytotechnologist cannot "
            f"{doing}. Leave it for the pathologist."
        )


@transaction.atomic
def slide_assign(*, slide: Slide, reviewer: User | None, by: User) -> Slide:
    """Give the slide to a reviewer (a pathologist or cytotechnologist), or to nobody.

    A cytotechnologist cannot move a referred slide, or one a pathologist labelled abnormal."""
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
    if before == after:
        slide.assigned_reviewer = reviewer
        return slide
    if not _is_pathologist(by):
        if locked.status == SlideStatus.REFERRED:
            raise PathologistFindingError(
                "This slide is referred to a pathologist; only a pathologist may reassign it."
            )
        _check_no_pathologist_finding_above(
            slide=locked, by=by, category="NILM", doing="reassign it"
        )
    Slide.objects.filter(pk=slide.pk).update(assigned_reviewer_id=after)
    SlideEvent.objects.create(
        slide=locked,
        kind=SlideEventKind.ASSIGNED,
        by=by,
        before={"assigned_reviewer": before},
        after={"assigned_reviewer": after},
    )
    audit_record(
        action=AuditAction.SLIDE_ASSIGNED,
        actor=by,
        target=locked,
        data={"from": before, "to": after},
    )
    slide.assigned_reviewer = reviewer
    return slide


def _clean_interpretation(
    *,
    bethesda_category: str,
    specimen_adequacy: str,
    specimen_type: str,
    report: Any,
    blank_ok: bool,
) -> dict[str, Any]:
    if (bethesda_category or not blank_ok) and bethesda_category not in BETHESDA_CLASSES:
        raise ValidationError(
            {"bethesda_category": f"Choose one of {', '.join(BETHESDA_CLASSES)}."}
        )
    if specimen_adequacy not in SpecimenAdequacy.values:
        raise ValidationError(
            {"specimen_adequacy": f"Choose one of {', '.join(SpecimenAdequacy.values)}."}
        )
    if specimen_type and specimen_type not in SpecimenType.values:
        raise ValidationError({"specimen_type": f"Choose one of {', '.join(SpecimenType.values)}."})
    return report_clean(report or {})


def draft_snapshot(draft: InterpretationDraft | None) -> dict[str, Any] | None:
    """The draft as plain data (what a stale save is answered with)."""
    if draft is None:
        return None
    return {
        "bethesda_category": draft.bethesda_category,
        "specimen_adequacy": draft.specimen_adequacy,
        "specimen_type": draft.specimen_type,
        "report": draft.report,
        "comment": draft.comment,
        "version": draft.version,
        "updated_by": draft.updated_by.username if draft.updated_by else None,
        "updated_at": draft.updated_at.isoformat(),
    }


@transaction.atomic
def interpretation_draft_save(
    *,
    slide: Slide,
    by: User,
    version: int,
    bethesda_category: str = "",
    specimen_adequacy: str = SpecimenAdequacy.SATISFACTORY,
    specimen_type: str = "",
    report: dict[str, Any] | None = None,
    comment: str = "",
) -> InterpretationDraft:
    """Keep what the reviewer has chosen so far (nothing is lost on a reload).

    `version` is the draft version the reviewer read (0 when there was no draft): when someone
    saved in between, StaleDraftError carries their draft and nothing is overwritten."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not interpret them.")
    clean_report = _clean_interpretation(
        bethesda_category=bethesda_category,
        specimen_adequacy=specimen_adequacy,
        specimen_type=specimen_type,
        report=report,
        blank_ok=True,
    )
    locked = Slide.objects.select_for_update().only("pk", "status").get(pk=slide.pk)
    if locked.status == SlideStatus.SIGNED_OUT:
        raise SlideSignedOutError(
            f"Slide {slide.pk} is signed out; a pathologist must reopen it before it can change."
        )
    # The slide row lock above serialises draft saves; updated_by is read for the message.
    draft = (
        InterpretationDraft.objects.select_related("updated_by").filter(slide_id=slide.pk).first()
    )
    if draft is None and version != 0:
        raise StaleDraftError(
            f"Slide {slide.pk} has no draft yet (you sent version {version}); send version 0.",
            extra={"draft": None},
        )
    if draft is not None and version != draft.version:
        who = draft.updated_by.username if draft.updated_by else "someone"
        raise StaleDraftError(
            f"{who} changed this draft at {timezone.localtime(draft.updated_at):%H:%M:%S} "
            f"(version {draft.version}, you edited version {version}). Their draft is shown; "
            "your change was not saved.",
            extra={"draft": draft_snapshot(draft)},
        )
    values = {
        "bethesda_category": bethesda_category,
        "specimen_adequacy": specimen_adequacy,
        "specimen_type": specimen_type,
        "report": clean_report,
        "comment": comment,
        "updated_by": by,
    }
    if _is_pathologist(by):
        values["pathologist_category"] = bethesda_category
    if draft is None:
        draft = InterpretationDraft.objects.create(slide_id=slide.pk, version=1, **values)
    else:
        for name, value in values.items():
            setattr(draft, name, value)
        draft.version += 1
        draft.save()
    audit_record(
        action=AuditAction.DRAFT_SAVED,
        actor=by,
        target=locked,
        data={"bethesda_category": bethesda_category, "version": draft.version},
    )
    return draft


@transaction.atomic
def slide_refer(*, slide: Slide, by: User, reason: str, pathologist: User | None = None) -> Slide:
    """A screener refers the slide to a pathologist (status `referred`), with the reason, to one
    pathologist or to all of them (unassigned). The pathologist signs it out."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not refer them.")
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the slide needs a pathologist."})
    if len(reason) > MAX_REASON:
        raise ValidationError({"reason": f"At most {MAX_REASON} characters."})
    if pathologist is not None and not (
        pathologist.is_active and user_has_role(pathologist, Role.PATHOLOGIST)
    ):
        raise ValidationError({"pathologist": f"{pathologist.username} is not a pathologist."})
    locked = Slide.objects.select_for_update().get(pk=slide.pk)
    if locked.status == SlideStatus.REFERRED:
        raise ConflictError(f"Slide {slide.pk} is already referred to a pathologist.")
    before = {"status": locked.status, "assigned_reviewer": locked.assigned_reviewer_id}
    slide_start_review(slide=locked, by=by)
    slide_transition(slide=locked, to=SlideStatus.REFERRED)
    after_reviewer = pathologist.pk if pathologist is not None else None
    Slide.objects.filter(pk=slide.pk).update(assigned_reviewer_id=after_reviewer)
    SlideEvent.objects.create(
        slide=locked,
        kind=SlideEventKind.REFERRED,
        by=by,
        reason=reason,
        before=before,
        after={"status": SlideStatus.REFERRED, "assigned_reviewer": after_reviewer},
    )
    audit_record(
        action=AuditAction.REFER,
        actor=by,
        target=locked,
        data={"assigned_reviewer": after_reviewer},
    )
    slide.status = SlideStatus.REFERRED
    slide.assigned_reviewer_id = after_reviewer
    return slide


def _check_sign_out_allowed(*, slide: Slide, by: User, category: str) -> None:
    """The role, two-tier and flagged-cell rules of sign-out (the slide row is locked)."""
    if not user_can_sign_out(by, category):
        if Role.CYTOTECHNOLOGIST in user_roles(by):
            raise SignOutNotAllowedError(
                f"A cytotechnologist may sign out only NILM slides; {category} needs a "
                "pathologist. Refer the slide to a pathologist."
            )
        raise SignOutNotAllowedError("Only a pathologist may sign out slides.")
    if not _is_pathologist(by) and slide.status == SlideStatus.REFERRED:
        raise SignOutNotAllowedError(
            "This slide is referred to a pathologist; a pathologist signs it out."
        )
    _check_no_pathologist_finding_above(
        slide=slide, by=by, category=category, doing=f"sign it out {category}"
    )
    undecided = slide_flag_summary(slide_id=slide.pk).undecided_above(category)
    if undecided:
        n = len(undecided)
        raise FlaggedCellsUndecidedError(
            f"{n} flagged cell{'s' if n != 1 else ''} more severe than {category} not yet "
            "reviewed; review them or mark them reviewed.",
            extra={"undecided_cells": undecided},
        )


@transaction.atomic
def slide_sign_out(
    *,
    slide: Slide,
    by: User,
    bethesda_category: str,
    specimen_adequacy: str = SpecimenAdequacy.SATISFACTORY,
    specimen_type: str = "",
    report: dict[str, Any] | None = None,
    comment: str = "",
) -> Interpretation:
    """Set the slide's interpretation (a structured Bethesda report) and sign it out.

    Refused (nothing changes) when the reviewer's role may not sign out this category, when a
    flagged cell more severe than it is undecided, and, for a cytotechnologist, when the slide
    is referred or a pathologist labelled it more severely. The slide row is locked first, so
    cell edits and re-analysis wait. An analysed slide passes through `in_review`; statuses
    other than analysed, in review or referred raise IllegalTransitionError.
    """
    clean_report = _clean_interpretation(
        bethesda_category=bethesda_category,
        specimen_adequacy=specimen_adequacy,
        specimen_type=specimen_type,
        report=report,
        blank_ok=False,
    )
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not sign them out.")
    locked = Slide.objects.select_for_update().get(pk=slide.pk)
    _check_sign_out_allowed(slide=locked, by=by, category=bethesda_category)
    slide_start_review(slide=locked, by=by)
    slide_transition(slide=locked, to=SlideStatus.SIGNED_OUT)
    slide.status = locked.status
    interpretation, _ = Interpretation.objects.update_or_create(
        slide=locked,
        defaults={
            "bethesda_category": bethesda_category,
            "specimen_adequacy": specimen_adequacy,
            "specimen_type": specimen_type,
            "report": clean_report,
            "comment": comment,
            "signed_out_by": by,
            "signed_out_at": timezone.now(),
        },
    )
    audit_record(
        action=AuditAction.SIGN_OUT,
        actor=by,
        target=locked,
        data={
            "bethesda_category": bethesda_category,
            "specimen_adequacy": specimen_adequacy,
        },
    )
    return interpretation


def interpretation_snapshot(interpretation: Interpretation | None) -> dict[str, Any]:
    """The signed-out interpretation as plain data (kept in a reopening's event)."""
    if interpretation is None:
        return {}
    return {
        "bethesda_category": interpretation.bethesda_category,
        "specimen_adequacy": interpretation.specimen_adequacy,
        "specimen_type": interpretation.specimen_type,
        "report": interpretation.report,
        "comment": interpretation.comment,
        "signed_out_by": interpretation.signed_out_by_id,
        "signed_out_at": interpretation.signed_out_at.isoformat(),
    }


@transaction.atomic
def slide_reopen(*, slide: Slide, by: User, reason: str) -> SlideEvent:
    """Take a signed-out slide back into review. Only a pathologist (or admin) may, with a reason.

    The reason and the interpretation that was signed out are kept as a `reopened` slide event
    (the slide's revision history) and in the audit trail; the interpretation stays on the slide
    until the next sign-out replaces it, and is the starting point of the new draft.
    """
    reason = reason.strip()
    if not user_can_reopen(by):
        raise PermissionDeniedError("Only a pathologist may reopen a signed-out slide.")
    if not reason:
        raise ValidationError({"reason": "Say why the slide is reopened."})
    interpretation = Interpretation.objects.filter(slide_id=slide.pk).first()
    slide_transition(slide=slide, to=SlideStatus.IN_REVIEW)
    audit_record(action=AuditAction.REOPEN, actor=by, target=slide)
    event = SlideEvent.objects.create(
        slide_id=slide.pk,
        kind=SlideEventKind.REOPENED,
        by=by,
        reason=reason,
        before={"status": SlideStatus.SIGNED_OUT, **interpretation_snapshot(interpretation)},
        after={"status": SlideStatus.IN_REVIEW},
    )
    if interpretation is not None:
        draft = InterpretationDraft.objects.filter(slide_id=slide.pk).first()
        values = {
            "bethesda_category": interpretation.bethesda_category,
            "specimen_adequacy": interpretation.specimen_adequacy,
            "specimen_type": interpretation.specimen_type,
            "report": interpretation.report,
            "comment": interpretation.comment,
            "updated_by": by,
        }
        if draft is None:
            InterpretationDraft.objects.create(slide_id=slide.pk, version=1, **values)
        else:
            for name, value in values.items():
                setattr(draft, name, value)
            draft.version += 1
            draft.save()
    return event
