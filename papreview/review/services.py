"""Writes for cells: every change bumps the cell's version and writes a CellRevision; what a
reviewer saw is recorded apart (CellSighting), and seen flagged cells can be cleared in one go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Field, Model
from django.utils import timezone

from inference.types import Bethesda
from papreview.accounts.roles import user_can_write
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_start_review
from papreview.cases.transitions import REVIEWABLE_STATUSES
from papreview.core.choices import BETHESDA_CLASSES
from papreview.core.exceptions import ConflictError, PermissionDeniedError
from papreview.review.boxes import CELL_MAX_MICRONS, cell_box_max_px
from papreview.review.errors import CellNotEditableError, StaleVersionError
from papreview.review.models import Cell, CellRevision, CellSighting, ReviewStatus, SightingVia

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


def _validate_cell(*, slide: Slide, values: dict[str, Any], box_changed: bool = True) -> None:
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
        elif box_changed and max(w, h) > (cap := cell_box_max_px(slide.mpp)):
            errors["width" if w >= h else "height"] = (
                f"The box is larger than a cell: at most {cap} px ({CELL_MAX_MICRONS:.0f} µm) "
                "on a side."
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
    _validate_cell(
        slide=slide, values=values, box_changed=any(name in changes for name in BOX_FIELDS)
    )
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
        if slide.status == SlideStatus.ANALYSED or slide.assigned_reviewer_id is None:
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


# At most this many cells per sighting or clearing request (a gallery page is 60).
MAX_CELLS_PER_REQUEST = 5000


def _cell_ids(cell_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(cell_ids))
    if not ids:
        raise ValidationError({"cells": "Give at least one cell id."})
    if len(ids) > MAX_CELLS_PER_REQUEST:
        raise ValidationError({"cells": f"At most {MAX_CELLS_PER_REQUEST} cells at a time."})
    return ids


def cell_sightings_record(
    *, slide: Slide, by: User, cell_ids: Sequence[int], via: str
) -> tuple[int, list[int]]:
    """Record that `by` saw these cells of the slide (selected, or shown in the gallery at review
    size): the first time per cell, reviewer and way is kept. Returns how many were new and the
    ids that are not (or no longer, after a re-analysis) cells of this slide."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read cells but not review them.")
    if via not in SightingVia.values:
        raise ValidationError({"via": f"Choose one of {', '.join(SightingVia.values)}."})
    ids = _cell_ids(cell_ids)
    found = set(Cell.objects.filter(slide_id=slide.pk, pk__in=ids).values_list("pk", flat=True))
    before = CellSighting.objects.filter(cell_id__in=found, seen_by=by, via=via).count()
    CellSighting.objects.bulk_create(
        [CellSighting(cell_id=pk, seen_by=by, via=via) for pk in sorted(found)],
        ignore_conflicts=True,
    )
    return len(found) - before, [pk for pk in ids if pk not in found]


class CellsNotSeenError(ConflictError):
    code = "not_seen"


@dataclass(frozen=True)
class ClearResult:
    cleared: list[Cell]
    skipped: list[int]  # already decided by someone: left as they are


def cells_clear_seen(*, slide: Slide, by: User, cell_ids: Sequence[int]) -> ClearResult:
    """ "Reviewed, none abnormal": the reviewer vouches that these cells, which they saw, are not
    abnormal. Each undecided one becomes `cleared` (class NILM) with its own revision; cells
    already decided are skipped; one audit event names them all. Refused as a whole when any of
    them was never seen by this reviewer (selected, or shown in the gallery at review size)."""
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read cells but not review them.")
    ids = _cell_ids(cell_ids)
    with transaction.atomic():
        locked = _lock_reviewable_slide(slide_id=slide.pk, by=by)
        cells = list(
            Cell.objects.select_for_update().filter(slide_id=locked.pk, pk__in=ids).order_by("pk")
        )
        unknown = sorted(set(ids) - {c.pk for c in cells})
        if unknown:
            raise ValidationError(
                {"cells": f"Not cells of slide {slide.pk}: {', '.join(map(str, unknown))}."}
            )
        seen = set(
            CellSighting.objects.filter(cell_id__in=ids, seen_by=by).values_list(
                "cell_id", flat=True
            )
        )
        unseen = [pk for pk in ids if pk not in seen]
        if unseen:
            raise CellsNotSeenError(
                f"{len(unseen)} of these cells were never shown to you; open them or let the "
                "gallery show them before marking them reviewed.",
                extra={"unseen_cells": unseen},
            )
        now = timezone.now()
        cleared: list[Cell] = []
        revisions: list[CellRevision] = []
        for cell in cells:
            if cell.review_status != ReviewStatus.PREDICTED:
                continue
            before = cell_snapshot(cell)
            cell.review_status = ReviewStatus.CLEARED
            cell.current_class = Bethesda.NILM.value
            cell.version += 1
            cell.last_reviewed_by = by
            cell.last_reviewed_at = now
            cell.updated_at = now
            revisions.append(
                CellRevision(
                    cell=cell,
                    version=cell.version,
                    changed_by=by,
                    before=before,
                    after=cell_snapshot(cell),
                )
            )
            cleared.append(cell)
        Cell.objects.bulk_update(
            cleared,
            [
                "review_status",
                "current_class",
                "version",
                "last_reviewed_by",
                "last_reviewed_at",
                "updated_at",
            ],
        )
        CellRevision.objects.bulk_create(revisions)
        if cleared:
            audit_record(
                action=AuditAction.CELLS_CLEARED,
                actor=by,
                target=locked,
                data={"cells": [c.pk for c in cleared], "count": len(cleared)},
            )
    cleared_ids = {c.pk for c in cleared}
    return ClearResult(cleared=cleared, skipped=[c.pk for c in cells if c.pk not in cleared_ids])
