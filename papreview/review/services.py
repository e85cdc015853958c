"""Writes for cells: every change bumps the cell's version and writes a CellRevision."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Field, Model
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


def _not_editable(slide: Slide) -> CellNotEditableError:
    label = SlideStatus(slide.status).label.lower()
    hint = {
        SlideStatus.SIGNED_OUT: "Reopen the slide before changing its cells.",
        SlideStatus.FAILED: "Run the analysis again or add cells once it has been analysed.",
    }.get(SlideStatus(slide.status), "Wait until the analysis has finished.")
    return CellNotEditableError(f"Slide {slide.pk} is {label}; its cells cannot change. {hint}")


def _lock_reviewable_slide(*, slide_id: int, by: User) -> Slide:
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read cells but not change them.")
    slide = Slide.objects.select_for_update().get(pk=slide_id)
    if slide.status not in REVIEWABLE_STATUSES:
        raise _not_editable(slide)
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


def _stale(cell: Cell, version: int) -> StaleVersionError:
    return StaleVersionError(
        f"Cell {cell.pk} was changed by someone else (version {cell.version}, you sent "
        f"{version}). Reload it, check the change, and apply yours again.",
        cell=cell,
    )


def _field(model: type[Model], name: str) -> tuple[Field[Any, Any], str]:
    """A concrete field and its quoted column name."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return field, connection.ops.quote_name(field.column)


def _column(model: type[Model], name: str) -> str:
    return _field(model, name)[1]


def _cell_update_returning(
    *, cell_id: int, slide_id: int, version: int, values: dict[str, Any]
) -> Cell | None:
    """`UPDATE cell ... WHERE id AND version AND <its slide is reviewable> RETURNING *`: the new
    row, or None when the version is no longer current or the slide has left review.

    The slide row is share-locked by the same statement (PostgreSQL): edits of one slide run side
    by side, while a sign-out or re-analysis (which lock the slide for update) waits for them to
    commit, and an edit waiting behind a sign-out sees the new status and changes nothing.
    """
    qn = connection.ops.quote_name
    assignments = []
    params: list[Any] = []
    for name, value in values.items():
        field, column = _field(Cell, name)
        assignments.append(f"{column} = %s")
        params.append(field.get_db_prep_save(value, connection))
    version_column = _column(Cell, "version")
    assignments.append(f"{version_column} = {version_column} + 1")
    reviewable = sorted(REVIEWABLE_STATUSES)
    share_lock = " FOR SHARE" if connection.vendor == "postgresql" else ""
    returning = ", ".join(qn(f.column) for f in Cell._meta.concrete_fields if f.column)
    sql = (
        f"UPDATE {qn(Cell._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {_column(Cell, 'id')} = %s AND {version_column} = %s "
        f"AND {_column(Cell, 'slide')} IN ("
        f"SELECT {_column(Slide, 'id')} FROM {qn(Slide._meta.db_table)} "
        f"WHERE {_column(Slide, 'id')} = %s "
        f"AND {_column(Slide, 'status')} IN ({', '.join(['%s'] * len(reviewable))}){share_lock}) "
        f"RETURNING {returning}"
    )
    params += [cell_id, version, slide_id, *reviewable]
    rows = list(Cell.objects.raw(sql, params))
    return rows[0] if rows else None


def cell_update(*, cell: Cell, version: int, by: User, **changes: Any) -> Cell:
    """Change a cell's class, box or review status, if `version` is still the current one.

    `cell` is the cell as read (`cell_get`, with its slide). The row is updated with one
    `UPDATE ... WHERE version = <version> AND <slide still in review> RETURNING`; when another
    reviewer changed it first, StaleVersionError carries the current cell, and a slide signed out
    meanwhile is CellNotEditableError. Without an explicit review_status a class change marks the
    cell relabelled (confirmed when it goes back to the predicted class) and a moved predicted
    cell confirmed. A CellRevision (who, when, before, after) and the audit event are written in
    the same transaction. Changing nothing returns the cell as it is, with no revision.
    """
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in unknown})
    if not changes:
        raise ValidationError(
            f"Nothing to change: send at least one of {', '.join(EDITABLE_FIELDS)}."
        )
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read cells but not change them.")

    current = cell
    if current.version != version or not Cell.slide.is_cached(current):
        # A cell read earlier than the version the client sent, or without its slide.
        current = Cell.objects.select_related("slide").get(pk=cell.pk)
    slide = current.slide
    if slide.status not in REVIEWABLE_STATUSES:
        raise _not_editable(slide)
    if current.version != version:
        raise _stale(current, version)

    values = {name: changes.get(name, getattr(current, name)) for name in EDITABLE_FIELDS}
    if "review_status" not in changes:
        values["review_status"] = _derive_review_status(current, changes)
    _validate_cell(slide=slide, values=values)
    status = values["review_status"]
    if status not in ReviewStatus.values:
        raise ValidationError({"review_status": f"Choose one of {', '.join(ReviewStatus.values)}."})
    if status == ReviewStatus.ADDED and current.run_id is not None:
        raise ValidationError({"review_status": "Only a cell a reviewer drew can be 'added'."})
    if status == ReviewStatus.PREDICTED and current.run_id is None:
        raise ValidationError({"review_status": "A cell a reviewer drew cannot be 'predicted'."})

    before = cell_snapshot(current)
    if all(before[name] == values[name] for name in EDITABLE_FIELDS):
        return current

    with transaction.atomic():
        if slide.status != SlideStatus.IN_REVIEW or slide.assigned_reviewer_id is None:
            # The first change of a slide: in review, and assigned to this reviewer.
            slide = _lock_reviewable_slide(slide_id=slide.pk, by=by)
        now = timezone.now()
        result = _cell_update_returning(
            cell_id=current.pk,
            slide_id=slide.pk,
            version=version,
            values={
                **values,
                "last_reviewed_by": by.pk,
                "last_reviewed_at": now,
                "updated_at": now,
            },
        )
        if result is None:
            fresh = Cell.objects.select_related("slide").get(pk=cell.pk)
            if fresh.slide.status not in REVIEWABLE_STATUSES:
                raise _not_editable(fresh.slide)
            raise _stale(fresh, version)
        result.slide = slide
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
