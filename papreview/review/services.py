"""Writes for cells: every change bumps the cell's version and writes a CellRevision."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from papreview.accounts.roles import user_can_write
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_start_review
from papreview.cases.transitions import REVIEWABLE_STATUSES
from papreview.core.choices import BETHESDA_CLASSES
from papreview.core.exceptions import PermissionDeniedError
from papreview.review.errors import CellNotEditableError, StaleVersionError
from papreview.review.models import Cell, CellRevision, ReviewStatus

# Fields a reviewer may change, and the fields a revision records.
EDITABLE_FIELDS: tuple[str, ...] = ("current_class", "x", "y", "width", "height", "review_status")
BOX_FIELDS: tuple[str, ...] = ("x", "y", "width", "height")


def cell_snapshot(cell: Cell) -> dict[str, Any]:
    """The reviewable state of a cell, as stored in CellRevision.before / .after."""
    data: dict[str, Any] = {name: getattr(cell, name) for name in EDITABLE_FIELDS}
    data["version"] = cell.version
    return data


def _lock_reviewable_slide(*, slide_id: int, by: User) -> Slide:
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read cells but not change them.")
    slide = Slide.objects.select_for_update().get(pk=slide_id)
    if slide.status not in REVIEWABLE_STATUSES:
        label = SlideStatus(slide.status).label.lower()
        hint = {
            SlideStatus.SIGNED_OUT: "Reopen the slide before changing its cells.",
            SlideStatus.FAILED: "Run the analysis again or add cells once it has been analysed.",
        }.get(SlideStatus(slide.status), "Wait until the analysis has finished.")
        raise CellNotEditableError(f"Slide {slide.pk} is {label}; its cells cannot change. {hint}")
    return slide_start_review(slide=slide, by=by)


def _validate_cell(*, slide: Slide, values: dict[str, Any]) -> None:
    errors: dict[str, str] = {}
    if values["current_class"] not in BETHESDA_CLASSES:
        errors["current_class"] = f"Choose one of {', '.join(BETHESDA_CLASSES)}."
    for name in BOX_FIELDS:
        if not isinstance(values[name], int):
            errors[name] = "Must be a whole number of pixels."
    if not errors:
        x, y, w, h = (values[n] for n in BOX_FIELDS)
        if x < 0 or y < 0:
            errors["x" if x < 0 else "y"] = "The box must start inside the slide (x, y >= 0)."
        if w <= 0 or h <= 0:
            errors["width" if w <= 0 else "height"] = "The box needs a positive width and height."
        elif x + w > slide.width or y + h > slide.height:
            errors["width" if x + w > slide.width else "height"] = (
                f"The box ends outside the slide ({slide.width} x {slide.height} px)."
            )
    if errors:
        raise ValidationError(errors)


def _derive_review_status(cell: Cell, changes: dict[str, Any]) -> str:
    """The review status implied by a change when the client does not set one."""
    if cell.review_status == ReviewStatus.ADDED:
        return ReviewStatus.ADDED
    new_class = changes.get("current_class", cell.current_class)
    if new_class != cell.current_class:
        return (
            ReviewStatus.CONFIRMED if new_class == cell.predicted_class else ReviewStatus.RELABELLED
        )
    moved = any(changes.get(n, getattr(cell, n)) != getattr(cell, n) for n in BOX_FIELDS)
    if moved and cell.review_status == ReviewStatus.PREDICTED:
        return ReviewStatus.CONFIRMED
    return cell.review_status


def cell_update(*, cell: Cell, version: int, by: User, **changes: Any) -> Cell:
    """Change a cell's class, box or review status, if `version` is still the current one.

    The row is updated with `UPDATE ... WHERE version = <version>`; when another reviewer changed
    it first, StaleVersionError carries the current cell. Without an explicit review_status a class
    change marks the cell relabelled (confirmed when it goes back to the predicted class) and a
    moved predicted cell confirmed. A CellRevision (who, when, before, after) is written in the
    same transaction. Changing nothing returns the cell as it is, with no revision.
    """
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in unknown})
    if not changes:
        raise ValidationError(
            f"Nothing to change: send at least one of {', '.join(EDITABLE_FIELDS)}."
        )

    with transaction.atomic():
        slide = _lock_reviewable_slide(slide_id=cell.slide_id, by=by)
        current = Cell.objects.get(pk=cell.pk)
        if current.version != version:
            raise StaleVersionError(
                f"Cell {cell.pk} was changed by someone else (version {current.version}, you sent "
                f"{version}). Reload it, check the change, and apply yours again.",
                cell=current,
            )
        values = {name: changes.get(name, getattr(current, name)) for name in EDITABLE_FIELDS}
        if "review_status" not in changes:
            values["review_status"] = _derive_review_status(current, changes)
        _validate_cell(slide=slide, values=values)
        status = values["review_status"]
        if status not in ReviewStatus.values:
            raise ValidationError(
                {"review_status": f"Choose one of {', '.join(ReviewStatus.values)}."}
            )
        if status == ReviewStatus.ADDED and current.run_id is not None:
            raise ValidationError({"review_status": "Only a cell a reviewer drew can be 'added'."})
        if status == ReviewStatus.PREDICTED and current.run_id is None:
            raise ValidationError(
                {"review_status": "A cell a reviewer drew cannot be 'predicted'."}
            )

        before = cell_snapshot(current)
        if all(before[name] == values[name] for name in EDITABLE_FIELDS):
            return current

        now = timezone.now()
        updated = Cell.objects.filter(pk=cell.pk, version=version).update(
            **values,
            version=F("version") + 1,
            last_reviewed_by=by,
            last_reviewed_at=now,
            updated_at=now,
        )
        if updated != 1:
            fresh = Cell.objects.get(pk=cell.pk)
            raise StaleVersionError(
                f"Cell {cell.pk} was changed by someone else (version {fresh.version}). Reload it "
                "and apply your change again.",
                cell=fresh,
            )
        result = Cell.objects.get(pk=cell.pk)
        after = cell_snapshot(result)
        CellRevision.objects.create(
            cell=result, version=result.version, changed_by=by, before=before, after=after
        )
        audit_record(
            action=AuditAction.CELL_CHANGED,
            actor=by,
            target=result,
            data={"before": before, "after": after},
        )
    return result


def cell_add(
    *,
    slide: Slide,
    by: User,
    x: int,
    y: int,
    width: int,
    height: int,
    current_class: str,
) -> Cell:
    """A cell the model missed, drawn by a reviewer (review status `added`, no run)."""
    values: dict[str, Any] = {
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "current_class": current_class,
        "review_status": ReviewStatus.ADDED,
    }
    with transaction.atomic():
        locked = _lock_reviewable_slide(slide_id=slide.pk, by=by)
        _validate_cell(slide=locked, values=values)
        now = timezone.now()
        cell = Cell.objects.create(
            slide=locked,
            run=None,
            predicted_class="",
            last_reviewed_by=by,
            last_reviewed_at=now,
            version=1,
            **values,
        )
        after = cell_snapshot(cell)
        CellRevision.objects.create(cell=cell, version=1, changed_by=by, before={}, after=after)
        audit_record(action=AuditAction.CELL_ADDED, actor=by, target=cell, data={"after": after})
    slide.status = locked.status
    return cell
