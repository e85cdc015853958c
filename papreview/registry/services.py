"""The model registry around the retraining loop: register a trained checkpoint (linked to the
export it was trained on), evaluate versions on a test export (compare page), activate one.

Registration and activation themselves are the analysis app's services (`model_version_register`,
`model_version_activate`); this module adds the export link and evaluations. Activation from the
web (admins only, gated by the evaluations, with rollback) is `papreview.registry.activation`.
New analyses use the active versions (the analysis service reads them per job); finished runs
keep the versions they were made with (their own foreign keys).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from inference.data.export import Export, opened
from inference.data.leaks import record_of, trained_on_warnings
from inference.errors import InputError
from inference.interface import open_analyser
from papreview.accounts.roles import user_is_admin
from papreview.analysis.adapter import model_version_local_path
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.analysis.services import (
    TRANSIENT_ERRORS,
    model_version_activate,
    model_version_register,
    model_versions_for_analysis,
)
from papreview.core.exceptions import ApplicationError, NotFoundError, PermissionDeniedError
from papreview.core.storage import StoredFileMissingError, storage_local_file
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.registry.models import EvaluationStatus, ModelEvaluation, ModelTraining

logger = logging.getLogger(__name__)

# A pending or running evaluation untouched this long (its worker died) may be requested again.
EVALUATION_STALE_S = 3600
# Where a version's `metrics` keep the SHA-256s of its training and validation images.
IMAGES_SHA256 = "images_sha256"


def _load_checkpoint(path: Path, *, stage: str) -> Any:
    """`inference.checkpoints.load_checkpoint`, imported on use: torch loads in the process that
    reads a checkpoint (a worker, a command, an admin registering weights), never at start-up."""
    from inference.checkpoints import load_checkpoint

    return load_checkpoint(path, stage=stage)


def _export_from_meta(meta: dict[str, Any]) -> DatasetExport | None:
    """The export a checkpoint says it was trained on (by id, then by name and version)."""
    data = meta.get("data")
    ref = data.get("export") if isinstance(data, dict) else None
    if not isinstance(ref, dict):
        return None
    if ref.get("id"):
        found = DatasetExport.objects.filter(pk=ref["id"], name=ref.get("name")).first()
        if found is not None:
            return found
    name, version = ref.get("name"), ref.get("version")
    if not isinstance(name, str) or not isinstance(version, int):
        return None
    return DatasetExport.objects.filter(name=name, version=version).first()


def model_version_register_checkpoint(
    *,
    stage: ModelStage | str,
    path: Path,
    created_by: User | None = None,
    training_export: DatasetExport | None = None,
    activate: bool = False,
) -> ModelVersion:
    """Record a checkpoint as a ModelVersion: weights in media storage with their sha256, the
    checkpoint's metrics, and the training data reference (the export, when it came from one).
    Registering the same checkpoint again returns the same row."""
    stage = ModelStage(stage)
    ckpt = _load_checkpoint(Path(path), stage=stage.value)
    export = training_export or _export_from_meta(ckpt.meta)
    mv = model_version_register(stage=stage, path=Path(path), created_by=created_by)
    changed: list[str] = []
    if export is not None:
        ModelTraining.objects.update_or_create(model_version=mv, defaults={"export": export})
        label = f"dataset export {export.name} v{export.version}"[:255]
        if mv.training_data != label:
            mv.training_data = label
            changed.append("training_data")
    if not mv.metrics and isinstance(ckpt.meta.get("metrics"), dict):
        mv.metrics = ckpt.meta["metrics"]
        changed.append("metrics")
    record = record_of(ckpt.meta)  # the SHA-256s of its training and validation images
    if record is not None and (mv.metrics or {}).get(IMAGES_SHA256) != record:
        mv.metrics = {**(mv.metrics or {}), IMAGES_SHA256: record}
        changed += [] if "metrics" in changed else ["metrics"]
    if changed:
        mv.save(update_fields=[*changed, "updated_at"])
    if activate:
        mv = model_version_activate(model_version=mv)
    return mv


# --------------------------------------------------------------------------------------------
# Evaluations
# --------------------------------------------------------------------------------------------


def evaluation_partner(model_version: ModelVersion) -> ModelVersion:
    """The version of the other stage a version is scored with by default: the active one."""
    detector, classifier = model_versions_for_analysis()
    return classifier if model_version.stage == ModelStage.DETECTOR else detector


def model_evaluation_request(
    *,
    model_version: ModelVersion,
    export: DatasetExport,
    by: User,
    split: str = "test",
    partner: ModelVersion | None = None,
) -> ModelEvaluation:
    """Queue the scoring of a version (as a pipeline with `partner`, by default the other stage's
    active version) on an export's split (admins). An evaluation already done is returned as is;
    a failed one is queued again."""
    if not user_is_admin(by):
        raise PermissionDeniedError("Only an administrator may evaluate model versions.")
    if export.status != ExportStatus.READY:
        raise ApplicationError(f"Export {export} is not ready yet.")
    partner = partner or evaluation_partner(model_version)
    if partner.stage == model_version.stage:
        raise ApplicationError(f"{partner} is not of the other stage than {model_version}.")
    from papreview.registry.tasks import model_evaluation_run_task

    with transaction.atomic():
        evaluation, created = ModelEvaluation.objects.select_for_update().get_or_create(
            model_version=model_version,
            partner=partner,
            export=export,
            split=split,
            defaults={"requested_by": by},
        )
        stale = evaluation.status in (
            EvaluationStatus.PENDING,
            EvaluationStatus.RUNNING,
        ) and evaluation.updated_at < timezone.now() - timedelta(seconds=EVALUATION_STALE_S)
        if not created and evaluation.status != EvaluationStatus.FAILED and not stale:
            return evaluation
        if not created:
            evaluation.status = EvaluationStatus.PENDING
            evaluation.error = ""
            evaluation.requested_by = by
            evaluation.save(update_fields=["status", "error", "requested_by", "updated_at"])
        evaluation_id = evaluation.pk
        transaction.on_commit(lambda: model_evaluation_run_task.delay(evaluation_id))
    return evaluation


@contextlib.contextmanager
def export_local_file(export: DatasetExport) -> Iterator[Path]:
    """The export's zip as a local file (`storage_local_file`: in place on disk, else this host's
    media cache). Used by evaluation and retraining alike."""
    name = str(export.file.name or "")
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(storage_local_file(name, version=export.sha256))
        except StoredFileMissingError as exc:
            raise NotFoundError(f"The file of export {export} is missing from storage.") from exc
        yield local


@contextlib.contextmanager
def export_opened(export: DatasetExport) -> Iterator[Export]:
    """A ready export unpacked in a temporary folder, for reading."""
    with export_local_file(export) as local, opened(local) as ex:
        yield ex


def _leak_warnings(mv: ModelVersion, path: Path, export: Export, split: str) -> list[str]:
    """Warnings when the version was trained (or selected) on images of the split it is scored
    on, by SHA-256 (recorded at registration; else read from the checkpoint)."""
    record = (mv.metrics or {}).get(IMAGES_SHA256)
    if not isinstance(record, dict):
        record = record_of(_load_checkpoint(path, stage=mv.stage).meta)
    warnings = trained_on_warnings(record, export.refs(split), split)
    if warnings:
        logger.warning("evaluation of %s on %s %s: %s", mv, export.label, split, warnings)
    return warnings


def _pair(evaluation: ModelEvaluation) -> tuple[ModelVersion, ModelVersion]:
    """(detector, classifier) of an evaluation; one from before pairs gets the active partner."""
    mv = evaluation.model_version
    partner = evaluation.partner
    if partner is None:
        partner = evaluation_partner(mv)
        ModelEvaluation.objects.filter(pk=evaluation.pk).update(partner=partner)
    return (mv, partner) if mv.stage == ModelStage.DETECTOR else (partner, mv)


def model_evaluation_run(*, evaluation_id: int) -> str:
    """Score the version with its partner on the export's split (the task): the pipeline the
    workers would run, through `evaluate_export`. Returns the final status."""
    evaluation = ModelEvaluation.objects.select_related("model_version", "partner", "export").get(
        pk=evaluation_id
    )
    if evaluation.status == EvaluationStatus.DONE:
        return str(evaluation.status)
    ModelEvaluation.objects.filter(pk=evaluation_id).update(
        status=EvaluationStatus.RUNNING, updated_at=timezone.now()
    )
    mv = evaluation.model_version
    try:
        detector, classifier = _pair(evaluation)
        with export_opened(evaluation.export) as export:
            paths = [model_version_local_path(v) for v in (detector, classifier)]
            analyser = open_analyser(
                *paths,
                device=settings.INFERENCE_DEVICE,
                cpu_bf16=settings.INFERENCE_CPU_BF16,
                max_pixels=settings.SLIDE_MAX_PIXELS,
            )
            from inference.evaluation import evaluate_export  # torch: workers only

            metrics = evaluate_export(analyser, export, evaluation.split)
            metrics["pair"] = {"detector": detector.name, "classifier": classifier.name}
            metrics["warnings"] = [
                f"{v.name}: {w}"
                for v, path in zip((detector, classifier), paths, strict=True)
                for w in _leak_warnings(v, path, export, evaluation.split)
            ]
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        if not isinstance(exc, InputError | ApplicationError):
            logger.exception("evaluation %s of %s failed", evaluation_id, mv)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        ModelEvaluation.objects.filter(pk=evaluation_id).update(
            status=EvaluationStatus.FAILED, error=message[:2000], updated_at=timezone.now()
        )
        return str(EvaluationStatus.FAILED)
    ModelEvaluation.objects.filter(pk=evaluation_id).update(
        status=EvaluationStatus.DONE, metrics=metrics, error="", updated_at=timezone.now()
    )
    return str(EvaluationStatus.DONE)
