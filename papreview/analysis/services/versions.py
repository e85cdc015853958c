"""Model versions: registering checkpoints, activating one per stage, and the pair an analysis uses
(the committed default weights registered and activated on first use)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from papreview.analysis import adapter
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.analysis.selectors import model_version_active
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.core.exceptions import ConflictError

logger = logging.getLogger(__name__)


@transaction.atomic
def model_version_activate(
    *,
    model_version: ModelVersion,
    audit_data: dict[str, Any] | None = None,
    rollback: bool = False,
) -> ModelVersion:
    """Make this version the one active model of its stage (the previous one is deactivated and
    remembered as this one's `previous`, what `model_version_rollback` goes back to; a rollback
    itself leaves `previous` as it was, so rolling back again goes one further step back).

    Both rows change in one transaction; the conditional unique constraint guarantees that two
    concurrent activations cannot leave two active versions. `audit_data` (a reason, the figures
    compared) goes into the MODEL_ACTIVATED event with the version replaced.
    """
    # Lock the stage's rows so that concurrent activations queue up instead of failing.
    rows = list(ModelVersion.objects.select_for_update().filter(stage=model_version.stage))
    replaced = next((r for r in rows if r.is_active and r.pk != model_version.pk), None)
    ModelVersion.objects.filter(stage=model_version.stage, is_active=True).exclude(
        pk=model_version.pk
    ).update(is_active=False, updated_at=timezone.now())
    now = timezone.now()
    changes: dict[str, Any] = {"is_active": True, "activated_at": now, "updated_at": now}
    if replaced is not None and not rollback:
        changes["previous"] = replaced
    ModelVersion.objects.filter(pk=model_version.pk).update(**changes)
    model_version.refresh_from_db()
    # The user of the request being served, if any (admin action, web page, API).
    audit_record(
        action=AuditAction.MODEL_ACTIVATED,
        target=model_version,
        data={
            "stage": model_version.stage,
            "name": model_version.name,
            "replaced": replaced.name if replaced is not None else None,
            "rollback": rollback,
            **(audit_data or {}),
        },
    )
    return model_version


@transaction.atomic
def model_version_rollback(*, stage: ModelStage | str) -> ModelVersion:
    """Activate again the version that was active before the stage's active one (its
    `previous`). ConflictError when there is none to go back to."""
    stage = ModelStage(stage)
    list(ModelVersion.objects.select_for_update().filter(stage=stage))
    current = (
        ModelVersion.objects.select_related("previous").filter(stage=stage, is_active=True).first()
    )
    if current is None:
        raise ConflictError(f"No {stage.value} version is active; activate one instead.")
    target = current.previous
    if target is None:
        raise ConflictError(
            f"No {stage.value} version was active before {current.name} (or it was deleted); "
            "there is nothing to roll back to."
        )
    logger.info("rolling the %s back from %s to %s", stage, current.name, target.name)
    return model_version_activate(
        model_version=target, rollback=True, audit_data={"rolled_back_from": current.name}
    )


def model_version_register(
    *,
    stage: ModelStage | str,
    path: Path,
    activate: bool = False,
    created_by: User | None = None,
) -> ModelVersion:
    """Register a checkpoint file as a ModelVersion (its weights copied to media storage, so
    workers on every machine read the same file), or return the row already registered under
    the checkpoint's version string. Raises CheckpointError for a file that is not a valid
    checkpoint of `stage`."""
    stage = ModelStage(stage)
    described = adapter.checkpoint_describe(Path(path), stage=stage.value)
    model_version = ModelVersion.objects.filter(stage=stage, name=described.version).first()
    name = f"models/{stage.value}/{described.version}-{described.sha256[:12]}.pt"

    def store() -> str:
        if default_storage.exists(name):
            return name
        with Path(path).open("rb") as fh:
            return default_storage.save(name, File(fh))

    # The version string carries a digest of the weights themselves (inference.checkpoints), so
    # a file with the same version holds the same weights even when its bytes (metadata) differ.
    # A row that survived its file (media restored or moved) gets the weights stored again.
    if model_version is not None and not (
        model_version.file.name and default_storage.exists(model_version.file.name)
    ):
        model_version.file.name = store()
        model_version.sha256 = described.sha256
        model_version.save(update_fields=["file", "sha256", "updated_at"])
    if model_version is None:
        name = store()
        data = described.meta.get("data")
        metrics = described.meta.get("metrics")
        try:
            with transaction.atomic():
                model_version = ModelVersion.objects.create(
                    stage=stage,
                    name=described.version,
                    file=name,
                    sha256=described.sha256,
                    metrics=metrics if isinstance(metrics, dict) else {},
                    training_data=str(data.get("name", ""))[:255] if isinstance(data, dict) else "",
                    created_by=created_by,
                )
        except IntegrityError:  # registered concurrently by another worker
            model_version = ModelVersion.objects.get(stage=stage, name=described.version)
        logger.info("registered %s (%s)", model_version, described.sha256)
    if activate and not model_version.is_active:
        model_version = model_version_activate(model_version=model_version)
    return model_version


def model_versions_for_analysis() -> tuple[ModelVersion, ModelVersion]:
    """The active detector and classifier versions. A stage with no active version gets the
    default weights (ANALYSIS_DEFAULT_DETECTOR / _CLASSIFIER, the committed inference/weights/)
    registered and activated, so a fresh installation analyses slides without an admin step."""
    versions: list[ModelVersion] = []
    defaults = {
        ModelStage.DETECTOR: Path(settings.ANALYSIS_DEFAULT_DETECTOR),
        ModelStage.CLASSIFIER: Path(settings.ANALYSIS_DEFAULT_CLASSIFIER),
    }
    for stage, default in defaults.items():
        active = model_version_active(stage=stage)
        if active is None:
            active = model_version_register(stage=stage, path=default, activate=True)
        versions.append(active)
    return versions[0], versions[1]
