"""Database constraints hold even when code bypasses the services."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from papreview.analysis.models import ModelStage
from papreview.cases.models import Patient, SlideStatus
from papreview.review.models import ReviewStatus
from tests.factories import (
    AnalysisRunFactory,
    CellFactory,
    ModelVersionFactory,
    PatientFactory,
    SlideFactory,
)

pytestmark = pytest.mark.django_db


def assert_refused(make) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make()


def test_patient_identifier_is_unique() -> None:
    PatientFactory.create(identifier="P-1")
    assert_refused(lambda: Patient.objects.create(identifier="P-1"))


def test_patient_identifier_not_empty_and_birth_year_plausible() -> None:
    assert_refused(lambda: Patient.objects.create(identifier=""))
    assert_refused(lambda: Patient.objects.create(identifier="P-2", birth_year=1700))


def test_same_file_twice_for_one_patient_is_refused_but_allowed_for_another() -> None:
    slide = SlideFactory.create()
    assert_refused(lambda: SlideFactory.create(patient=slide.patient, sha256=slide.sha256))
    SlideFactory.create(sha256=slide.sha256)  # another patient


@pytest.mark.parametrize(
    "fields",
    [
        {"width": 0},
        {"height": -1},
        {"mpp": 0.0},
        {"sha256": "not-a-digest"},
        {"status": "bogus"},
        {"status": SlideStatus.FAILED, "failure_reason": ""},
        {"triage_score": -0.5},
        {"triage_class": "XYZ"},
    ],
)
def test_slide_check_constraints(fields: dict[str, object]) -> None:
    assert_refused(lambda: SlideFactory.create(**fields))


def test_one_active_model_version_per_stage() -> None:
    ModelVersionFactory.create(stage=ModelStage.DETECTOR, is_active=True)
    ModelVersionFactory.create(stage=ModelStage.DETECTOR, is_active=False)
    ModelVersionFactory.create(stage=ModelStage.CLASSIFIER, is_active=True)
    assert_refused(lambda: ModelVersionFactory.create(stage=ModelStage.DETECTOR, is_active=True))


@pytest.mark.parametrize("progress", [101, 250])
def test_run_progress_between_0_and_100(progress: int) -> None:
    assert_refused(lambda: AnalysisRunFactory.create(progress=progress))


def test_failed_run_needs_an_error() -> None:
    assert_refused(lambda: AnalysisRunFactory.create(status="failed", error=""))


@pytest.mark.parametrize(
    "fields",
    [
        {"width": 0},
        {"height": -3},
        {"x": -1},
        {"current_class": "XYZ"},
        {"detection_score": 1.5},
        {"version": 0},
        {"review_status": ReviewStatus.ADDED},  # an added cell has no run
    ],
)
def test_cell_check_constraints(fields: dict[str, object]) -> None:
    assert_refused(lambda: CellFactory.create(**fields))


def test_predicted_cell_needs_a_run() -> None:
    assert_refused(lambda: CellFactory.create(run=None, review_status=ReviewStatus.PREDICTED))
