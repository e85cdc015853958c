"""Activating a model version from the web (page, API, admin), gated by its evaluations, and the
one-click rollback.

The gate compares the candidate with the stage's active version on the test split of the same
export: the candidate's most recent finished evaluation on an export the active version was also
evaluated on. The figures compared are those `model_evaluation_run` stores (FIGURES); a figure
missing on either side is not compared. Activation is refused (409) when the candidate is worse
on any figure, when it has no evaluation on any test split the active one was evaluated on
(nothing to compare it with), or when that split holds no marked abnormal cell (recall cannot be
compared), unless an admin gives a reason. The reason, the figures compared
and what the gate said go into the MODEL_ACTIVATED audit event. With no active version, or an
active version never evaluated, there is nothing to compare and activation goes ahead.

`previous` on a ModelVersion (set by the analysis service on each activation) is what
`model_version_rollback_by` goes back to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from papreview.accounts.roles import user_is_admin
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.analysis.services import model_version_activate, model_version_rollback
from papreview.core.exceptions import ConflictError, PermissionDeniedError
from papreview.registry.models import EvaluationStatus, ModelEvaluation

logger = logging.getLogger(__name__)

# Differences smaller than this are rounding, not worse.
TOLERANCE = 1e-9
GATE_SPLIT = "test"


class ActivationRefusedError(ConflictError):
    """Worse than the active version (or not comparable) and no reason given (409)."""

    code = "activation_refused"


def _at(metrics: dict[str, Any], *path: str) -> float | None:
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Figure:
    key: str  # its name in the audit data and the API's error
    label: str
    higher_is_better: bool
    read: Callable[[dict[str, Any]], float | None]


# The pipeline's figures on the split (`inference.evaluation.evaluate_export`): the same three
# whichever stage is new, since a version is scored as the pipeline it makes with its partner.
FIGURES: tuple[Figure, ...] = (
    Figure(
        "abnormal_sensitivity",
        "abnormal-cell recall",
        True,
        lambda m: _at(m, "metrics", "abnormal_recall"),
    ),
    Figure(
        "false_alarms_per_field",
        "abnormal calls per field not near a marked abnormal cell",
        False,
        lambda m: _at(m, "reviewer", "false_alarms_per_field"),
    ),
    Figure(
        "balanced_accuracy_4class",
        "4-class balanced accuracy of matched cells",
        True,
        lambda m: _at(m, "metrics", "matched_cells", "four_class", "balanced_accuracy"),
    ),
)


@dataclass
class ActivationCheck:
    """What the gate found: `problem` is why a reason is needed ("" when none is)."""

    active: str | None = None
    export: str | None = None
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    problem: str = ""

    def audit(self) -> dict[str, Any]:
        return {
            "compared_with": self.active,
            "compared_on": f"{self.export} ({GATE_SPLIT})" if self.export else None,
            "figures": self.figures,
            "gate": self.problem,
        }


def activation_check(*, model_version: ModelVersion) -> ActivationCheck:
    """Compare the version with its stage's active one (see the module docstring)."""
    active = ModelVersion.objects.filter(stage=model_version.stage, is_active=True).first()
    if active is None or active.pk == model_version.pk:
        return ActivationCheck()
    done = ModelEvaluation.objects.filter(split=GATE_SPLIT, status=EvaluationStatus.DONE)
    theirs = {e.export_id: e for e in done.filter(model_version=active).select_related("export")}
    if not theirs:
        return ActivationCheck(active=active.name)  # the active one was never evaluated
    ours = (
        done.filter(model_version=model_version, export_id__in=theirs)
        .select_related("export")
        .order_by("-updated_at", "-pk")
        .first()
    )
    if ours is None:
        exports = ", ".join(sorted(str(e.export) for e in theirs.values()))
        return ActivationCheck(
            active=active.name,
            problem=(
                f"{model_version.name} has no finished evaluation on the {GATE_SPLIT} split of "
                f"{exports}, where the active version {active.name} was evaluated, so the two "
                "cannot be compared. Evaluate it there first, or give a reason to activate it "
                "anyway."
            ),
        )
    check = ActivationCheck(active=active.name, export=str(ours.export))
    worse: list[str] = []
    for fig in FIGURES:
        mine, base = fig.read(ours.metrics), fig.read(theirs[ours.export_id].metrics)
        is_worse = (
            mine is not None
            and base is not None
            and (mine < base - TOLERANCE if fig.higher_is_better else mine > base + TOLERANCE)
        )
        check.figures[fig.key] = {"candidate": mine, "active": base, "worse": is_worse}
        if is_worse:
            worse.append(f"{fig.label} {mine:.3f} against {base:.3f}")
    if worse:
        check.problem = (
            f"{model_version.name} does worse than the active version {active.name} on the "
            f"{GATE_SPLIT} split of {ours.export}: {'; '.join(worse)}. Give a reason to "
            "activate it anyway."
        )
    elif check.figures["abnormal_sensitivity"]["candidate"] is None:
        # A split with no marked abnormal cell (a lab's NILM sign-outs) measures false alarms
        # only: a version that finds fewer abnormal cells would pass unseen.
        check.problem = (
            f"The {GATE_SPLIT} split of {ours.export} holds no marked abnormal cell, so the "
            "abnormal-cell recall of the two versions cannot be compared (fewer false alarms "
            "alone may mean fewer abnormal cells found). Evaluate both on an export with "
            "abnormal cells, or give a reason to activate it anyway."
        )
    return check


def model_version_activate_by(
    *, model_version: ModelVersion, by: User, reason: str = ""
) -> ModelVersion:
    """Activate a version from the web: admins only, through the gate (ActivationRefusedError
    without a reason when it is worse or not comparable). The reason and figures are audited."""
    if not user_is_admin(by):
        raise PermissionDeniedError("Only an administrator may activate a model version.")
    reason = reason.strip()
    with transaction.atomic():
        # The stage's rows locked: no activation slips in between the comparison and ours.
        list(ModelVersion.objects.select_for_update().filter(stage=model_version.stage))
        check = activation_check(model_version=model_version)
        if check.problem and not reason:
            raise ActivationRefusedError(
                check.problem, extra={"figures": check.figures, "compared_with": check.active}
            )
        logger.info("%s activated by %s", model_version, by.get_username())
        return model_version_activate(
            model_version=model_version, audit_data={"reason": reason, **check.audit()}
        )


def model_version_rollback_by(*, stage: ModelStage | str, by: User) -> ModelVersion:
    """Activate again the stage's previously active version (admins only; ConflictError when
    there is none). Not gated: it returns to a version that was in use."""
    if not user_is_admin(by):
        raise PermissionDeniedError("Only an administrator may roll a model version back.")
    mv = model_version_rollback(stage=stage)
    logger.info("%s rolled back to %s by %s", stage, mv, by.get_username())
    return mv
