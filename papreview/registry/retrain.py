"""Retrain what runs: both stages trained again on an export, registered (not activated) and
compared with the active versions on the export's test split.

One service, `retrain_job_run`, behind `manage.py retrain --export ID [--from-scratch]
[--epochs N]` (in process) and the admins' *Retrain* button on the Models page
(`retrain_job_request` queues `retrain_job_run_task` on the `training` queue). A job:

1. checks that the export has a validation and a test split (a `train_only` export has neither);
2. trains the detector, then the classifier, with `python -m inference train-* --data EXPORT`,
   each starting from the weights of its stage's ACTIVE version (`--init-from`; with
   `from_scratch`: random weights in the same architecture, `--arch-from`); the classifier's
   temperature and P(abnormal) threshold are calibrated on the export's validation split
   (`inference.calibration.calibrate_classifier`, recorded as `calibration` in its metadata);
3. fits the late fusion of stage 1 and stage 2 abnormality through the new pipeline (built
   without fusion, with the active classifier's test-time views) on the export's validation
   split (`images/val/`, `points/val.csv`; with RETRAIN_MERGE_BASE the base data's validation
   images too; `inference.calibration.calibrate_pipeline_on`) and
   writes it in the new classifier's metadata (`calibrated_meta`: `fusion` and `tta_views`);
   too few matched cells or a single class skip it, the reason kept as `fusion_skipped` in
   the metadata and as `fusion` in the job's `comparison`, not a failure;
4. registers both checkpoints (`model_version_register_checkpoint`), NOT activated;
5. evaluates the new and the active pipelines (each pair of versions) on the export's test split
   (in process, through `model_evaluation_run`: what the workers run) and stores the activation
   gate's figures of both on the job (`comparison`), shown on the Models page.

Progress (`progress` percent and `step`) is written on the job row as it goes; a failure leaves
the job `failed` with its reason in `error`. Extra training options per stage (CLI arguments)
come from `settings.RETRAIN_TRAINING_ARGS`; `epochs` overrides both stages' epochs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from inference.errors import InputError
from papreview.accounts.roles import user_is_admin
from papreview.analysis.adapter import model_version_local_path
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.analysis.services import model_versions_for_analysis
from papreview.core.exceptions import ApplicationError, ConflictError, PermissionDeniedError
from papreview.core.tasks import TRANSIENT_ERRORS
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.registry.activation import FIGURES, GATE_SPLIT
from papreview.registry.models import EvaluationStatus, ModelEvaluation, RetrainJob, RetrainStatus
from papreview.registry.services import (
    export_local_file,
    model_evaluation_run,
    model_version_register_checkpoint,
)

logger = logging.getLogger(__name__)

STAGES = (ModelStage.DETECTOR, ModelStage.CLASSIFIER)


class RetrainError(ApplicationError):
    """A retraining that cannot go on (the reason is the job's `error`)."""

    code = "retrain_failed"


def retrain_job_request(
    *, export: DatasetExport, by: User, from_scratch: bool = False, epochs: int | None = None
) -> RetrainJob:
    """Queue a retraining on `export` (admins only) on the `training` queue; one at a time per
    export (a second request while one is queued or running is a ConflictError)."""
    if not user_is_admin(by):
        raise PermissionDeniedError("Only an administrator may retrain the models.")
    if export.status != ExportStatus.READY:
        raise ApplicationError(f"Export {export} is not ready yet.")
    from papreview.registry.tasks import retrain_job_run_task

    with transaction.atomic():
        # The export row's lock serialises requests, so two clicks cannot both queue a job.
        DatasetExport.objects.select_for_update().filter(pk=export.pk).first()
        busy = RetrainJob.objects.filter(
            export=export, status__in=[RetrainStatus.QUEUED, RetrainStatus.RUNNING]
        ).first()
        if busy is not None:
            raise ConflictError(
                f"Retraining #{busy.pk} on {export} is already {busy.get_status_display().lower()}"
                "; wait for it to finish before starting another."
            )
        job = RetrainJob.objects.create(
            export=export,
            requested_by=by,
            from_scratch=from_scratch,
            epochs=epochs,
            step="queued",
        )
        job_id = job.pk
        transaction.on_commit(lambda: retrain_job_run_task.delay(job_id))
    return job


def _progress(job: RetrainJob, progress: int, step: str, **fields: Any) -> None:
    job.progress, job.step = progress, step
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(update_fields=["progress", "step", *fields, "updated_at"])
    logger.info("retrain job %s: %s%% %s", job.pk, progress, step)


def _check_splits(export: DatasetExport) -> None:
    manifest = export.manifest or {}
    per_split = (manifest.get("counts") or {}).get("per_split") or {}
    for split in ("val", "test"):
        if (manifest.get("params") or {}).get("train_only") or not sum(
            (per_split.get(split) or {}).values()
        ):
            name = {"val": "validation", "test": "test"}[split]
            raise RetrainError(
                f"export {export} has no {name} split: make it with at least 3 patients "
                "(not train-only) to retrain on it"
            )


def _train(
    stage: ModelStage, *, data: Path, out: Path, start: list[str], epochs: int | None
) -> Path:
    """`python -m inference train-<stage>` in process; the checkpoint written."""
    from inference import commands
    from inference.__main__ import build_parser

    argv = [f"train-{stage.value}", "--data", str(data), "--out", str(out), *start]
    if settings.RETRAIN_MERGE_BASE:
        argv.append("--merge-base")
    argv += [str(a) for a in getattr(settings, "RETRAIN_TRAINING_ARGS", {}).get(stage.value, [])]
    if epochs:
        argv += ["--epochs", str(epochs)]  # the last one given wins
    args = build_parser().parse_args(argv)
    run = {
        ModelStage.DETECTOR: commands.train_detector_cmd,
        ModelStage.CLASSIFIER: commands.train_classifier_cmd,
    }[stage]
    return Path(run(args)["checkpoint"])


def _evaluate_pair(
    detector: ModelVersion, classifier: ModelVersion, export: DatasetExport, by: User | None
) -> ModelEvaluation:
    """The pipeline of the pair scored on the export's test split, once (in process; a done one
    is kept). It is stored as the classifier's evaluation with the detector as partner, and the
    same figures as the detector's with the classifier as partner (one pipeline, one split)."""
    evaluation, _ = ModelEvaluation.objects.get_or_create(
        model_version=classifier,
        partner=detector,
        export=export,
        split=GATE_SPLIT,
        defaults={"requested_by": by},
    )
    if evaluation.status != EvaluationStatus.DONE:
        ModelEvaluation.objects.filter(pk=evaluation.pk).update(
            status=EvaluationStatus.PENDING, error="", updated_at=timezone.now()
        )
        model_evaluation_run(evaluation_id=evaluation.pk)
        evaluation.refresh_from_db()
    ModelEvaluation.objects.update_or_create(
        model_version=detector,
        partner=classifier,
        export=export,
        split=GATE_SPLIT,
        defaults={
            "status": evaluation.status,
            "metrics": evaluation.metrics,
            "error": evaluation.error,
            "requested_by": by,
        },
    )
    return evaluation


def _compare(new: ModelEvaluation, active: ModelEvaluation) -> dict[str, Any]:
    """The activation gate's figures of the new and the active pipeline, side by side."""
    figures = []
    for fig in FIGURES:
        mine, base = fig.read(new.metrics), fig.read(active.metrics)
        better = None
        if mine is not None and base is not None and mine != base:
            better = mine > base if fig.higher_is_better else mine < base
        figures.append(
            {
                "key": fig.key,
                "label": fig.label,
                "higher_is_better": fig.higher_is_better,
                "new": mine,
                "active": base,
                "better": better,
            }
        )

    def pair(e: ModelEvaluation) -> dict[str, Any]:
        names = f"{e.partner.name if e.partner else '?'} + {e.model_version.name}"
        return {"id": e.model_version_id, "name": names, "status": e.status}

    return {
        "new": pair(new),
        "active": pair(active),
        "errors": [e.error for e in (new, active) if e.error],
        "figures": figures,
    }


def _fit_fusion(
    detector: Path, classifier: Path, *, data: Path, base: ModelVersion
) -> dict[str, Any]:
    """Fit the fusion on the export's validation split and write it in the `classifier`
    checkpoint (in place), with the test-time views and the threshold rule (false-alarm budget)
    of the active classifier `base`; what was done (for the job's `comparison`): fused or not,
    and why not."""
    from inference.calibration import (
        AnnotatedImages,
        JoinedImages,
        TooFewCellsError,
        base_validation_images,
        calibrate_pipeline_on,
        save_calibrated_classifier,
    )
    from inference.checkpoints import load_checkpoint, plain
    from inference.data.export import opened
    from inference.interface import open_analyser

    base_meta = load_checkpoint(model_version_local_path(base), stage="classifier").meta
    tta_views = int(base_meta.get("tta_views", 1))
    # The active classifier's threshold rule carries over (a false-alarm budget, or none).
    far_budget = (base_meta.get("fusion") or {}).get("far_budget")
    calibration, skipped = None, None
    with opened(data) as export:
        if not export.points_path("val").is_file():
            skipped = "the export has no points/val.csv"
        else:
            dataset: AnnotatedImages = export.points("val")
            if settings.RETRAIN_MERGE_BASE:  # the base data's validation images too
                dataset = JoinedImages([dataset, base_validation_images()])
            pipeline = open_analyser(
                detector,
                classifier,
                cpu_bf16=settings.INFERENCE_CPU_BF16,
                use_fusion=False,
                tta_views=tta_views,
            )
            try:
                calibration = calibrate_pipeline_on(
                    pipeline, dataset, sorted(dataset.images), far_budget=far_budget
                )
            except TooFewCellsError as exc:
                skipped = str(exc)
    version = save_calibrated_classifier(
        classifier, calibration, tta_views=tta_views, skipped=skipped
    )
    meta = load_checkpoint(classifier, stage="classifier").meta
    return {
        "split": "val",
        "tta_views": tta_views,
        "used": "fusion" in meta,
        "skipped": meta.get("fusion_skipped"),
        "version": version,
        "report": plain(calibration.report) if calibration is not None else None,
    }


def retrain_job_run(*, job_id: int, retry_transient: bool = False) -> str:
    """Run the job (the task, or `manage.py retrain`). Returns its final status.

    With `retry_transient` (the task, before its last try) a database or broker error is raised
    again for the task's retry policy, and the job starts over; otherwise it fails the job."""
    job = RetrainJob.objects.select_related("export", "requested_by").get(pk=job_id)
    if job.status == RetrainStatus.DONE:
        return str(job.status)
    export = job.export
    _progress(job, 0, "checking the export", status=RetrainStatus.RUNNING, error="")
    try:
        if export.status != ExportStatus.READY:
            raise RetrainError(f"Export {export} is not ready.")
        _check_splits(export)
        base = dict(zip(STAGES, model_versions_for_analysis(), strict=True))
        _progress(
            job,
            5,
            "reading the active versions",
            base_detector=base[ModelStage.DETECTOR],
            base_classifier=base[ModelStage.CLASSIFIER],
        )
        new: dict[ModelStage, ModelVersion] = {}
        paths: dict[ModelStage, Path] = {}
        fusion: dict[str, Any] = {}
        with (
            export_local_file(export) as data,
            tempfile.TemporaryDirectory(prefix="papreview-retrain-") as tmp,
        ):
            for i, stage in enumerate(STAGES):
                how = "from scratch" if job.from_scratch else f"from {base[stage].name}"
                _progress(job, 10 + 35 * i, f"training the {stage.value} ({how})")
                flag = "--arch-from" if job.from_scratch else "--init-from"
                start = [flag, str(model_version_local_path(base[stage]))]
                paths[stage] = path = _train(
                    stage, data=data, out=Path(tmp) / stage.value, start=start, epochs=job.epochs
                )
                if stage == ModelStage.CLASSIFIER:
                    _progress(job, 75, "fitting the fusion on the validation split")
                    fusion = _fit_fusion(
                        paths[ModelStage.DETECTOR], path, data=data, base=base[stage]
                    )
                new[stage] = model_version_register_checkpoint(
                    stage=stage,
                    path=path,
                    created_by=job.requested_by,
                    training_export=export,
                    activate=False,
                )
        registered = "registered" if fusion.get("used") else "registered (fusion skipped)"
        _progress(
            job,
            80,
            f"{registered}; evaluating on the test split",
            new_detector=new[ModelStage.DETECTOR],
            new_classifier=new[ModelStage.CLASSIFIER],
        )
        comparison: dict[str, Any] = {
            "export": str(export),
            "split": GATE_SPLIT,
            "fusion": fusion,
            "stages": {},
        }
        det, cls = ModelStage.DETECTOR, ModelStage.CLASSIFIER
        _progress(job, 80, "evaluating the new pipeline on the test split")
        ours = _evaluate_pair(new[det], new[cls], export, job.requested_by)
        _progress(job, 90, "evaluating the active pipeline on the test split")
        theirs = _evaluate_pair(base[det], base[cls], export, job.requested_by)
        comparison["stages"]["pipeline"] = _compare(ours, theirs)
    except Exception as exc:
        if retry_transient and isinstance(exc, TRANSIENT_ERRORS):
            logger.warning("retrain job %s: transient error, retried: %s", job_id, exc)
            raise
        if not isinstance(exc, InputError | ApplicationError):
            logger.exception("retrain job %s failed", job_id)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        job.status, job.error = RetrainStatus.FAILED, str(message)[:2000]
        job.save(update_fields=["status", "error", "updated_at"])
        return str(RetrainStatus.FAILED)
    _progress(
        job,
        100,
        "done: compare, then activate from the Models page",
        status=RetrainStatus.DONE,
        comparison=comparison,
    )
    return str(RetrainStatus.DONE)
