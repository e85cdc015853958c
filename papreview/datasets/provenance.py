"""Where a cell's label in an export comes from (provenance.csv `label_source`, `action`).

A cell is *decided* only by a person's action; an undecided cell carries a label only when its
slide was signed out NILM (implied) or, on request, as the model's pseudo-label.
"""

from __future__ import annotations

from typing import Any

from inference.types import Bethesda
from papreview.review.models import Cell, ReviewStatus

# Where a cell's label in an export comes from (provenance.csv `label_source`).
DECIDED = "decided"  # a person's action: accepted, relabelled, moved, rejected, added, cleared
IMPLIED_BY_NILM = "implied_by_nilm_signout"  # undecided on a slide signed out NILM: NILM
PSEUDO_LABEL = "pseudo_label"  # undecided, the model's class (only with include_undecided)
UNDECIDED = "undecided"  # undecided: in provenance.csv only, never in the training formats


def cell_action(cell: Cell, original_box: tuple[int, int, int, int] | None) -> str:
    """What a person did with the cell: accepted, relabelled, moved, rejected, added, cleared
    ("reviewed, none abnormal"), or `undecided` when nobody decided it (sign-out decides
    nothing)."""
    status = cell.review_status
    if status == ReviewStatus.PREDICTED:
        return "undecided"
    if status in (ReviewStatus.ADDED, ReviewStatus.REJECTED, ReviewStatus.CLEARED):
        return str(status)
    if status == ReviewStatus.RELABELLED or (
        cell.predicted_class and cell.current_class != cell.predicted_class
    ):
        return "relabelled"
    box = (cell.x, cell.y, cell.width, cell.height)
    if original_box is not None and tuple(original_box) != box:
        return "moved"
    return "accepted"


def cell_label(
    cell: Cell, *, action: str, slide_category: str | None, include_undecided: bool
) -> tuple[str | None, str]:
    """The class a cell carries in the training formats (None: left out) and its source."""
    if action == "rejected":
        return None, DECIDED
    if action != "undecided":
        return cell.current_class, DECIDED
    if slide_category == Bethesda.NILM:
        return Bethesda.NILM.value, IMPLIED_BY_NILM
    if include_undecided:
        return cell.current_class, PSEUDO_LABEL
    return None, UNDECIDED


def cell_provenance(
    cell: Cell,
    *,
    original_box: tuple[int, int, int, int] | None,
    slide_category: str | None,
    include_undecided: bool,
) -> dict[str, Any]:
    run = cell.run
    versions = (run.model_versions or {}) if run is not None else {}
    detector = run.detector_version.name if run and run.detector_version else None
    classifier = run.classifier_version.name if run and run.classifier_version else None
    score = cell.probabilities.get(cell.predicted_class) if cell.predicted_class else None
    action = cell_action(cell, original_box)
    final_class, source = cell_label(
        cell, action=action, slide_category=slide_category, include_undecided=include_undecided
    )
    decided = source == DECIDED
    reviewer = cell.last_reviewed_by
    return {
        "cell_id": cell.pk,
        "predicted_class": cell.predicted_class or None,
        "predicted_score": None if score is None else round(float(score), 6),
        "detection_score": cell.detection_score,
        "final_class": final_class,
        "action": action,
        "label_source": source,
        # Only a person who decided the cell is named: nobody reviewed an undecided one.
        "reviewer": reviewer.get_username() if decided and reviewer else None,
        "reviewed_at": (
            cell.last_reviewed_at.isoformat() if decided and cell.last_reviewed_at else None
        ),
        "detector_version": detector or versions.get("detector"),
        "classifier_version": classifier or versions.get("classifier"),
        "run_id": cell.run_id,
    }
