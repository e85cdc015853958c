"""Reads of the model registry: versions with their training export, evaluations."""

from __future__ import annotations

from django.db.models import QuerySet

from papreview.analysis.models import ModelVersion
from papreview.core.exceptions import NotFoundError
from papreview.registry.models import ModelEvaluation


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("training__export", "previous").order_by(
        "stage", "-is_active", "-created_at", "-id"
    )


def model_version_get(*, version_id: int) -> ModelVersion:
    mv = (
        ModelVersion.objects.select_related("training__export", "previous")
        .filter(pk=version_id)
        .first()
    )
    if mv is None:
        raise NotFoundError(f"Model version {version_id} does not exist.")
    return mv


def model_evaluation_list(*, export_id: int | None = None) -> QuerySet[ModelEvaluation]:
    qs = ModelEvaluation.objects.select_related("model_version", "partner", "export")
    if export_id is not None:
        qs = qs.filter(export_id=export_id)
    return qs.order_by("model_version__stage", "model_version__created_at", "id")
