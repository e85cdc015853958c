"""Gated activation of model versions (worse figures or nothing to compare: a reason, kept in the
audit log), one-click rollback, and the registry API's `training_export`."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from papreview.accounts.roles import Role
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.audit.models import AuditAction, AuditEvent
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.registry.activation import (
    ActivationRefusedError,
    activation_check,
    model_version_activate_by,
)
from papreview.registry.models import EvaluationStatus, ModelEvaluation, ModelTraining
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def pipeline_metrics(recall: float, false_alarms: float, balanced: float) -> dict:
    """What `model_evaluation_run` stores (`inference.evaluation.evaluate_export`), in part."""
    return {
        "pair": {"detector": "d", "classifier": "c"},
        "metrics": {
            "abnormal_recall": recall,
            "images": 4,
            "matched_cells": {"four_class": {"balanced_accuracy": balanced}},
        },
        "reviewer": {"false_alarms_per_field": false_alarms},
    }


def classifier_metrics(sensitivity: float, balanced: float) -> dict:
    return pipeline_metrics(sensitivity, 1.0, balanced)


def detector_metrics(recall: float, normal_flagged: int, images: int = 4) -> dict:
    return pipeline_metrics(recall, normal_flagged / images, 0.7)


def evaluated(mv: ModelVersion, export: DatasetExport, metrics: dict[str, Any]) -> None:
    ModelEvaluation.objects.create(
        model_version=mv, export=export, split="test", status=EvaluationStatus.DONE, metrics=metrics
    )


def ready_export(name: str, **fields: Any) -> DatasetExport:
    return DatasetExport.objects.create(
        name=name, status=ExportStatus.READY, sha256="0" * 64, file=f"exports/{name}.zip", **fields
    )


@pytest.fixture
def export(admin_user) -> DatasetExport:
    return ready_export("gate", version=3, created_by=admin_user)


@pytest.fixture
def classifiers(export) -> tuple[ModelVersion, ModelVersion, ModelVersion]:
    """The active one, a worse one and a better one, all scored on the export's test split."""
    active = ModelVersionFactory.create(
        stage=ModelStage.CLASSIFIER, name="c-active", is_active=True
    )
    worse = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-worse")
    better = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-better")
    evaluated(active, export, classifier_metrics(0.90, 0.70))
    evaluated(worse, export, classifier_metrics(0.80, 0.75))  # less sensitive
    evaluated(better, export, classifier_metrics(0.95, 0.72))
    return active, worse, better


def activations() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.MODEL_ACTIVATED).order_by("pk"))


def test_a_worse_version_is_refused_then_accepted_with_a_reason(classifiers, api, admin_user):
    active, worse, _ = classifiers
    url = f"/api/model-versions/{worse.pk}/activate/"
    refused = api(admin_user).post(url, {}, format="json")
    assert refused.status_code == 409, refused.json()
    body = refused.json()
    assert body["code"] == "activation_refused"
    assert "abnormal-cell recall 0.800 against 0.900" in body["detail"]
    assert "gate v3" in body["detail"] and "reason" in body["detail"]
    assert "balanced accuracy" not in body["detail"]  # better there: not named as worse
    assert body["figures"]["abnormal_sensitivity"] == {
        "candidate": 0.8,
        "active": 0.9,
        "worse": True,
    }
    worse.refresh_from_db()
    active.refresh_from_db()
    assert not worse.is_active and active.is_active and activations() == []

    accepted = api(admin_user).post(
        url, {"reason": "more specific on the new stain"}, format="json"
    )
    assert accepted.status_code == 200, accepted.json()
    assert accepted.json()["is_active"] is True and accepted.json()["previous"] == "c-active"
    [event] = activations()
    assert event.actor == admin_user
    assert event.data["reason"] == "more specific on the new stain"
    assert event.data["replaced"] == "c-active" and event.data["compared_with"] == "c-active"
    assert event.data["compared_on"] == "gate v3 (test)"
    assert event.data["figures"]["abnormal_sensitivity"]["worse"] is True
    assert event.data["figures"]["balanced_accuracy_4class"] == {
        "candidate": 0.75,
        "active": 0.70,
        "worse": False,
    }
    assert "abnormal-cell recall" in event.data["gate"]


def test_a_better_version_needs_no_reason(classifiers, api, admin_user):
    active, _, better = classifiers
    response = api(admin_user).post(f"/api/model-versions/{better.pk}/activate/")
    assert response.status_code == 200, response.json()
    active.refresh_from_db()
    assert not active.is_active
    [event] = activations()
    assert event.data["reason"] == "" and event.data["gate"] == ""
    assert not any(f["worse"] for f in event.data["figures"].values())


def test_a_version_not_evaluated_where_the_active_one_was_needs_a_reason(
    classifiers, api, admin_user, export
):
    fresh = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-fresh")
    other = ready_export("other")
    evaluated(fresh, other, classifier_metrics(0.99, 0.99))  # not where the active one was
    url = f"/api/model-versions/{fresh.pk}/activate/"
    refused = api(admin_user).post(url)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "no finished evaluation on the test split of gate v3" in detail
    assert "cannot be compared" in detail
    assert api(admin_user).post(url, {"reason": "urgent fix"}, format="json").status_code == 200
    assert activations()[-1].data["reason"] == "urgent fix"


def test_nothing_to_compare_with_goes_ahead():
    first = ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="d-first")
    assert activation_check(model_version=first).problem == ""  # no active version
    first.is_active = True
    first.save()
    second = ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="d-second")
    assert activation_check(model_version=second).problem == ""  # the active one not evaluated


def test_detector_false_alarms_per_field_are_compared(export):
    active = ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="d-on", is_active=True)
    noisy = ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="d-noisy")
    evaluated(active, export, detector_metrics(0.9, normal_flagged=2))
    evaluated(noisy, export, detector_metrics(0.95, normal_flagged=8))
    check = activation_check(model_version=noisy)
    assert check.figures["false_alarms_per_field"] == {
        "candidate": 2.0,
        "active": 0.5,
        "worse": True,
    }
    assert check.figures["abnormal_sensitivity"]["worse"] is False
    assert (
        "abnormal calls per field not near a marked abnormal cell 2.000 against 0.500"
        in check.problem
    )


def test_rollback_goes_back_one_activation_at_a_time(classifiers, api, admin_user, pathologist):
    active, worse, better = classifiers
    url = "/api/model-versions/rollback/"
    assert api(admin_user).post(url, {"stage": "classifier"}).status_code == 409  # no history
    assert api(admin_user).post(f"/api/model-versions/{better.pk}/activate/").status_code == 200
    reason = {"reason": "trial"}
    response = api(admin_user).post(f"/api/model-versions/{worse.pk}/activate/", reason)
    assert response.status_code == 200
    # active -> better -> worse; roll back twice: better, then the first one.
    assert api(pathologist).post(url, {"stage": "classifier"}).status_code == 403
    assert api(None).post(url, {"stage": "classifier"}).status_code == 401
    assert api(admin_user).post(url, {"stage": "nope"}).status_code == 400
    back = api(admin_user).post(url, {"stage": "classifier"})
    assert back.status_code == 200 and back.json()["name"] == "c-better"
    event = activations()[-1]
    assert event.data["rollback"] is True and event.data["rolled_back_from"] == "c-worse"
    assert event.actor == admin_user
    back = api(admin_user).post(url, {"stage": "classifier"})
    assert back.status_code == 200 and back.json()["name"] == "c-active"
    assert ModelVersion.objects.get(stage=ModelStage.CLASSIFIER, is_active=True) == active
    refused = api(admin_user).post(url, {"stage": "classifier"})
    assert refused.status_code == 409 and "nothing to roll back to" in refused.json()["detail"]


def test_models_page_reason_field_refusal_and_rollback_button(classifiers, admin_user, pathologist):
    active, worse, _ = classifiers
    admin = Client()
    admin.force_login(admin_user)
    page = admin.get("/models/").content.decode()
    assert 'name="reason"' in page and "Roll back to" not in page
    refused = admin.post(f"/models/{worse.pk}/activate/", {"next": "/models/"}, follow=True)
    assert "abnormal-cell recall 0.800 against 0.900" in refused.content.decode()
    worse.refresh_from_db()
    assert not worse.is_active
    admin.post(f"/models/{worse.pk}/activate/", {"next": "/models/", "reason": "trial run"})
    worse.refresh_from_db()
    assert worse.is_active and activations()[-1].data["reason"] == "trial run"
    page = admin.get("/models/").content.decode()
    assert "Roll back to c-active" in page and "/models/rollback/" in page
    other = Client()
    other.force_login(pathologist)
    assert "Roll back to" not in other.get("/models/").content.decode()
    assert other.post("/models/rollback/", {"stage": "classifier"}).status_code == 403
    done = admin.post("/models/rollback/", {"stage": "classifier", "next": "/models/"})
    assert done.status_code == 302 and done["Location"] == "/models/"
    active.refresh_from_db()
    assert active.is_active


def test_admin_action_goes_through_the_gate(classifiers, admin_user):
    _, worse, better = classifiers
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/analysis/modelversion/",
        {"action": "activate", "_selected_action": [worse.pk]},
        follow=True,
    )
    assert "abnormal-cell recall 0.800 against 0.900" in response.content.decode()
    worse.refresh_from_db()
    assert not worse.is_active
    client.post(
        "/admin/analysis/modelversion/", {"action": "activate", "_selected_action": [better.pk]}
    )
    better.refresh_from_db()
    assert better.is_active
    client.post(
        "/admin/analysis/modelversion/", {"action": "roll_back", "_selected_action": [better.pk]}
    )
    assert ModelVersion.objects.get(stage=ModelStage.CLASSIFIER, is_active=True).name == "c-active"


def test_model_version_list_names_the_training_export_or_null(api, viewer, export):
    ModelVersionFactory.create(stage=ModelStage.DETECTOR, name="no-export")
    trained = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="trained")
    ModelTraining.objects.create(model_version=trained, export=export)
    listed = {v["name"]: v for v in api(viewer).get("/api/model-versions/").json()}
    assert listed["no-export"]["training_export"] is None
    assert listed["trained"]["training_export"] == "gate v3"
    assert listed["no-export"]["previous"] is None


def test_a_split_without_abnormal_cells_cannot_vouch_for_recall(export):
    """A lab's NILM-only export measures false alarms only: fewer of them is no proof, since a
    version that finds fewer abnormal cells has fewer too. A reason is needed."""
    active = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-on", is_active=True)
    quieter = ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, name="c-quiet")
    nilm_only = {"metrics": {"abnormal_recall": None}, "reviewer": {"false_alarms_per_field": 9}}
    evaluated(active, export, nilm_only)
    evaluated(quieter, export, {**nilm_only, "reviewer": {"false_alarms_per_field": 1.0}})
    check = activation_check(model_version=quieter)
    assert check.figures["false_alarms_per_field"]["worse"] is False
    assert "holds no marked abnormal cell" in check.problem
    with pytest.raises(ActivationRefusedError):
        model_version_activate_by(model_version=quieter, by=UserFactory.create(role=Role.ADMIN))
