"""Cohen's kappa against values computed by hand, and the dashboard's agreement and outcome
figures from real reviews and a QC re-review."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from papreview.core.exceptions import ConflictError, PermissionDeniedError
from papreview.datasets.agreement import (
    agreement_report,
    cohen_kappa,
    cohen_kappa_table,
    one_vs_rest,
    table_from_pairs,
)
from papreview.datasets.dashboard import model_dashboard, model_outcomes
from papreview.datasets.models import QCLabel, QCReview, QCStatus
from papreview.datasets.qc import (
    qc_review_submit,
    qc_reviews_open_to,
    qc_sample,
    qc_settings_get,
    qc_settings_set,
)
from papreview.review.models import CellSighting
from tests.factories import PatientFactory

# A 3 x 3 table (rows: rater A, columns: rater B), n = 25:
#        N  L  H
#   N    8  1  1     row N 10
#   L    2  5  1     row L  8
#   H    0  1  6     row H  7
#   cols 10 7  8
# p_o = (8 + 5 + 6) / 25 = 0.76
# p_e = (10*10 + 8*7 + 7*8) / 625 = 212 / 625 = 0.3392
# kappa = (0.76 - 0.3392) / (1 - 0.3392) = 0.4208 / 0.6608 = 0.636804...
THREE = {
    ("N", "N"): 8, ("N", "L"): 1, ("N", "H"): 1,
    ("L", "N"): 2, ("L", "L"): 5, ("L", "H"): 1,
    ("H", "N"): 0, ("H", "L"): 1, ("H", "H"): 6,
}  # fmt: skip


def test_kappa_of_the_classic_two_by_two_example():
    # yes/yes 20, yes/no 5, no/yes 10, no/no 15 (n = 50)
    # p_o = 35/50 = 0.7; A says yes 25/50 = 0.5, B 30/50 = 0.6
    # p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_of_a_three_class_table_and_one_vs_rest():
    assert cohen_kappa_table(THREE) == pytest.approx(0.4208 / 0.6608)
    assert cohen_kappa_table(THREE) == pytest.approx(0.636804, abs=1e-6)
    # H vs rest: yes/yes 6, A yes B no 1, A no B yes 2, no/no 16 (n = 25)
    # p_o = 22/25 = 0.88; A yes 7/25 = 0.28, B yes 8/25 = 0.32
    # p_e = 0.28*0.32 + 0.72*0.68 = 0.0896 + 0.4896 = 0.5792
    # kappa = (0.88 - 0.5792) / (1 - 0.5792) = 0.3008 / 0.4208 = 0.714829...
    h = one_vs_rest(THREE, "H")
    assert h == {("yes", "yes"): 6, ("yes", "no"): 1, ("no", "yes"): 2, ("no", "no"): 16}
    assert cohen_kappa_table(h) == pytest.approx(0.3008 / 0.4208)
    report = agreement_report(THREE, ["N", "L", "H", "X"])
    assert report["n"] == 25 and report["observed_agreement"] == pytest.approx(0.76)
    assert report["per_class"]["H"] == {"kappa": pytest.approx(0.3008 / 0.4208), "a": 7, "b": 8}
    assert report["per_class"]["X"]["kappa"] is None  # neither rater used it: p_e = 1


def test_kappa_edge_cases():
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)  # p_o 0, p_e 0.5
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    with pytest.raises(ValueError):
        table_from_pairs(["a"], ["a", "b"])


@pytest.fixture
def two_slides(make_slide, pathologist):
    p = PatientFactory.create()
    s1 = make_slide(
        p,
        seed=1,
        cells=[
            (10, 10, 30, 30, "HSIL", "undecided"),
            (60, 10, 30, 30, "HSIL", "confirmed"),
            (110, 10, 30, 30, "HSIL", "relabelled", "LSIL"),
            (160, 10, 30, 30, "NILM", "rejected"),
            (10, 100, 30, 30, "SCC", "added"),
        ],
    )
    s2 = make_slide(p, seed=2, cells=[(10, 10, 30, 30, "LSIL", "undecided")], category="LSIL")
    return s1, s2


@pytest.mark.django_db
def test_model_outcomes_per_version_and_class(two_slides, versions):
    (classifier,) = model_outcomes(stage="classifier")
    assert classifier["version"] == "cls-A"
    hsil = classifier["classes"]["HSIL"]
    # The undecided cell is counted apart: sign-out did not make it "kept".
    assert hsil == {
        "confirmed": 1, "relabelled": 1, "cleared": 0, "rejected": 0, "added": 0, "undecided": 1
    }  # fmt: skip
    assert classifier["classes"]["NILM"]["rejected"] == 1
    assert classifier["classes"]["SCC"]["added"] == 1  # a miss, by the reviewer's class
    assert classifier["classes"]["LSIL"]["undecided"] == 1
    assert classifier["total"] == {
        "confirmed": 1, "relabelled": 1, "cleared": 0, "rejected": 1, "added": 1, "undecided": 2
    }  # fmt: skip
    (detector,) = model_outcomes(stage="detector")
    assert detector["version"] == "det-A" and detector["total"] == classifier["total"]


@pytest.mark.django_db
def test_qc_re_review_and_kappa_on_the_dashboard(
    two_slides, make_slide, pathologist, cytotech, admin_user, viewer, api
):
    with pytest.raises(PermissionDeniedError):
        qc_settings_set(share=0.5, by=pathologist)
    with pytest.raises(ValidationError):
        qc_settings_set(share=1.5, by=admin_user)
    qc_settings_set(share=0.5, by=admin_user)
    assert qc_settings_get().share == 0.5
    drawn = qc_sample(seed=1)
    assert len(drawn) == 1  # half of two signed-out slides
    assert drawn[0].first_reviewer == pathologist
    assert qc_sample(share=1.0) == []  # each sign-out is considered once
    # a slide signed out after the last draw is considered by the next one
    third = make_slide(PatientFactory.create(), seed=3, cells=[])  # no cells: kappa unchanged
    assert [r.slide_id for r in qc_sample(share=1.0)] == [third.slide.pk]
    out = io.StringIO()
    call_command("qc_sample", "--share", "1", stdout=out)
    assert out.getvalue().startswith("0 slide(s) drawn")
    review, _ = QCReview.objects.get_or_create(
        slide=two_slides[0].slide, defaults={"first_reviewer": pathologist}
    )
    pending_others = QCReview.objects.exclude(pk=review.pk).count()

    cells = {c.pk: c for c in two_slides[0].slide.cells.order_by("pk")}
    ids = list(cells)
    # first review: HSIL, HSIL, LSIL, rejected, SCC; model: HSIL, HSIL, HSIL, NILM, (none)
    second = {ids[0]: "HSIL", ids[1]: "LSIL", ids[2]: "LSIL", ids[3]: "rejected", ids[4]: "HSIL"}
    with pytest.raises(PermissionDeniedError):  # the first reviewer cannot QC their own slide
        qc_review_submit(qc_review=review, by=pathologist, labels=second)
    with pytest.raises(PermissionDeniedError):
        qc_review_submit(qc_review=review, by=viewer, labels=second)
    # Nor can someone who screened it (saw one of its cells) without signing it out.
    CellSighting.objects.create(cell=cells[ids[1]], seen_by=cytotech, via="gallery")
    with pytest.raises(PermissionDeniedError, match="screened"):
        qc_review_submit(qc_review=review, by=cytotech, labels=second)
    # Their QC list does not offer it either; an uninvolved admin's does.
    assert review not in qc_reviews_open_to(cytotech)
    assert review not in qc_reviews_open_to(pathologist)
    assert review in qc_reviews_open_to(admin_user)
    with pytest.raises(ValidationError):
        qc_review_submit(qc_review=review, by=admin_user, labels={ids[0]: "HSIL"})
    with pytest.raises(ValidationError):
        qc_review_submit(qc_review=review, by=admin_user, labels={**second, ids[0]: "XYZ"})
    qc_review_submit(qc_review=review, by=admin_user, labels=second)
    review.refresh_from_db()
    assert review.status == QCStatus.DONE and review.reviewer == admin_user
    assert QCLabel.objects.filter(qc_review=review).count() == 5
    with pytest.raises(ConflictError):
        qc_review_submit(qc_review=review, by=admin_user, labels=second)

    agreement = model_dashboard()["agreement"]
    # Reviewer vs reviewer over the cells the first reviewer decided (the undecided HSIL is left
    # out), n = 4: first  HSIL LSIL rejected SCC
    #              second LSIL LSIL rejected HSIL
    # p_o = 2/4; first: HSIL 1, LSIL 1, rej 1, SCC 1; second: LSIL 2, rej 1, HSIL 1
    # p_e = (1*1 + 1*2 + 1*1) / 16 = 0.25; kappa = 0.25 / 0.75 = 1/3
    rr = agreement["reviewer_vs_reviewer"]
    assert rr["n"] == 4 and rr["kappa"] == pytest.approx(1 / 3)
    # HSIL vs rest: A yes B no 1, A no B yes 1, no/no 2
    # p_o = 0.5; p_e = 0.25*0.25 + 0.75*0.75 = 0.625; kappa = -0.125 / 0.375 = -1/3
    assert rr["per_class"]["HSIL"]["kappa"] == pytest.approx(-1 / 3)
    # Reviewer (first) vs model over the predicted cells a person decided, n = 3 (the two
    # undecided cells are left out): reviewer HSIL LSIL rejected; model HSIL HSIL NILM
    # p_o = 1/3; reviewer: HSIL 1, LSIL 1, rej 1; model: HSIL 2, NILM 1
    # p_e = 2/9; kappa = (1/9) / (7/9) = 1/7
    rm = agreement["reviewer_vs_model"]
    assert rm["n"] == 3 and rm["kappa"] == pytest.approx(1 / 7)
    # QC reviewer vs model (cells with a model label), n = 4:
    # second HSIL LSIL LSIL rejected; model HSIL HSIL HSIL NILM
    # p_o = 1/4; second: HSIL 1, LSIL 2, rej 1; model: HSIL 3, NILM 1; p_e = 3/16
    # kappa = (0.25 - 0.1875) / 0.8125 = 0.076923...
    qm = agreement["qc_reviewer_vs_model"]
    assert qm["n"] == 4 and qm["kappa"] == pytest.approx(0.0625 / 0.8125)
    assert agreement["qc_reviews"] == {"pending": pending_others, "done": 1}
    # the same figures over the API (JSON: kappa as numbers, null where undefined)
    body = api(viewer).get("/api/model-dashboard/").json()
    assert body["agreement"]["reviewer_vs_reviewer"]["kappa"] == pytest.approx(1 / 3)
    assert body["agreement"]["reviewer_vs_reviewer"]["per_class"]["ASC-US"]["kappa"] is None
    assert body["classifier"][0]["classes"]["SCC"]["added"] == 1
    assert api(None).get("/api/model-dashboard/").status_code == 401


@pytest.mark.django_db
def test_qc_sample_is_scheduled_on_beat(make_slide, admin_user):
    from papreview.celery import celery_app
    from papreview.datasets.tasks import qc_sample_task

    entry = celery_app.conf.beat_schedule["qc-sample"]
    assert entry["task"] == qc_sample_task.name and entry["options"]["queue"] == "celery"
    qc_settings_set(share=1.0, by=admin_user)
    r = make_slide(PatientFactory.create(), cells=[])
    assert qc_sample_task() == [r.slide.pk]
    assert qc_sample_task() == []
