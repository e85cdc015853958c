"""Evaluations: admins only, ready exports only, failures recorded with their reason and
requested again; a stuck one may be requested again after EVALUATION_STALE_S."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from papreview.analysis.models import ModelStage
from papreview.core.exceptions import ApplicationError, PermissionDeniedError
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import EvaluationStatus, ModelEvaluation
from papreview.datasets.registry import model_evaluation_request, model_evaluation_run
from papreview.datasets.services import dataset_export_create
from tests.factories import ModelVersionFactory, PatientFactory

pytestmark = pytest.mark.django_db


def test_evaluation_rules_failure_and_retry(
    make_slide, pathologist, admin_user, django_capture_on_commit_callbacks
):
    make_slide(PatientFactory.create(), cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    export = dataset_export_create(name="ev", created_by=pathologist)
    mv = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="no-file")
    with pytest.raises(ApplicationError, match="not ready"):
        model_evaluation_request(model_version=mv, export=export, by=admin_user)
    dataset_export_build(export_id=export.pk)
    export.refresh_from_db()
    with pytest.raises(PermissionDeniedError):
        model_evaluation_request(model_version=mv, export=export, by=pathologist)
    with django_capture_on_commit_callbacks() as callbacks:
        evaluation = model_evaluation_request(model_version=mv, export=export, by=admin_user)
        again = model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert again.pk == evaluation.pk and len(callbacks) == 1  # pending: not queued twice
    assert model_evaluation_run(evaluation_id=evaluation.pk) == EvaluationStatus.FAILED
    evaluation.refresh_from_db()
    assert "has no weights file" in evaluation.error
    with django_capture_on_commit_callbacks() as callbacks:
        retried = model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert retried.status == EvaluationStatus.PENDING and len(callbacks) == 1
    # stuck (its worker died): requested again once stale
    ModelEvaluation.objects.filter(pk=evaluation.pk).update(
        status=EvaluationStatus.RUNNING, updated_at=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        model_evaluation_request(model_version=mv, export=export, by=admin_user)
    assert len(callbacks) == 1
    assert ModelEvaluation.objects.get(pk=evaluation.pk).status == EvaluationStatus.PENDING
