"""The whole retraining loop in Chromium, on small data, as an admin who is also a pathologist:
review -> sign-out -> export -> retrain -> compare -> activate -> re-analyse -> roll back.

Through the pages where one exists (review page, Datasets page, Models page); the workers'
parts (building the export, running the retrain job) run in-process as the worker would, and
the re-analysis goes through the API (POST /api/slides/{id}/analyze/), which has no button on the
Models page. No Celery worker: what would go to the broker is recorded instead."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User

from papreview.accounts.roles import Role
from papreview.accounts.services import user_set_roles
from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus
from papreview.analysis.services import model_versions_for_analysis
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import DatasetExport
from papreview.registry.models import RetrainJob, RetrainStatus
from papreview.registry.retrain import retrain_job_run
from papreview.registry.services import model_version_register_checkpoint
from papreview.review.models import Cell
from papreview.review.selectors import slide_flag_summary
from testkit.browser import open_review, screenshot, wait_saved
from testkit.checkpoints import write_random_checkpoints
from tests.factories import UserFactory
from tests.registry.test_retrain_job import TINY

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _active(stage: str) -> ModelVersion:
    return ModelVersion.objects.get(stage=stage, is_active=True)


@pytest.fixture
def lab_admin(db) -> User:
    user = UserFactory.create(role=Role.ADMIN)
    user_set_roles(user=user, roles=[Role.ADMIN, Role.PATHOLOGIST])
    return user


@pytest.fixture
def base_versions(versions, tmp_path) -> dict[str, ModelVersion]:
    """Small random-weight versions of both stages whose checkpoint files exist, active (after
    the `versions` the fixture slides were 'analysed' with), so fine-tuning starts from them."""
    det, cls = write_random_checkpoints(
        tmp_path / "active",
        detector_meta={"thresholds": {"cell": 0.3, "abnormal": 0.1}},
        classifier_meta={"temperature": 1.0, "abnormal_threshold": 0.5},
    )
    return {
        "detector": model_version_register_checkpoint(stage="detector", path=det, activate=True),
        "classifier": model_version_register_checkpoint(
            stage="classifier", path=cls, activate=True
        ),
    }


@pytest.fixture
def no_broker(monkeypatch) -> dict[str, list[Any]]:
    """What would go to the broker (export build, retrain, analysis), recorded, not sent."""
    from papreview.analysis import tasks as analysis_tasks
    from papreview.datasets import tasks as dataset_tasks
    from papreview.registry import tasks as registry_tasks

    sent: dict[str, list[Any]] = {"export": [], "retrain": [], "analysis": []}
    monkeypatch.setattr(dataset_tasks.dataset_export_build_task, "delay", sent["export"].append)
    monkeypatch.setattr(registry_tasks.retrain_job_run_task, "delay", sent["retrain"].append)

    class _Result:
        id = "recorded"

    def apply_async(*, kwargs: dict[str, Any], **_: Any) -> _Result:
        sent["analysis"].append(kwargs)
        return _Result()

    monkeypatch.setattr(analysis_tasks.analysis_run_task, "apply_async", apply_async)
    return sent


def test_the_retraining_loop_in_the_browser(
    live_server,
    page,
    settings,
    make_slide,
    make_patients,
    pathologist,
    lab_admin,
    base_versions,
    no_broker,
    api,
):
    settings.RETRAIN_TRAINING_ARGS = TINY
    started = time.monotonic()
    # Three patients, two signed-out slides each, a few accepted cells of several classes ...
    make_patients("LOOP")
    # ... and one more of the first patient, analysed but not reviewed: flagged HSIL cells.
    fresh = make_slide(
        Patient.objects.get(identifier="LOOP-0"),
        seed=7,
        cells=[
            (20, 30, 36, 36, "HSIL", "undecided"),
            (120, 90, 36, 36, "HSIL", "undecided"),
            (200, 40, 36, 36, "NILM", "undecided"),
        ],
        sign_out=False,
    ).slide
    flagged = [pk for pk, _ in slide_flag_summary(slide_id=fresh.pk).undecided]
    assert len(flagged) == 2
    base_cls = base_versions["classifier"]

    # 1. Review (page): U walks to each undecided flagged cell, 1 relabels it NILM; sign out.
    open_review(page, live_server.url, lab_admin.username, fresh.pk)
    page.get_by_label("Bethesda category").select_option("NILM")
    for expected in flagged:
        page.keyboard.press("u")
        page.wait_for_function(f"window.__review.selected === {expected}")
        page.keyboard.press("1")
        wait_saved(page)
    assert set(Cell.objects.filter(pk__in=flagged).values_list("current_class", flat=True)) == {
        "NILM"
    }
    page.get_by_role("button", name="Sign out as NILM").click()
    page.wait_for_selector(".signed-banner")
    assert Slide.objects.get(pk=fresh.pk).status == SlideStatus.SIGNED_OUT

    # 2. Export (page): the form's defaults, a name; the build runs in-process as the worker's.
    page.goto(f"{live_server.url}/datasets/")
    page.locator("#id_name").fill("loop")
    page.get_by_role("button", name="Export", exact=True).click()
    page.wait_for_url(f"{live_server.url}/datasets/")
    export = DatasetExport.objects.get(name="loop")
    assert no_broker["export"] == [export.pk]
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    assert export.manifest["counts"]["patients"] == 3
    page.reload()
    row = page.locator(f'#exports tr[data-export="{export.pk}"]')
    row.locator("a[download]").wait_for()
    assert "Ready" in row.inner_text()
    screenshot(page, "loop-exports.png")

    # 3. Retrain (page): the button queues a job; the job runs in-process as the worker's.
    page.goto(f"{live_server.url}/models/")
    page.locator("#retrain-export").select_option(str(export.pk))
    page.locator("#retrain-epochs").fill("1")
    page.get_by_role("button", name="Retrain").click()
    page.wait_for_selector(".retrain-job[data-status='queued']")
    job = RetrainJob.objects.get(export=export)
    assert no_broker["retrain"] == [job.pk]
    assert retrain_job_run(job_id=job.pk) == RetrainStatus.DONE, job.error
    job.refresh_from_db()
    assert job.new_classifier is not None and job.new_detector is not None
    new_cls = job.new_classifier

    # 4. Compare (page): the job's table, the new pipeline against the active one.
    page.goto(f"{live_server.url}/models/?export={export.pk}")
    page.wait_for_selector(f".retrain-job[data-job='{job.pk}'][data-status='done']")
    compare = page.locator("table.retrain-compare[data-stage='pipeline']")
    header = compare.locator("thead").text_content() or ""  # (CSS upper-cases it)
    assert new_cls.name in header and base_cls.name in header
    assert page.locator("table.retrain-compare").count() == 1
    assert compare.locator("tbody tr").count() >= 1
    screenshot(page, "loop-models.png")

    # 5. Activate the new classifier (page); the gate may want a reason if it does worse.
    row = page.locator(f"section[data-stage='classifier'] tr[data-version='{new_cls.pk}']")
    row.get_by_role("button", name="Activate").click()
    page.wait_for_selector(".notice")
    refused = _active(ModelStage.CLASSIFIER) != new_cls
    if refused:
        refusal = page.locator(".notice.error").inner_text()
        assert refusal, "the gate refused without saying why"
        row = page.locator(f"section[data-stage='classifier'] tr[data-version='{new_cls.pk}']")
        row.get_by_label(f"Reason for activating {new_cls.name}").fill(
            "Retrained on this lab's corrected cells; tiny test data, figures not comparable."
        )
        row.get_by_role("button", name="Activate").click()
        page.wait_for_selector(".notice.ok")
    assert f"{new_cls.name} is now the active classifier" in page.locator(".notice.ok").inner_text()
    assert _active(ModelStage.CLASSIFIER) == new_cls

    # 6. Re-analyse (API: no button for it on these pages). The slide is signed out: reopen it
    # first on its review page, with a reason, as a pathologist.
    page.goto(f"{live_server.url}/slides/{fresh.pk}/")
    page.get_by_label("Reason for reopening").fill("Re-analyse with the retrained classifier")
    page.get_by_role("button", name="Reopen for review").click()
    page.wait_for_selector("#history li")
    assert Slide.objects.get(pk=fresh.pk).status != SlideStatus.SIGNED_OUT
    response = api(lab_admin).post(f"/api/slides/{fresh.pk}/analyze/")
    assert response.status_code == 202, response.content
    run = AnalysisRun.objects.filter(slide=fresh).latest("created_at")
    assert run.status == RunStatus.QUEUED and no_broker["analysis"] == [{"slide_id": fresh.pk}]
    # The worker fixes a run's versions when it starts; it would take the active ones now.
    detector, classifier = model_versions_for_analysis()
    assert classifier == new_cls and detector == base_versions["detector"]

    # 7. Roll back (page): the previous classifier is active again.
    page.goto(f"{live_server.url}/models/")
    page.locator("section[data-stage='classifier'] form.rollback").get_by_role(
        "button", name=f"Roll back to {base_cls.name}"
    ).click()
    page.wait_for_selector(".notice.ok")
    assert "Rolled back" in page.locator(".notice.ok").inner_text()
    assert _active(ModelStage.CLASSIFIER) == base_cls
    assert model_versions_for_analysis()[1] == base_cls
    print(f"gate refused first: {refused}; loop took {time.monotonic() - started:.1f}s")
