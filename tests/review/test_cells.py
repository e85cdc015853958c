"""Cell edits: optimistic locking, revisions, added cells, and which slides may change."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from papreview.cases.models import Slide, SlideStatus
from papreview.review.errors import CellNotEditableError, StaleVersionError
from papreview.review.models import Cell, CellRevision, ReviewStatus
from papreview.review.services import cell_add, cell_update
from tests.factories import CellFactory, SlideFactory

pytestmark = pytest.mark.django_db


def test_relabel_bumps_version_writes_a_revision_and_starts_review(pathologist) -> None:
    cell = CellFactory.create(slide__status=SlideStatus.ANALYSED)
    updated = cell_update(cell=cell, version=1, by=pathologist, current_class="LSIL")

    assert (updated.version, updated.current_class) == (2, "LSIL")
    assert updated.review_status == ReviewStatus.RELABELLED
    assert updated.last_reviewed_by == pathologist
    revision = CellRevision.objects.get(cell=cell)
    assert revision.changed_by == pathologist
    assert revision.version == 2
    assert revision.before["current_class"] == "HSIL" and revision.before["version"] == 1
    assert revision.after["current_class"] == "LSIL" and revision.after["version"] == 2
    slide = Slide.objects.get(pk=cell.slide_id)
    assert slide.status == SlideStatus.IN_REVIEW
    assert slide.assigned_reviewer == pathologist


def test_stale_version_raises_with_the_current_cell_and_writes_nothing(pathologist, cytotech):
    cell = CellFactory.create()
    cell_update(cell=cell, version=1, by=cytotech, review_status=ReviewStatus.CONFIRMED)
    with pytest.raises(StaleVersionError) as excinfo:
        cell_update(cell=cell, version=1, by=pathologist, current_class="SCC")
    assert excinfo.value.cell.version == 2
    assert excinfo.value.cell.review_status == ReviewStatus.CONFIRMED
    assert Cell.objects.get(pk=cell.pk).current_class == "HSIL"
    assert CellRevision.objects.filter(cell=cell).count() == 1


def test_moving_a_predicted_cell_confirms_it_and_relabelling_back_confirms(pathologist) -> None:
    cell = CellFactory.create()
    moved = cell_update(cell=cell, version=1, by=pathologist, x=110, width=70)
    assert (moved.x, moved.width, moved.review_status) == (110, 70, ReviewStatus.CONFIRMED)
    relabelled = cell_update(cell=cell, version=2, by=pathologist, current_class="NILM")
    assert relabelled.review_status == ReviewStatus.RELABELLED
    back = cell_update(cell=cell, version=3, by=pathologist, current_class="HSIL")
    assert back.review_status == ReviewStatus.CONFIRMED
    assert CellRevision.objects.filter(cell=cell).count() == 3


def test_rejecting_is_a_change_with_a_revision_and_no_change_writes_nothing(pathologist) -> None:
    cell = CellFactory.create()
    rejected = cell_update(cell=cell, version=1, by=pathologist, review_status="rejected")
    assert rejected.review_status == ReviewStatus.REJECTED
    same = cell_update(cell=cell, version=2, by=pathologist, review_status="rejected")
    assert same.version == 2
    assert CellRevision.objects.filter(cell=cell).count() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"x": 1990},  # box would end outside the 2000 px wide slide
        {"width": 0},
        {"current_class": "AGC"},
        {"slide": 3},
        {},
        {"review_status": ReviewStatus.ADDED},  # a predicted cell cannot become 'added'
    ],
)
def test_invalid_changes_are_refused(pathologist, changes) -> None:
    cell = CellFactory.create()
    with pytest.raises(ValidationError):
        cell_update(cell=cell, version=1, by=pathologist, **changes)
    assert Cell.objects.get(pk=cell.pk).version == 1
    assert not CellRevision.objects.exists()


def test_add_a_missed_cell(cytotech) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSED)
    cell = cell_add(slide=slide, by=cytotech, x=10, y=20, width=30, height=40, current_class="LSIL")
    assert cell.run is None
    assert cell.review_status == ReviewStatus.ADDED
    assert cell.version == 1
    revision = CellRevision.objects.get(cell=cell)
    assert revision.before == {} and revision.after["current_class"] == "LSIL"
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    relabelled = cell_update(cell=cell, version=1, by=cytotech, current_class="HSIL")
    assert relabelled.review_status == ReviewStatus.ADDED  # still a reviewer-drawn cell


@pytest.mark.parametrize(
    "status",
    [SlideStatus.UPLOADED, SlideStatus.QUEUED, SlideStatus.ANALYSING, SlideStatus.SIGNED_OUT],
)
def test_cells_of_a_slide_outside_review_cannot_change(pathologist, status) -> None:
    cell = CellFactory.create(slide__status=status)
    with pytest.raises(CellNotEditableError):
        cell_update(cell=cell, version=1, by=pathologist, current_class="NILM")
    with pytest.raises(CellNotEditableError):
        cell_add(
            slide=cell.slide, by=pathologist, x=1, y=1, width=5, height=5, current_class="NILM"
        )
    assert Slide.objects.get(pk=cell.slide_id).status == status


def test_one_cell_edit_through_the_api_is_a_handful_of_queries(
    api, pathologist, django_assert_max_num_queries
) -> None:
    """The usual edit (slide in review, assigned): token and user, roles, the cell with its
    slide, one UPDATE ... RETURNING, the revision and the audit event (plus the savepoint pair
    of the test's transaction). It was 13 (17 on a slide's first edit) before."""
    cell = CellFactory.create(
        slide__status=SlideStatus.IN_REVIEW, slide__assigned_reviewer=pathologist
    )
    client = api(pathologist)
    with django_assert_max_num_queries(8):
        response = client.patch(
            f"/api/cells/{cell.pk}/", {"version": 1, "current_class": "LSIL"}, format="json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    assert CellRevision.objects.filter(cell=cell, version=2).count() == 1
    with django_assert_max_num_queries(4):  # stale: 409 with the current cell, nothing written
        stale = client.patch(
            f"/api/cells/{cell.pk}/", {"version": 1, "current_class": "HSIL"}, format="json"
        )
    assert stale.status_code == 409 and stale.json()["current"]["version"] == 2


def test_a_slide_signed_out_after_the_cell_was_read_refuses_the_change(pathologist) -> None:
    cell = CellFactory.create(
        slide__status=SlideStatus.IN_REVIEW, slide__assigned_reviewer=pathologist
    )
    read = Cell.objects.select_related("slide").get(pk=cell.pk)  # the slide still in review
    Slide.objects.filter(pk=cell.slide_id).update(status=SlideStatus.SIGNED_OUT)
    with pytest.raises(CellNotEditableError):
        cell_update(cell=read, version=1, by=pathologist, current_class="LSIL")
    assert Cell.objects.get(pk=cell.pk).version == 1
    assert not CellRevision.objects.filter(cell=cell).exists()


def test_a_cell_read_before_another_change_is_stale(pathologist, cytotech) -> None:
    cell = CellFactory.create(slide__status=SlideStatus.IN_REVIEW)
    read = Cell.objects.select_related("slide").get(pk=cell.pk)
    cell_update(cell=cell, version=1, by=cytotech, current_class="LSIL")
    with pytest.raises(StaleVersionError) as excinfo:
        cell_update(cell=read, version=1, by=pathologist, current_class="SCC")
    assert excinfo.value.cell.version == 2 and excinfo.value.cell.current_class == "LSIL"
    assert CellRevision.objects.filter(cell=cell).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_edit_and_a_sign_out_of_the_same_slide_wait_for_each_other(pathologist) -> None:
    """An edit share-locks its slide's row: a sign-out (which locks the slide for update) cannot
    start until the edit commits, and an edit behind a sign-out sees the slide signed out."""
    import threading

    from django.db import DatabaseError, connection, transaction

    cell = CellFactory.create(
        slide__status=SlideStatus.IN_REVIEW, slide__assigned_reviewer=pathologist
    )
    # 1. An edit in flight: the slide cannot be locked for a sign-out.
    editing, release = threading.Event(), threading.Event()

    def edit_and_hold() -> None:
        try:
            with transaction.atomic():
                cell_update(cell=cell, version=1, by=pathologist, current_class="LSIL")
                editing.set()
                release.wait(10)
        finally:
            connection.close()

    editor = threading.Thread(target=edit_and_hold)
    editor.start()
    assert editing.wait(10)
    with pytest.raises(DatabaseError), transaction.atomic():
        Slide.objects.select_for_update(nowait=True).get(pk=cell.slide_id)
    release.set()
    editor.join(10)
    assert Cell.objects.get(pk=cell.pk).version == 2

    # 2. A sign-out in flight: the edit waits for it, then finds the slide signed out.
    read = Cell.objects.select_related("slide").get(pk=cell.pk)  # still in review
    outcome: list[BaseException] = []

    def edit_behind() -> None:
        try:
            cell_update(cell=read, version=2, by=pathologist, current_class="HSIL")
        except BaseException as exc:  # reported to the test thread
            outcome.append(exc)
        finally:
            connection.close()

    with transaction.atomic():
        Slide.objects.select_for_update().get(pk=cell.slide_id)
        Slide.objects.filter(pk=cell.slide_id).update(status=SlideStatus.SIGNED_OUT)
        late = threading.Thread(target=edit_behind)
        late.start()
        late.join(0.5)
        assert late.is_alive()  # waiting for the sign-out to commit
    late.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], CellNotEditableError)
    assert Cell.objects.get(pk=cell.pk).version == 2


def test_a_box_is_capped_to_a_cells_physical_size(cytotech) -> None:
    """200 µm on a side: 400 px at 0.5 µm/px, 800 px where the slide says no mpp (0.25 assumed);
    a legacy oversized cell can still be relabelled, but not moved to another oversized box."""
    slide = SlideFactory.create(status=SlideStatus.ANALYSED, width=5000, height=5000, mpp=0.5)
    cell_add(slide=slide, by=cytotech, x=0, y=0, width=400, height=100, current_class="HSIL")
    with pytest.raises(ValidationError) as excinfo:
        cell_add(slide=slide, by=cytotech, x=0, y=0, width=401, height=100, current_class="HSIL")
    assert "at most 400 px (200 µm)" in str(excinfo.value)
    unknown = SlideFactory.create(status=SlideStatus.ANALYSED, width=5000, height=5000, mpp=None)
    cell_add(slide=unknown, by=cytotech, x=0, y=0, width=800, height=10, current_class="LSIL")
    with pytest.raises(ValidationError):
        cell_add(slide=unknown, by=cytotech, x=0, y=0, width=10, height=801, current_class="LSIL")
    legacy = CellFactory.create(slide=slide, x=0, y=0, width=3000, height=3000)
    relabelled = cell_update(cell=legacy, version=1, by=cytotech, current_class="LSIL")
    with pytest.raises(ValidationError):
        cell_update(cell=relabelled, version=2, by=cytotech, x=10)
